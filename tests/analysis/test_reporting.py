import jax
import numpy as np

from nc_jax.analysis import run_report, sweep_reports
from nc_jax.runs import run_sweep
from tests.helpers import tiny_config, tiny_data


def _np_forward_eval(params, stats, x, depth):
    """Eval-mode MLP forward in float64 (running BN statistics), returns (logits, features)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    s = jax.tree.map(lambda a: np.asarray(a, np.float64), stats)
    h = x.astype(np.float64)
    feats = []
    for l in range(depth - 1):
        h = np.maximum(h @ p[f"dense_{l}"]["kernel"] + p[f"dense_{l}"]["bias"], 0)
        bn = s[f"bn_{l}"]
        h = (h - bn["mean"]) / np.sqrt(bn["var"] + 1e-5) * p[f"bn_{l}"]["scale"] + p[f"bn_{l}"]["bias"]
        feats.append(h)
    return h @ p["head"]["kernel"] + p["head"]["bias"], feats


def _np_min_intra_max_inter(h, y, C):
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    G = np.array([[np.mean(u[y == a] @ u[y == b].T) for b in range(C)] for a in range(C)])
    off = G[~np.eye(C, dtype=bool)]
    return np.diag(G).min(), off.max()


def test_run_report_against_numpy_and_theory():
    cfg = tiny_config(weight_decays=(5e-3,), seeds=(0,))
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    st = res.state(0)
    rep = jax.tree.map(np.asarray, run_report(st, data.x, data.y, res.task, layers=True))
    logits, feats = _np_forward_eval(st.params, st.batch_stats, data.x, 3)
    h = feats[-1]
    # cross-entropy and accuracy of the eval-mode network
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    loss = -logp[np.arange(len(data.y)), data.y].mean()
    np.testing.assert_allclose(rep["train_loss"], loss, rtol=1e-4)
    np.testing.assert_allclose(rep["train_accuracy"], np.mean(logits.argmax(1) == data.y), atol=1e-6)
    mi, ma = _np_min_intra_max_inter(h, data.y, 4)
    np.testing.assert_allclose(rep["min_intra"], mi, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rep["max_inter"], ma, rtol=1e-4, atol=1e-5)
    # theorem quantities with the bias folded in: alpha^2 = mean ||h||^2 + 1, beta = ||[W b]||/sqrt(C)
    alpha = np.sqrt(np.mean(np.sum(h ** 2, 1)) + 1)
    Wb = np.concatenate([np.asarray(st.params["head"]["kernel"]).T,
                         np.asarray(st.params["head"]["bias"])[:, None]], 1)
    beta = np.linalg.norm(Wb) / 2.0
    m = np.log(1 + 3 * np.exp(-4 / 3 * alpha * beta))
    np.testing.assert_allclose(rep["alpha_aug"], alpha, rtol=1e-4)
    np.testing.assert_allclose(rep["beta_aug"], beta, rtol=1e-5)
    np.testing.assert_allclose(rep["min_loss"], m, rtol=1e-4)
    assert rep["train_loss"] >= rep["min_loss"]  # Theorem 2.3.1's lower bound
    # Proposition 2.2.1 (with beta): train-mode RMS^2 = ||gamma||^2 + ||beta||^2 up to BN eps
    np.testing.assert_allclose(rep["rms_train"], rep["prop221_rhs"], rtol=5e-3)
    # with BN's eps in the right-hand side, computed here from the BN input in float64
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), st.params)
    h0 = np.maximum(data.x.astype(np.float64) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
    h0 = (h0 - h0.mean(0)) / np.sqrt(h0.var(0) + 1e-5) * p["bn_0"]["scale"] + p["bn_0"]["bias"]
    pre = np.maximum(h0 @ p["dense_1"]["kernel"] + p["dense_1"]["bias"], 0)
    var = pre.var(0)
    rhs = np.sqrt(np.sum(p["bn_1"]["scale"] ** 2 * var / (var + 1e-5)) + np.sum(p["bn_1"]["bias"] ** 2))
    np.testing.assert_allclose(rep["prop221_rhs_eps"], rhs, rtol=1e-4)
    np.testing.assert_allclose(rep["rms_train"], rhs, rtol=1e-4)  # the identity, exactly
    g = np.asarray(st.params["bn_1"]["scale"])
    np.testing.assert_allclose(rep["gamma_norm"], np.linalg.norm(g), rtol=1e-6)
    # per-layer metrics: last layer equals the last-layer report
    assert rep["layer_min_intra"].shape == (2,)
    np.testing.assert_allclose(rep["layer_min_intra"][-1], rep["min_intra"], rtol=1e-6)
    mi0, _ = _np_min_intra_max_inter(feats[0], data.y, 4)
    np.testing.assert_allclose(rep["layer_min_intra"][0], mi0, rtol=1e-4, atol=1e-5)
    # the output layer (logits) of Conjecture 3.2.1
    mo, xo = _np_min_intra_max_inter(logits, data.y, 4)
    np.testing.assert_allclose(rep["output_min_intra"], mo, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rep["output_max_inter"], xo, rtol=1e-4, atol=1e-5)


def test_sweep_reports_equal_per_run_reports():
    cfg = tiny_config(weight_decays=(1e-4, 1e-2), seeds=(0, 1))
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    allr = sweep_reports(res.states, data.x, data.y, res.task, batch_size=3)
    for i in range(4):
        one = run_report(res.state(i), data.x, data.y, res.task)
        for k in ("min_intra", "nc1", "train_loss", "alpha"):
            np.testing.assert_allclose(np.asarray(allr[k][i]), np.asarray(one[k]), rtol=1e-5)


def test_peeled_mlp_is_the_theorem_model():
    """mlp_peeled: last BN scale-only, head without bias: the theorem's quantities need no
    folding (alpha_aug = alpha) and Prop. 2.2.1 holds as rms = ||gamma|| up to BN's eps."""
    import dataclasses
    cfg = tiny_config(weight_decays=(5e-3,), seeds=(0,))
    cfg = cfg.replace(model=dataclasses.replace(cfg.model, name="mlp_peeled"))
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    st = res.state(0)
    assert "bias" not in st.params["head"] and set(st.params["bn_1"]) == {"scale"}
    assert set(st.params["bn_0"]) == {"scale", "bias"}  # only the last BN loses its shift
    rep = jax.tree.map(np.asarray, run_report(st, data.x, data.y, res.task))
    assert rep["alpha_aug"] == rep["alpha"] and rep["beta_aug"] == rep["beta"]
    W = np.asarray(st.params["head"]["kernel"], np.float64).T
    np.testing.assert_allclose(rep["beta"], np.linalg.norm(W) / 2.0, rtol=1e-5)
    assert rep["beta_norm"] == 0.0
    np.testing.assert_allclose(rep["rms_train"], rep["gamma_norm"], rtol=5e-3)
    np.testing.assert_allclose(rep["rms_train"], rep["prop221_rhs_eps"], rtol=1e-4)
    assert rep["train_loss"] >= rep["min_loss"]


