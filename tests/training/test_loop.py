import dataclasses

import jax
import numpy as np
import pytest

from nc_jax.config import ConfigError, OptimConfig
from nc_jax.training import init_states, run_grid, train_runs
from nc_jax.runs import run_sweep, runs_table
from nc_jax.training import steps_per_epoch
from tests.helpers import tiny_config, tiny_data, tiny_task


def _leaves_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_vmapped_sweep_equals_separate_runs():
    cfg = tiny_config()
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    assert res.num_runs == 4
    wd, sd = run_grid(cfg.weight_decays, cfg.seeds)
    for i in range(4):
        single = run_sweep(cfg.replace(weight_decays=(float(wd[i]),), seeds=(int(sd[i]),)), data,
                           progress=False)
        np.testing.assert_allclose(single.history["loss"][0], res.history["loss"][i], rtol=1e-5)
        np.testing.assert_allclose(single.final_loss[0], res.final_loss[i], rtol=1e-5)
        _leaves_close(single.state(0).params, res.state(i).params)
        _leaves_close(single.state(0).batch_stats, res.state(i).batch_stats)


def test_same_seed_same_init_and_batches_and_bn_stats_per_run():
    cfg = tiny_config(weight_decays=(0.0, 0.0, 1e-2), seeds=(5,))
    data = tiny_data(cfg)
    s0 = init_states(tiny_task(cfg, data), [5, 5, 6], [0.05] * 3, [0.0, 0.01, 0.0],
                     data.sample_shape)
    for a in jax.tree.leaves(s0.params):
        np.testing.assert_array_equal(a[0], a[1])  # same seed -> identical init
    for name in ("dense_0", "dense_1", "head"):  # BN starts at (1, 0) whatever the seed
        assert not np.array_equal(s0.params[name]["kernel"][0], s0.params[name]["kernel"][2])
    res = run_sweep(cfg, data, progress=False)
    # wd 0 twice with one seed: identical data order and init -> bitwise identical runs
    for a in jax.tree.leaves(res.states.params):
        np.testing.assert_array_equal(a[0], a[1])
        assert not np.array_equal(a[0], a[2])  # weight decay is the only difference, and it acts
    # BN running statistics must never be shared across vmapped runs
    m = np.asarray(res.states.batch_stats["bn_0"]["mean"])
    assert not np.allclose(m[0], m[2])
    hp = res.states.opt_state.hyperparams["weight_decay"]
    np.testing.assert_allclose(np.asarray(hp), [0.0, 0.0, 1e-2], rtol=1e-6)


def test_tiny_sweep_learns_and_is_reproducible():
    cfg = tiny_config(optim=OptimConfig(lr=0.05, epochs=15, batch_size=32), seeds=(0,))
    data = tiny_data(cfg)
    a = run_sweep(cfg, data, progress=False)
    b = run_sweep(cfg, data, progress=False)
    assert a.final_accuracy.min() > 0.75  # chance is 0.25
    np.testing.assert_array_equal(a.final_loss, b.final_loss)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    # the train-mode loss goes down
    assert np.all(a.history["loss"][:, -1] < 0.6 * a.history["loss"][:, 0])
    assert a.history["loss"].shape == (2, 15)


def test_partial_last_batch_is_a_step():
    cfg = tiny_config(seeds=(0,), weight_decays=(0.0,))
    data = tiny_data(cfg)  # 240 samples, batch 32 -> 7 full batches + 16
    res = run_sweep(cfg, data, progress=False)
    assert steps_per_epoch(240, 32) == 8
    assert int(res.states.step[0]) == 8 * cfg.optim.epochs


def test_diverged_run_flagged_and_others_unchanged():
    cfg = tiny_config(seeds=(0,), weight_decays=(1e-4, 1e-4, 1e-4))
    data = tiny_data(cfg)
    task = tiny_task(cfg, data)
    wd, sd = np.full(3, 1e-4, np.float32), np.array([0, 1, 2])
    lrs = np.array([0.05, 1e9, 0.05], np.float32)
    res = train_runs(task, cfg, data, weight_decays=wd, seeds=sd, learning_rates=lrs, progress=False)
    assert res.diverged.tolist() == [False, True, False]
    ok = train_runs(task, cfg, data, weight_decays=wd[[0, 2]], seeds=sd[[0, 2]],
                    learning_rates=lrs[[0, 2]], progress=False)
    np.testing.assert_allclose(res.final_loss[[0, 2]], ok.final_loss, rtol=1e-6)
    runs = res.runs()
    assert runs[1]["diverged"] and runs[1]["train_loss"] is None
    assert "DIVERGED" in runs_table(runs, cols=("weight_decay", "seed", "train_loss"))


def test_chunked_dispatch_equals_single_dispatch():
    cfg = tiny_config(seeds=(0,))
    data = tiny_data(cfg)
    a = run_sweep(cfg, data, progress=False, epochs_per_call=1)
    b = run_sweep(cfg, data, progress=False, epochs_per_call=3)
    np.testing.assert_allclose(a.final_loss, b.final_loss, rtol=1e-6)


