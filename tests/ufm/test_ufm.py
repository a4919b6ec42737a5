"""nc_jax.ufm / nc_jax.ufm.tightness: the layer-peeled solver against closed forms computed here,
independently, in NumPy float64 (thesis Theorem 2.3.1's m(alpha, beta), simplex-ETF cosines
-1/(C-1), the regular C-gon for d = 2, the weight-decay optimum), never against the code's own output.

Few compiled programs on purpose (each costs seconds on a 2-core CPU): one padded solve_grid call
covers C in {2, 3, 10} and the degenerate d < C - 1 cases, one vmapped solve covers C = 100.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.analysis import _theory as theory
from nc_jax import ufm
from nc_jax.ufm import tightness as T


def np_m(ab, C):
    """m(alpha, beta) = log(1 + (C-1) exp(-C/(C-1) alpha beta)), thesis Thm. 2.3.1, float64."""
    return np.log1p((C - 1) * np.exp(-C / (C - 1) * np.asarray(ab, np.float64)))


def np_cosines(h, y, C):
    """intra_c, inter_cc' straight from the thesis' definition: averages of all pairwise cosines."""
    h = np.asarray(h, np.float64)
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    cos = hn @ hn.T
    G = np.array([[cos[np.ix_(y == a, y == b)].mean() for b in range(C)] for a in range(C)])
    return np.diag(G), G[~np.eye(C, dtype=bool)]


def np_polygon_loss(ab, C):
    """Loss of the self-dual regular C-gon in d = 2: h_c = alpha u_c, w_c = beta u_c, angles 2 pi c / C."""
    k = np.arange(1, C)
    return np.log1p(np.exp(ab * (np.cos(2 * np.pi * k / C) - 1.0)).sum())


def np_nc1(h, y, C):
    """NC1 = tr(Sigma_W Sigma_B^+)/C (Papyan et al. 2020), pinv on the top C-1 eigen-directions."""
    h = np.asarray(h, np.float64)
    mu = np.stack([h[y == c].mean(0) for c in range(C)])
    dev = h - mu[y]
    SW = dev.T @ dev / len(y)
    M = mu - mu.mean(0)
    w, Q = np.linalg.eigh(M.T @ M / C)
    w, Q = w[::-1][:C - 1], Q[:, ::-1][:, :C - 1]
    return float(np.trace(Q.T @ SW @ Q / w) / C)


def np_ce(W, h, y):
    logits = np.asarray(h, np.float64) @ np.asarray(W, np.float64).T
    z = logits - logits[np.arange(len(y)), y][:, None]
    z[np.arange(len(y)), y] = -np.inf
    return np.mean(np.log1p(np.exp(z).sum(1)))


# ----------------------------------------------------------------------------- closed forms, C <= 10
CASES = [(C, d, ab) for C, d in ((2, 1), (3, 2), (3, 4), (10, 9), (10, 11)) for ab in (1.0, 8.0, 20.0)]
DEGENERATE = [(4, 2, 2.0), (5, 2, 8.0)]  # d < C - 1: no simplex ETF


@pytest.fixture(scope="module")
def grid():
    cases = CASES + DEGENERATE
    C = np.array([c[0] for c in cases])
    d = np.array([c[1] for c in cases])
    ab = np.array([c[2] for c in cases])
    alpha = np.sqrt(ab) * 1.5  # alpha != beta: the split of alpha beta must not matter
    out = ufm.solve_grid(alpha, ab / alpha, C, d, 3, np.arange(len(cases)), key=jax.random.key(0),
                         return_arrays=True)
    return cases, alpha, {k: np.asarray(v) for k, v in out.items()}


def _unpad(out, p, C, d):
    sm = out["sample_mask"][p]
    return out["h"][p][sm][:, :d], out["y"][p][sm], out["W"][p][:C, :d]


@pytest.mark.parametrize("p", range(len(CASES)))
def test_optimum_is_simplex_etf_at_m(grid, p):
    cases, alpha, out = grid
    C, d, ab = cases[p]
    h, y, W = _unpad(out, p, C, d)
    beta = ab / alpha[p]
    # constraints (thesis Thm. 2.3.1 assumptions 1-2), exactly as equalities
    np.testing.assert_allclose(np.sqrt(np.mean(np.sum(np.float64(h) ** 2, 1))), alpha[p], rtol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(np.float64(W)), beta * np.sqrt(C), rtol=2e-6)
    # loss = m(alpha, beta) to float32 precision (the logits carry ~1e-7 alpha beta rounding)
    np.testing.assert_allclose(np_ce(W, h, y), np_m(ab, C), rtol=1e-6 * (5 + ab))
    np.testing.assert_allclose(out["loss"][p], np_m(ab, C), rtol=1e-6 * (5 + ab))
    # simplex ETF: every intra-class cosine 1, every inter-class cosine -1/(C-1)
    intra, inter = np_cosines(h, y, C)
    np.testing.assert_allclose(intra, 1.0, atol=2e-6)
    np.testing.assert_allclose(inter, -1.0 / (C - 1), atol=5e-5)
    assert np_nc1(h, y, C) < 1e-8
    # self-duality: w_c / beta = mu_c / alpha (same direction AND the ETF's norms)
    mu = np.stack([np.float64(h)[y == c].mean(0) for c in range(C)])
    np.testing.assert_allclose(W / beta, mu / alpha[p], atol=2e-4)
    # the masked in-graph geometry agrees with the definitions
    np.testing.assert_allclose(out["min_intra"][p], intra.min(), atol=1e-5)
    np.testing.assert_allclose(out["max_inter"][p], inter.max(), atol=1e-5)
    np.testing.assert_allclose(out["self_dual_min_cos"][p], 1.0, atol=1e-6)


@pytest.mark.parametrize("q", range(len(DEGENERATE)))
def test_degenerate_dim_gives_polygon_not_etf(grid, q):
    cases, alpha, out = grid
    p = len(CASES) + q
    C, d, ab = cases[p]
    assert not ufm.etf_attainable(C, d) and ufm.etf_attainable(C, C - 1)
    h, y, W = _unpad(out, p, C, d)
    loss = np_ce(W, h, y)
    assert loss > np_m(ab, C) * 1.05  # m is not attained without room for the ETF
    np.testing.assert_allclose(loss, np_polygon_loss(ab, C), rtol=2e-5)  # the regular C-gon
    np.testing.assert_allclose(out["rel_gap"][p], loss / np_m(ab, C) - 1, rtol=1e-4)


# ----------------------------------------------------------------------------- C = 100, vmapped
def test_vmapped_solve_c100_reaches_m_and_etf():
    C, d, n = 100, 99, 1
    ab = np.array([1.0, 6.0, 25.0], np.float32)
    alphas = np.array([0.5, 2.0, 5.0], np.float32)
    sols = jax.vmap(lambda a, b, k: ufm.solve(a, b, num_classes=C, dim=d, n_per_class=n, key=k))(
        jnp.asarray(alphas), jnp.asarray(ab / alphas), jax.random.split(jax.random.key(3), 3))
    for i in range(3):
        h, W, y = np.asarray(sols.h[i]), np.asarray(sols.W[i]), np.asarray(sols.y[i])
        np.testing.assert_allclose(np_ce(W, h, y), np_m(ab[i], C), rtol=1e-6 * (5 + ab[i]))
        intra, inter = np_cosines(h, y, C)
        np.testing.assert_allclose(inter, -1.0 / (C - 1), atol=2e-5)
        np.testing.assert_allclose(np.sum(h.astype(np.float64) ** 2) / (C * n), alphas[i] ** 2, rtol=5e-6)


# ----------------------------------------------------------------------------- inequality constraints
def test_inequality_optimum_lies_on_the_boundary():
    C, d, n, alpha, beta = 3, 4, 3, 2.0, 1.5
    s = ufm.solve(alpha, beta, num_classes=C, dim=d, n_per_class=n, key=jax.random.key(5),
                  constraint="inequality")
    h, W, y = np.asarray(s.h, np.float64), np.asarray(s.W, np.float64), np.asarray(s.y)
    # started at half the radii, it used the whole budget: RMS = alpha, ||W||_F = beta sqrt(C)
    np.testing.assert_allclose(np.sqrt(np.mean(np.sum(h ** 2, 1))), alpha, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(W), beta * np.sqrt(C), rtol=1e-5)
    np.testing.assert_allclose(np_ce(W, h, y), np_m(alpha * beta, C), rtol=1e-5)
    # why: shrinking either block raises the loss (m decreases strictly in alpha beta)
    assert np_ce(W, 0.9 * h, y) > np_ce(W, h, y) and np_ce(0.9 * W, h, y) > np_ce(W, h, y)
    intra, inter = np_cosines(h, y, C)
    np.testing.assert_allclose(np.r_[intra, inter], np.r_[np.ones(C), np.full(C * (C - 1), -0.5)], atol=1e-5)


# ----------------------------------------------------------------------------- weight decay (Zhu et al.)
def test_regularized_ufm_matches_independent_minimization():
    C, lams = 4, np.array([1e-3, 1e-2, 0.6], np.float32)  # sqrt(C) * 0.6 > 1: the zero solution
    out = jax.vmap(lambda l: ufm.solve_regularized(l, l, num_classes=C, dim=C, n_per_class=2,
                                                   key=jax.random.key(7), steps=3000))(jnp.asarray(lams))
    for i, lam in enumerate(lams.astype(np.float64)):
        # independent: minimize m(t) + s t over a fine grid of t, then refine (no closed form used)
        s = np.sqrt(C * lam * lam)
        t = np.linspace(0, 40, 400001)
        g = np_m(t, C) + s * t
        t_star, g_star = t[np.argmin(g)], g.min()
        cf = ufm.regularized_optimum(lam, lam, C)
        np.testing.assert_allclose(cf["alpha_beta"], t_star, atol=2e-4)
        np.testing.assert_allclose(cf["objective"], g_star, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out["objective"][i], g_star, rtol=2e-5)
        ab = float(out["alpha"][i] * out["beta"][i])
        np.testing.assert_allclose(ab, t_star, atol=2e-3 * max(1.0, t_star))
        if t_star > 0:  # the optimal split: lambda_H alpha^2 = C lambda_W beta^2
            np.testing.assert_allclose(out["alpha"][i] ** 2, C * out["beta"][i] ** 2, rtol=1e-3)


# ----------------------------------------------------------------------------- the loss in float32
def test_log_cross_entropy_keeps_relative_precision():
    rng = np.random.default_rng(0)
    C, N, d = 5, 20, 6
    U = rng.normal(size=(N, d)).astype(np.float32)
    V = rng.normal(size=(C, d)).astype(np.float32)
    y = np.arange(N) % C
    U = (U + 3 * V[y]).astype(np.float32)  # mostly well classified: tiny losses at large scale
    for ab in (0.1, 1.0, 10.0, 40.0):  # L from ~1 down to ~1e-68, far below float32's range
        ref = np_ce(ab * V.astype(np.float64), U.astype(np.float64), y)
        got = float(ufm.log_mean_cross_entropy(U, V, ab, y))
        np.testing.assert_allclose(got, np.log(ref), atol=1e-6 * (1 + ab) * max(1.0, abs(np.log(ref))))
        if ref > 1e-6:  # where the plain float32 formula still works, it agrees
            np.testing.assert_allclose(float(theory.cross_entropy(ab * V, U, y)), ref, rtol=1e-3)
    for C in (2, 10, 100):
        for ab in (0.01, 1.0, 30.0, 300.0):  # m underflows float64 itself at 300; its log does not
            ref = np.log(np_m(ab, C)) if ab < 300 else np.log(C - 1) - C / (C - 1) * ab
            np.testing.assert_allclose(float(ufm.log_min_loss(ab, C)), ref, rtol=2e-6, atol=2e-6)


# ----------------------------------------------------------------------------- input validation
@pytest.mark.parametrize("kw, match", [
    (dict(alpha=0.0), "alpha must be > 0"), (dict(alpha=-1.0), "alpha must be > 0"),
    (dict(beta=float("nan")), "beta must be finite"), (dict(beta=0.0), "beta must be > 0"),
    (dict(num_classes=1), "num_classes must be >= 2"), (dict(num_classes=3.0), "num_classes must be a Python int"),
    (dict(n_per_class=0), "n_per_class must be >= 1"), (dict(dim=0), "dim must be >= 1"),
    (dict(key=0), "key must be a jax.random key"), (dict(constraint="soft"), "constraint must be"),
    (dict(steps=0), "steps must be >= 1"), (dict(alpha=np.ones(3)), "alpha must be a scalar"),
])
def test_bad_input_raises_clear_value_error(kw, match):
    args = dict(alpha=1.0, beta=1.0, num_classes=3, dim=2, n_per_class=2, key=jax.random.key(0))
    args.update(kw)
    a, b = args.pop("alpha"), args.pop("beta")
    with pytest.raises(ValueError, match=match):
        ufm.solve(a, b, **args)


def test_bad_grid_and_regularized_input():
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        ufm.solve_grid([1.0, -1.0], 1.0, 3, 2, 2, 0, key=k)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ufm.solve_grid(1.0, 1.0, [3, 1], 2, 2, 0, key=k)
    with pytest.raises(ValueError, match="must broadcast"):
        ufm.solve_grid([1.0, 2.0], 1.0, [3, 3, 3], 2, 2, 0, key=k)
    with pytest.raises(ValueError, match="dim must be integers"):
        ufm.solve_grid(1.0, 1.0, 3, 2.5, 2, 0, key=k)
    with pytest.raises(ValueError, match="lambda_w must be > 0"):
        ufm.regularized_optimum(0.0, 1e-3, 10)
    with pytest.raises(ValueError, match="lambda_h must be finite"):
        ufm.solve_regularized(1e-3, float("inf"), num_classes=3, dim=2, n_per_class=1, key=k)


# ----------------------------------------------------------------------------- the theorem's bounds
def test_theorem_bounds_match_their_formulas():
    C, ab, eps = 10, np.array([0.5, 3.0, 12.0]), np.array([1e-6, 1e-3, 1e-2])
    k = C / (C - 1)
    intra = np.exp(k * ab) / ab * np.sqrt(eps * C)
    inter = np.exp(k * ab) / ab * (eps * C * (C - 1)) ** (1 / 6)
    np.testing.assert_allclose(10 ** T.log10_intra_bound(ab, C, eps), intra, rtol=1e-10)
    np.testing.assert_allclose(10 ** T.log10_inter_bound(ab, C, eps), inter, rtol=1e-10)
    # the same scale as nc_jax.analysis.theory.rate_term (used by theorem.png), delta = 1/C
    np.testing.assert_allclose(10 ** T.log10_intra_bound(ab, C, eps),
                               theory.rate_term(ab, 1.0, C, eps, 1 / C), rtol=1e-5)
    for which, f in (("intra", T.log10_intra_bound), ("inter", T.log10_inter_bound)):
        le = T.log10_eps_for(0.1, ab, C, which)  # the inverse: the bound equals tau there
        np.testing.assert_allclose(f(ab, C, 10 ** le), np.log10(0.1), atol=1e-9)
    # the proof's constants: lambda = strong convexity of log(1 + (C-1) e^x) on [-C ab, C ab]
    for a in ab:
        x = np.linspace(-C * a, C * a, 200001)
        lam = np.min((C - 1) * np.exp(x) / (1 + (C - 1) * np.exp(x)) ** 2)
        ref = 8 * (C - 1) / (C * a) * np.sqrt(2 * 1e-3 * (1 - 1 / C) / (1 / C * lam))
        np.testing.assert_allclose(10 ** T.proof_intra_bound(a, C, 1e-3), ref, rtol=1e-6)


def test_envelope_crossing_and_trained_run_point():
    e, env = T.envelope([1e-3, 1e-5, 1e-4, 1e-2], [0.2, 0.01, 0.05, 0.1])
    np.testing.assert_allclose(e, [1e-5, 1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(env, [0.01, 0.05, 0.2, 0.2])  # a running max: feasible at larger eps too
    np.testing.assert_allclose(T.crossing_eps(e, env, 0.1), 10 ** (-4 + np.log(2) / np.log(4)), rtol=1e-12)
    assert np.isnan(T.crossing_eps(e, env, 0.5)) and np.isnan(T.crossing_eps(e, env, 0.005))
    np.testing.assert_allclose(T.loglog_slope([1, 10, 100], [3, 30, 300]), 1.0)
    run = dict(diverged=False, min_intra=0.8, max_inter=0.0, alpha_aug=3.0, beta_aug=2.0, train_loss=0.01,
               converged=True, group="affine", weight_decay=1e-3, seed=0)
    p = T.augmented_run(run, 10)
    np.testing.assert_allclose(p["eps"], 0.01 - np_m(6.0, 10), rtol=1e-12)
    np.testing.assert_allclose([p["one_minus_intra"], p["inter_dev"]], [0.2, 1 / 9])
    assert T.augmented_run(dict(run, diverged=True), 10) is None


def test_frontier_points_are_feasible_and_grow_with_eps():
    rg = np.array([1e-3, 1e-1, 1e1])
    out = T.frontier([4.0, 4.0], rg, num_classes=3, dim=3, n_per_class=2, key=jax.random.key(1),
                     target=["intra", "inter"], steps=150, solve_steps=300)
    # the quadratic penalty lands near the requested gap, not on it: over keys 0-7 the achieved
    # r / requested is 0.59-1.59 at r = 1e-3 (which side depends on the key and on the CPU's float
    # rounding) and 0.74-1.05 above; every point is reported, and used, at its achieved gap
    ratio = out["rel_gap"] / rg
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    np.testing.assert_allclose(out["eps"], np_m(4.0, 3) * out["rel_gap"], rtol=1e-4)
    bad_intra, bad_inter = 1 - out["intra0"][0], out["inter01"][1] + 0.5
    assert bad_intra[0] < 0.05 and bad_intra[-1] > 0.3 and np.all(np.diff(bad_intra) > 0)
    assert 0 <= bad_inter[0] < 0.3 and bad_inter[-1] > 0.5
    assert np.all(bad_intra <= 1 + 1e-6) and np.all(bad_inter <= 1.5 + 1e-6)


# ----------------------------------------------------------------------------- the experiment's CLI
def _experiment_module():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "experiments", "ufm_tightness.py")
    spec = importlib.util.spec_from_file_location("ufm_tightness_experiment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, os.path.join(os.path.dirname(path), "results", "ufm", "quick", "results.json")


def test_experiment_cli_refuses_overwrite_and_redraws(tmp_path, capsys):
    import os
    import shutil
    exp, committed = _experiment_module()
    assert exp.main(["--preset", "nope", "--out", str(tmp_path)]) == 2
    assert exp.main(["--preset", "quick", "--out", str(tmp_path), "--plot-only"]) == 2  # nothing to draw
    shutil.copy(committed, tmp_path / "results.json")
    assert exp.main(["--preset", "quick", "--out", str(tmp_path)]) == 2  # refuses to replace results
    assert "pass --overwrite" in capsys.readouterr().err
    assert exp.main(["--preset", "quick", "--out", str(tmp_path), "--plot-only"]) == 0
    assert all(os.path.getsize(tmp_path / f) > 10_000 for f in ("ufm_tightness.png", "ufm_phase.png"))