def _np_cos_matrix(h, y, C, center=False):
    """Thesis' average cosines in float64: G[a, b] = mean over i in a, j in b of cos(h_i, h_j);
    centered: h - mu_G first, mu_G the unweighted mean of the class means."""
    h = np.asarray(h, np.float64)
    if center:
        h = h - np.mean([h[y == c].mean(0) for c in range(C)], axis=0)
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    return np.array([[np.mean(u[y == a] @ u[y == b].T) for b in range(C)] for a in range(C)])


def _np_bounds(h, W, y, C, delta):
    """Theorem 2.3.1 with O-constants 1, in float64: bounds and the fractions within them."""
    alpha = np.sqrt(np.mean(np.sum(h ** 2, 1)))
    beta = np.linalg.norm(W) / np.sqrt(C)
    z = h @ W.T
    z = z - z.max(1, keepdims=True)
    ce = -np.mean(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))
    ab = alpha * beta
    eps = max(ce - np.log1p((C - 1) * np.exp(-C / (C - 1) * ab)), 0.0)
    b_intra = 1 - np.exp(C / (C - 1) * ab) / ab * np.sqrt(eps / delta)
    b_inter = -1 / (C - 1) + np.exp(C / (C - 1) * ab) / ab * (eps / delta) ** (1 / 6)
    G = _np_cos_matrix(h, y, C)
    iu = np.triu_indices(C, 1)
    return dict(thm_bound_intra=b_intra, thm_bound_inter=b_inter,
                thm_frac_classes=np.mean(np.diag(G) >= b_intra),
                thm_frac_pairs=np.mean(G[iu] <= b_inter),
                thm_min_intra=np.diag(G).min(), thm_max_inter=G[iu].max())


