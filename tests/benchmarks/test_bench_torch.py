"""The PyTorch side of experiments/bench_vs_torch.py computes what nc-jax computes."""
import copy
import json
import os
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "experiments"))
import bench_torch as bt  # noqa: E402
import bench_vs_torch as bvt  # noqa: E402

from nc_jax.config import THESIS_WEIGHT_DECAYS, OptimConfig  # noqa: E402
from nc_jax.models import MLP  # noqa: E402


def test_protocol_and_grid_match_nc_jax():
    assert bvt.THESIS_WEIGHT_DECAYS == THESIS_WEIGHT_DECAYS
    p, o = bt.Protocol(), OptimConfig()
    assert (p.lr, p.momentum, p.batch_size, p.lr_decay_factor) == (
        o.lr, o.momentum, o.batch_size, o.lr_decay_factor)
    for epochs in (1, 2, 3, 10, 300):
        assert p.decay_epochs(epochs) == OptimConfig(epochs=epochs).decay_epochs
    assert [p.lr_at(e, 300) for e in (0, 99, 100, 199, 200)] == pytest.approx(
        [0.0679, 0.0679, 0.00679, 0.00679, 0.000679])
    wds, seeds = bvt.grid(21)
    assert bvt.expand(wds, seeds)[0][:4] == [1e-4, 1e-4, 1e-4, 3e-4]
    assert bvt.expand(wds, seeds)[1][:4] == [0, 1, 2, 0]


def _flax_variables(depth=4, width=16, classes=5, dim=8, seed=0):
    model = MLP(depth=depth, width=width, num_classes=classes, bn="affine")
    v = model.init(jax.random.key(seed), np.zeros((2, dim), np.float32), train=False)
    rng = np.random.default_rng(seed)

    def jitter(tree, lo, hi):  # BN defaults (gamma 1, beta 0, mean 0, var 1) would hide bugs
        return jax.tree.map(lambda a: np.asarray(rng.uniform(lo, hi, a.shape), np.float32), tree)

    params = dict(v["params"])
    stats = {}
    for i in range(depth - 1):
        params[f"bn_{i}"] = jitter(params[f"bn_{i}"], 0.5, 1.5)
        stats[f"bn_{i}"] = {"mean": jitter(v["batch_stats"][f"bn_{i}"]["mean"], -0.5, 0.5),
                            "var": jitter(v["batch_stats"][f"bn_{i}"]["var"], 0.5, 2.0)}
    return model, params, stats


@pytest.mark.parametrize("train", [False, True])
def test_torch_mlp_forward_equals_flax(train):
    model, params, stats = _flax_variables()
    x = np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32)
    tm = bt.TorchMLP(8, 16, 5, depth=4).load_flax(params, stats)
    tm.train(train)
    with torch.no_grad():
        logits_t, feats_t = tm(torch.from_numpy(x), return_features=True)
    variables = {"params": params, "batch_stats": stats}
    if train:
        (logits_j, feats_j), upd = model.apply(variables, x, train=True, return_features=True,
                                               mutable=["batch_stats"])
        for i in range(3):  # running statistics: PyTorch's momentum and unbiased variance
            bn = tm.bn[i]
            np.testing.assert_allclose(bn.running_mean.numpy(),
                                       upd["batch_stats"][f"bn_{i}"]["mean"], atol=1e-5)
            np.testing.assert_allclose(bn.running_var.numpy(),
                                       upd["batch_stats"][f"bn_{i}"]["var"], atol=1e-5)
    else:
        logits_j, feats_j = model.apply(variables, x, train=False, return_features=True)
    # relative as well as absolute: features reach ~6, where float32 sums in another order (the
    # thread count changes it) differ by a few ulps, 2.6e-6 relative seen on one core
    np.testing.assert_allclose(logits_t.numpy(), logits_j, rtol=1e-5, atol=1e-5)
    for ft, fj in zip(feats_t, feats_j):
        np.testing.assert_allclose(ft.numpy(), fj, rtol=1e-5, atol=1e-5)


def test_torch_sgd_steps_equal_nc_jax_train_steps():
    """Same init, same batches: nc-jax's train_step (optax chain, coupled decay on every
    parameter, momentum) and torch.optim.SGD on TorchMLP give the same parameters and BN
    running statistics."""
    from nc_jax.config import DataConfig, ModelConfig, SweepConfig
    from nc_jax.data import Dataset
    from nc_jax.training import make_task
    from nc_jax.training import init_state, train_step

    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype(np.float32)
    y = (np.arange(96) % 5).astype(np.int32)
    lr, wd = 0.05, 5e-3
    cfg = SweepConfig(model=ModelConfig(depth=4, width=16), data=DataConfig(n=100),
                      optim=OptimConfig(lr=lr, batch_size=32, epochs=30))
    task = make_task(cfg, Dataset(x, y, 5))
    state = init_state(task, jax.random.key(3), (8,), lr, wd)
    tm = bt.TorchMLP(8, 16, 5, depth=4).load_flax(state.params, state.batch_stats).train()
    opt = torch.optim.SGD(tm.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    step = jax.jit(lambda s, xb, yb: train_step(s, xb, yb, task))
    for i in range(3):
        xb, yb = x[32 * i:32 * (i + 1)], y[32 * i:32 * (i + 1)]
        state, _ = step(state, xb, yb)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tm(torch.from_numpy(xb)),
                                          torch.from_numpy(yb.astype(np.int64))).backward()
        opt.step()
    ref = bt.TorchMLP(8, 16, 5, depth=4).load_flax(state.params, state.batch_stats)
    for (name, a), b in zip(tm.state_dict().items(), ref.state_dict().values()):
        if a.dtype.is_floating_point:
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=name)


