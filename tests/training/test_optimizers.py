"""Optimizers by name, schedules, custom transformations and per-group weight decay, each against
a hand-written optax loop for one run."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nc_jax
from nc_jax.cli import main
from nc_jax.config import ConfigError, OptimConfig, SweepConfig, decay_grid
from nc_jax.models import make_model
from tests.helpers import tiny_config, tiny_data

N, EPOCHS = 64, 4


def one_run(**optim) -> SweepConfig:
    """One run, full-batch steps (the permutation of a full batch changes only rounding)."""
    cfg = tiny_config(weight_decays=(3e-3,), seeds=(1,))
    return cfg.replace(data=dataclasses.replace(cfg.data, n=N),
                       optim=dataclasses.replace(cfg.optim, epochs=EPOCHS, batch_size=N, **optim))


def hand_loop(cfg, tx, steps=EPOCHS):
    """The thesis' MLP trained full-batch with `tx`, written with flax and optax only."""
    data = tiny_data(cfg)
    model = make_model(cfg.model, data.num_classes)
    k_init, _ = jax.random.split(jax.random.key(cfg.seeds[0]))
    v = model.init(k_init, jnp.zeros((2, data.dim)), train=False)
    params, stats = v["params"], v["batch_stats"]
    opt = tx.init(params)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)

    def loss_fn(p, s):
        logits, upd = model.apply({"params": p, "batch_stats": s}, x, train=True,
                                  mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

    for _ in range(steps):
        (_, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        u, opt = tx.update(g, opt, params)
        params, stats = optax.apply_updates(params, u), upd["batch_stats"]
    return params


def assert_params_close(a, b, rtol=2e-4, atol=2e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol,
                                                         atol=atol), a, b)


def test_adamw_cosine_warmup_from_config_matches_optax():
    cfg = one_run(name="adamw", schedule="cosine", warmup_epochs=1, lr=3e-3)
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), progress=False)
    sched = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 1, EPOCHS)
    assert_params_close(res.state(0).params, hand_loop(cfg, optax.adamw(sched, weight_decay=3e-3)))
    assert res.runs()[0]["optimizer"] == "adamw"


def test_adam_constant_is_l2_before_the_scaling():
    cfg = one_run(name="adam", schedule="constant", lr=1e-3)
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), progress=False)
    tx = optax.chain(optax.add_decayed_weights(3e-3), optax.scale_by_adam(),
                     optax.scale_by_learning_rate(1e-3))
    assert_params_close(res.state(0).params, hand_loop(cfg, tx))


def test_optimizer_from_the_command_line(tmp_path):
    import json
    out = tmp_path / "out"
    argv = ["--preset", "demo", "--set", "model.depth=3", "--set", "model.width=16",
            "--set", f"data.n={N}", "--set", "data.dim=8", "--set", "data.num_classes=4",
            "--set", "data.teacher_width=16", "--set", f"optim.epochs={EPOCHS}",
            "--set", f"optim.batch_size={N}", "--set", "optim.lr=3e-3",
            "--set", "optim.name=adamw", "--set", "optim.schedule=cosine",
            "--weight-decays", "3e-3", "--seeds", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["configs"]["sweep"]["optim"]["name"] == "adamw"
    cfg = one_run(name="adamw", schedule="cosine", lr=3e-3)
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), progress=False)
    np.testing.assert_allclose(doc["runs"][0]["train_loss"], float(res.final_loss[0]), rtol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (dict(name="rmsprop"), "optim.name must be one of"),
    (dict(schedule="linear"), "optim.schedule must be one of"),
    (dict(name="adam", weight_decay_mode="decoupled"), "use optim.name=adamw"),
    (dict(b1=0.5), "Adam's"),
    (dict(schedule="cosine", lr_decay_epochs=(1,)), "step schedule"),
    (dict(warmup_epochs=4), "warmup_epochs"),
    (dict(decay_groups=("head", "bias")), "decay_groups"),
])
def test_bad_optimizer_configs_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        OptimConfig(epochs=4, **bad)


def test_custom_tx_learning_rate_is_the_users():
    """A user's tx trains at its own learning rate: at 0 nothing moves, whatever cfg.optim.lr."""
    cfg = one_run()
    data = tiny_data(cfg)
    start = nc_jax.training.init_states(nc_jax.make_task(cfg, data), [1], [0.05], [0.0],
                                        data.sample_shape)
    for tx in (optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0),
               optax.sgd(0.0)):
        res = nc_jax.run_sweep(cfg.replace(weight_decays=(0.0,)), data, tx=tx, progress=False)
        assert res.runs()[0]["learning_rate"] is None
        assert res.runs()[0]["optimizer"].startswith("custom:")
        assert_params_close(res.state(0).params, jax.tree.map(lambda a: a[0], start.params),
                            rtol=0, atol=0)


def test_custom_tx_without_weight_decay_gets_the_grids_in_front():
    cfg = one_run()
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), tx=optax.adam(1e-3), progress=False)
    tx = optax.chain(optax.add_decayed_weights(3e-3), optax.adam(1e-3))
    assert_params_close(res.state(0).params, hand_loop(cfg, tx))


def test_custom_tx_with_injected_weight_decay_gets_each_runs():
    cfg = one_run()
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=2e-3, weight_decay=0.0)
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), tx=tx, progress=False)
    assert_params_close(res.state(0).params, hand_loop(cfg, optax.adamw(2e-3, weight_decay=3e-3)))