def test_theorem_bounds_against_numpy():
    """Near-ETF features (class 0 noisy and pulled towards class 1) with a bias-free classifier:
    the bounds at delta = 0.1, and at deltas where they cut through the measured cosines (the
    fractions are then strictly between 0 and 1 for some delta), against float64."""
    import types
    import jax.numpy as jnp
    from nc_jax.analysis import theorem_bounds
    C, n = 4, 50
    E = np.eye(C) - 1.0 / C
    y = np.repeat(np.arange(C), n)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(C * n, C)) * np.array([0.3, 0.01, 0.01, 0.01])[y][:, None]
    h = 1.2 * (E[y] + noise + 0.5 * (y == 0)[:, None] * E[1])
    W = 1.2 * E
    v = types.SimpleNamespace(task=types.SimpleNamespace(loss_name="ce"), num_classes=C,
                              h=jnp.asarray(h, jnp.float32), y=jnp.asarray(y),
                              classifier=(jnp.asarray(W, jnp.float32), None),
                              logits=jnp.asarray(h @ W.T, jnp.float32))
    h32 = np.asarray(h, np.float32).astype(np.float64)
    partial = set()
    for delta in (0.1, 10.0, 1e3, 1e5, 1e7):
        got = {k: float(a) for k, a in theorem_bounds(v, delta=delta).items()}
        want = _np_bounds(h32, np.asarray(W, np.float32).astype(np.float64), y, C, delta)
        for k in ("thm_bound_intra", "thm_bound_inter", "thm_min_intra", "thm_max_inter"):
            np.testing.assert_allclose(got[k], want[k], rtol=2e-3, atol=1e-4, err_msg=k)
        for k in ("thm_frac_classes", "thm_frac_pairs"):
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=f"{k} {delta}")
            if 0 < want[k] < 1:
                partial.add(k)
        assert got["thm_vacuous_intra"] == (want["thm_bound_intra"] <= -1)
        assert got["thm_augmented"] == 0
    assert partial == {"thm_frac_classes", "thm_frac_pairs"}  # the fractions were exercised


def test_theorem_bounds_of_a_trained_run_use_the_augmented_features():
    """With a head bias the theorem is about [h; 1] and [W b]: bounds and cosines of those."""
    cfg = tiny_config(weight_decays=(5e-3,), seeds=(0,))
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    st = res.state(0)
    rep = jax.tree.map(np.asarray, run_report(st, data.x, data.y, res.task))
    _, feats = _np_forward_eval(st.params, st.batch_stats, data.x, 3)
    h = np.concatenate([feats[-1], np.ones((len(data.y), 1))], 1)
    Wb = np.concatenate([np.asarray(st.params["head"]["kernel"], np.float64).T,
                         np.asarray(st.params["head"]["bias"], np.float64)[:, None]], 1)
    want = _np_bounds(h, Wb, data.y, 4, 0.1)
    assert rep["thm_augmented"]
    for k in ("thm_bound_intra", "thm_bound_inter", "thm_min_intra", "thm_max_inter"):
        np.testing.assert_allclose(rep[k], want[k], rtol=2e-3, atol=1e-4, err_msg=k)