def test_batch_larger_than_data_rejected():
    cfg = tiny_config()
    data = tiny_data(cfg)
    small = dataclasses.replace(data, x=data.x[:20], y=data.y[:20], info={})
    with pytest.raises(ConfigError, match="batch_size"):
        run_sweep(cfg, small, progress=False)


@pytest.mark.parametrize("wd, lr, match", [
    ([1e-3, -1.0], [0.1, 0.1], r"weight_decays\[1\] must be finite and >= 0"),
    ([1e-3, float("nan")], [0.1, 0.1], r"weight_decays\[1\]"),
    ([1e-3, 1e-3], [0.1, 0.0], r"learning_rates\[1\] must be finite and > 0"),
    ([1e-3, 1e-3], [0.1, float("inf")], r"learning_rates\[1\]"),
])
def test_explicit_run_arrays_validated(wd, lr, match):
    cfg = tiny_config()
    task = tiny_task(cfg, tiny_data(cfg))
    with pytest.raises(ConfigError, match=match):
        train_runs(task, cfg, tiny_data(cfg), weight_decays=np.array(wd), seeds=np.array([0, 1]),
                   learning_rates=np.array(lr), progress=False)


def _image_data(n=48, classes=3):
    from nc_jax.data import from_arrays
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32) + y[:, None, None, None]
    return from_arrays(x, y)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_mapped_runs_agree_with_vmapped_runs(model):
    """`vmap_runs` changes how XLA batches the runs, not what is computed: 3 runs mapped one at a
    time (1) or in vmapped pairs with a remainder (2) agree with all-vmapped to float32 rounding."""
    if model == "mlp":
        cfg = tiny_config(weight_decays=(1e-4, 1e-3, 1e-2), seeds=(0,), record_every=1)
        data = tiny_data(cfg)
    else:
        from nc_jax.config import ModelConfig
        data = _image_data()
        cfg = tiny_config(model=ModelConfig(name="cnn", depth=2, width=4, bn="affine"),
                          optim=OptimConfig(lr=0.05, epochs=2, batch_size=16),
                          weight_decays=(1e-4, 1e-3, 1e-2), seeds=(0,), record_every=1)
    ref = run_sweep(cfg, data, progress=False)
    for b in (1, 2):
        res = run_sweep(cfg.replace(vmap_runs=b), data, progress=False)
        np.testing.assert_allclose(res.history["loss"], ref.history["loss"], rtol=1e-5)
        np.testing.assert_allclose(res.final_loss, ref.final_loss, rtol=1e-5, atol=1e-7)
        for k in ref.records:
            np.testing.assert_allclose(res.records[k], ref.records[k], rtol=1e-4, atol=1e-6,
                                       err_msg=k)
        _leaves_close(res.states.params, ref.states.params)
        _leaves_close(res.states.batch_stats, ref.states.batch_stats)


def test_one_run_at_a_time_equals_each_run_alone_bitwise():
    """With vmap_runs=1 every run is computed by the un-batched single-run program, so a run's
    numbers do not depend on which other runs share the sweep (bit for bit)."""
    from tests.runs.test_checkpoint import assert_bit_identical, result_arrays
    cfg = tiny_config(vmap_runs=1)
    data = tiny_data(cfg)
    together = result_arrays(run_sweep(cfg, data, progress=False))
    wd, sd = run_grid(cfg.weight_decays, cfg.seeds)
    for i in (0, 3):
        alone = result_arrays(run_sweep(cfg.replace(weight_decays=(float(wd[i]),),
                                                    seeds=(int(sd[i]),)), data, progress=False))
        assert_bit_identical(alone, {k: v[i:i + 1] if v.ndim and k != "record_epochs" else v
                                     for k, v in together.items()})


def test_vmap_runs_validated():
    with pytest.raises(ConfigError, match=r"vmap_runs must be >= 0, got -1"):
        tiny_config(vmap_runs=-1)


def test_run_options_name_an_unknown_field():
    from nc_jax.training import RunOptions
    with pytest.raises(TypeError, match=r"unknown run option\(s\) \['record_evry'\]"):
        RunOptions.of(record_evry=2)
    base = RunOptions(record_every=3, progress=False)
    assert RunOptions.of(base, seeds=(1,)) == RunOptions(record_every=3, progress=False, seeds=(1,))
    assert RunOptions.of(base) is base


def test_options_object_and_keywords_train_the_same_runs():
    from nc_jax.training import RunOptions
    cfg = tiny_config()
    data = tiny_data(cfg)
    a = run_sweep(cfg, data, options=RunOptions(progress=False, record_every=1))
    b = run_sweep(cfg, data, progress=False, record_every=1)
    np.testing.assert_array_equal(a.final_loss, b.final_loss)
    assert a.record_epochs.tolist() == b.record_epochs.tolist() == list(range(1, cfg.optim.epochs + 1))