def test_per_run_learning_rates_need_an_injected_one():
    cfg = one_run()
    with pytest.raises(ConfigError, match="injects no learning_rate"):
        nc_jax.run_sweep(cfg, tiny_data(cfg), tx=optax.sgd(0.1), progress=False,
                         weight_decays=[0.0], seeds=[1], learning_rates=[0.1])


def test_per_group_decay_matches_a_hand_written_chain():
    """last_bn (the BN whose output is h), head and the rest, each with its own decay."""
    wd = {"rest": 1e-3, "last_bn": 5e-2, "head": 2e-2}
    cfg = one_run(decay_groups=("last_bn", "head"), name="sgd", schedule="constant", lr=0.05)
    cfg = cfg.replace(weight_decays=(wd,))
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), progress=False)
    last = f"bn_{cfg.model.depth - 2}"

    def group_decay(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, p: wd["last_bn"] if path[0].key == last else
            wd["head"] if path[0].key == "head" else wd["rest"], params)

    def decay():
        return optax.GradientTransformation(
            lambda p: optax.EmptyState(),
            lambda u, s, p: (jax.tree.map(lambda g, w, q: g + w * q, u, group_decay(p), p), s))

    tx = optax.chain(decay(), optax.trace(0.9), optax.scale_by_learning_rate(0.05))
    assert_params_close(res.state(0).params, hand_loop(cfg, tx))
    run = res.runs()[0]
    assert (run["weight_decay"], run["weight_decay_last_bn"], run["weight_decay_head"]) == \
        (1e-3, 5e-2, 2e-2)


def test_grid_of_decay_pairs_is_one_compiled_program(monkeypatch):
    from nc_jax.training import _loop
    calls = []
    make = _loop.make_chunk_fn
    monkeypatch.setattr(_loop, "make_chunk_fn", lambda *a, **k: calls.append(1) or make(*a, **k))
    grid = decay_grid(rest=[1e-4], last_bn=[1e-4, 1e-2], head=[1e-4, 1e-2])
    cfg = one_run(decay_groups=("last_bn", "head")).replace(weight_decays=grid)
    res = nc_jax.run_sweep(cfg, tiny_data(cfg), progress=False)
    assert len(calls) == 1 and res.num_runs == 4
    gammas = [float(jnp.linalg.norm(res.state(i).params["bn_1"]["scale"])) for i in range(4)]
    assert gammas[0] > gammas[2] and gammas[1] > gammas[3]  # more decay on gamma, smaller gamma
    with pytest.raises(ConfigError, match="exactly the groups"):
        cfg.replace(weight_decays=({"rest": 1e-4, "head": 1e-3},))
    with pytest.raises(ConfigError, match="decay_groups is empty"):
        one_run().replace(weight_decays=({"rest": 1e-4},))


class DropoutMLP(nn.Module):
    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        h = nn.relu(nn.Dense(32)(x))
        h = nn.Dropout(0.5, deterministic=not train)(h)
        logits = nn.Dense(self.num_classes, name="head")(h)
        return (logits, (h,)) if return_features else logits


def test_a_dropout_model_trains_reproducibly_with_its_own_stream_per_run():
    cfg = one_run().replace(seeds=(0, 1), weight_decays=(0.0,))
    cfg = cfg.replace(optim=dataclasses.replace(cfg.optim, batch_size=16))
    data = tiny_data(cfg)
    a = nc_jax.run_sweep(cfg, data, model=DropoutMLP(), progress=False)
    b = nc_jax.run_sweep(cfg, data, model=DropoutMLP(), progress=False)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    assert not np.array_equal(a.history["loss"][0], a.history["loss"][1])
    # the stream is used: with the same init and data order, no dropout trains otherwise
    same = nc_jax.run_sweep(cfg, data, model=DropoutMLP(), progress=False)
    plain = nc_jax.run_sweep(cfg, data, model=NoDropoutMLP(), progress=False)
    np.testing.assert_array_equal(same.history["loss"], a.history["loss"])
    assert not np.allclose(plain.history["loss"], a.history["loss"])


class NoDropoutMLP(DropoutMLP):
    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        h = nn.relu(nn.Dense(32)(x))
        logits = nn.Dense(self.num_classes, name="head")(h)
        return (logits, (h,)) if return_features else logits


def test_decay_groups_from_the_command_line(tmp_path):
    import json
    out = tmp_path / "out"
    argv = ["--preset", "demo", "--set", "model.depth=3", "--set", "model.width=16",
            "--set", f"data.n={N}", "--set", "data.dim=8", "--set", "data.num_classes=4",
            "--set", "data.teacher_width=16", "--set", "optim.epochs=2",
            "--set", f"optim.batch_size={N}", "--set", "optim.decay_groups=[last_bn,head]",
            "--set", 'weight_decays=[{"rest":1e-4,"last_bn":1e-2,"head":1e-3},1e-4]',
            "--seeds", "0", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["weight_decay"], r["weight_decay_last_bn"], r["weight_decay_head"]) for r in runs] \
        == [(1e-4, 1e-2, 1e-3), (1e-4, 1e-4, 1e-4)]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"weight_decay_last_bn", "weight_decay_head"} <= set(header)