def test_per_layer_modes_against_numpy():
    """Per-layer cosines with BN in train mode (whole-set statistics) and centered, and the
    trace form of NC1, against a float64 forward pass of the same network."""
    cfg = tiny_config(weight_decays=(5e-3,), seeds=(0,))
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    st = res.state(0)
    rep = jax.tree.map(np.asarray, run_report(st, data.x, data.y, res.task, layers=True))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), st.params)
    _, eval_feats = _np_forward_eval(st.params, st.batch_stats, data.x, 3)
    h, train_feats = data.x.astype(np.float64), []
    for l in range(2):
        h = np.maximum(h @ p[f"dense_{l}"]["kernel"] + p[f"dense_{l}"]["bias"], 0)
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * p[f"bn_{l}"]["scale"] + p[f"bn_{l}"]["bias"]
        train_feats.append(h)
    y, C, off = data.y, 4, ~np.eye(4, dtype=bool)
    for mode, feats in (("eval", eval_feats), ("train", train_feats)):
        for l, f in enumerate(feats):
            Gc = _np_cos_matrix(f, y, C, center=True)
            np.testing.assert_allclose(rep[f"layer_{mode}_centered_min_intra"][l],
                                       np.diag(Gc).min(), rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(rep[f"layer_{mode}_centered_max_inter"][l],
                                       Gc[off].max(), rtol=1e-3, atol=1e-4)
            mu = np.array([f[y == c].mean(0) for c in range(C)])
            tr_w = np.mean(np.sum((f - mu[y]) ** 2, 1))
            tr_b = np.mean(np.sum((mu - mu.mean(0)) ** 2, 1))
            np.testing.assert_allclose(rep[f"layer_{mode}_nc1_trace"][l], tr_w / tr_b, rtol=1e-3)
            if mode == "eval":
                # the class means' spectrum: singular values over the largest, entropy rank
                for key, A in (("", mu - mu.mean(0)), ("raw_", mu)):
                    sv = np.linalg.svd(A, compute_uv=False)
                    p = sv / sv.sum()
                    np.testing.assert_allclose(rep[f"layer_{key}effective_rank"][l],
                                               np.exp(-np.sum(p * np.log(p))), rtol=1e-3)
                    if not key:
                        np.testing.assert_allclose(rep["layer_spectrum"][l], sv / sv[0],
                                                   rtol=1e-3, atol=1e-4)
        G = _np_cos_matrix(train_feats[0], y, C)
        np.testing.assert_allclose(rep["layer_train_min_intra"][0], np.diag(G).min(),
                                   rtol=1e-3, atol=1e-4)
    # centering changes the numbers (the test would not notice a mode mix-up otherwise)
    assert abs(rep["layer_eval_centered_max_inter"][0] - rep["layer_max_inter"][0]) > 1e-3
    assert abs(rep["layer_train_min_intra"][0] - rep["layer_min_intra"][0]) > 1e-6


def test_asking_for_layers_changes_no_other_number():
    """--layers adds keys; every other number stays the same to the bit."""
    import nc_jax
    from tests.helpers import tiny_config, tiny_data
    cfg = tiny_config(weight_decays=(1e-3,), seeds=(0, 1))
    data = tiny_data(cfg)
    res = nc_jax.run_sweep(cfg, data, progress=False)
    plain, layered = nc_jax.analyse(res, data), nc_jax.analyse(res, data, layers=True)
    for a, b in zip(plain, layered):
        assert set(a) < set(b)
        assert {k: a[k] for k in a} == {k: b[k] for k in a}