def test_batched_steps_equal_sequential_sgd_steps():
    seeds, wds, lr = [0, 1, 0], [1e-4, 1e-3, 5e-2], 0.05
    models = bt.make_models(seeds, 8, 16, 5, depth=4)
    seq = [copy.deepcopy(m) for m in models]
    ens = bt.BatchedMLP(models, wds)
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
            for m, wd in zip(seq, wds)]
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second step goes through the momentum buffer
        xb = torch.from_numpy(rng.standard_normal((3, 32, 8)).astype(np.float32))
        yb = torch.from_numpy(rng.integers(0, 5, (3, 32)))
        losses = ens.step(xb, yb, lr)
        for k, (m, opt) in enumerate(zip(seq, opts)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(xb[k]), yb[k])
            loss.backward()
            opt.step()
            assert abs(losses[k].item() - loss.item()) < 1e-5
    for k, m in enumerate(seq):
        pairs = [(ens.kernels[-1][k], m.head.weight.T), (ens.biases[-1][k, 0], m.head.bias)]
        for i in range(3):
            pairs += [(ens.kernels[i][k], m.dense[i].weight.T),
                      (ens.biases[i][k, 0], m.dense[i].bias),
                      (ens.gammas[i][k, 0], m.bn[i].weight), (ens.betas[i][k, 0], m.bn[i].bias),
                      (ens.run_mean[i][k, 0], m.bn[i].running_mean),
                      (ens.run_var[i][k, 0], m.bn[i].running_var)]
        for a, b in pairs:
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-5)


def test_batched_bn_statistics_stay_per_run():
    models = bt.make_models([0, 1], 8, 16, 5, depth=4)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 32, 8)).astype(np.float32))
    x2 = x.clone()
    x2[1] = 10.0 * x2[1] + 3.0  # run 1's batch changes completely
    a, b = bt.BatchedMLP(models, [0.0, 0.0]), bt.BatchedMLP(models, [0.0, 0.0])
    with torch.no_grad():
        out_a, out_b = a.forward(x, train=True), b.forward(x2, train=True)
    assert torch.equal(out_a[0], out_b[0])
    assert not torch.allclose(out_a[1], out_b[1])
    for i in range(3):
        assert torch.equal(a.run_mean[i][0], b.run_mean[i][0])
        assert torch.equal(a.run_var[i][0], b.run_var[i][0])
        assert not torch.equal(a.run_mean[i][1], b.run_mean[i][1])


def test_trainers_return_per_run_results():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 8)).astype(np.float32)
    y = rng.integers(0, 5, 150)
    for fn in (bt.train_sequential, bt.train_batched):
        r = fn(x, y, 5, 16, [1e-4, 1e-2], [0, 0], 2, depth=3, threads=1, return_features=True)
        assert r["loss"].shape == r["accuracy"].shape == (2,)
        assert r["features"].shape == (2, 150, 16) and r["logits"].shape == (2, 150, 5)
        assert r["W"].shape == (2, 5, 16) and r["b"].shape == (2, 5)
        assert np.all(np.isfinite(r["loss"]))


@pytest.mark.slow
def test_quick_comparison_runs(tmp_path):
    out = tmp_path / "bench.json"
    rc = bvt.main(["--quick", "--torch-threads", "1", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    # at these sizes a steady rate may drown in timing noise (then None); the calls must exist
    assert all(len(row["times_s"][fw]) == 1 and len(row[f"{fw}_rates"]) == 1
               for fw in bvt.FRAMEWORKS)
    assert row["jax_whole"] > 0
    assert row["jax_over_bat"] is None or row["jax_over_bat"] > 0
    assert doc["check"]["ok"] and doc["machine"]["torch"]


def test_agreement_check_flags_a_shifted_measure():
    rng = np.random.default_rng(0)

    def runs(shift):
        return [{k: float(rng.normal(0.5 + shift, 0.01)) for k in bvt.CHECK_FLOORS}
                for _ in range(2 * 6)]  # 2 WDs x 6 seeds

    ok = bvt.compare({"jax": runs(0), "torch_seq": runs(0), "torch_bat": runs(0)}, [1, 2], 6)
    assert all(r["ok"] for r in ok) and len(ok) == 2 * 2 * len(bvt.CHECK_FLOORS)
    bad = bvt.compare({"jax": runs(0), "torch_seq": runs(0.2), "torch_bat": runs(0)}, [1, 2], 6)
    assert not any(r["ok"] for r in bad if r["fw"] == "torch_seq")
    assert all(r["ok"] for r in bad if r["fw"] == "torch_bat")


def test_frameworks_option_keeps_jax_and_refuses_unknown_names():
    assert bvt.frameworks("torch_bat") == ["jax", "torch_bat"]
    assert bvt.frameworks("torch_bat, jax,torch_seq") == list(bvt.FRAMEWORKS)
    with pytest.raises(SystemExit, match=r"unknown framework\(s\) \['torch_bmm'\]"):
        bvt.frameworks("jax,torch_bmm")
