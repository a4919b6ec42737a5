"""The peers' conventions as options (nc_jax/metrics/_conventions.py) against float64 formulas,
and every row of the peer table of docs/metrics.md: each peer's measure written here in NumPy
float64 from its published formula (rhubarbwu/neural-collapse, tding1/Neural-Collapse's
validate_NC.py, Papyan, Han & Donoho's analysis notebook) against the nc-jax call that the table
says reproduces it."""

import jax
import numpy as np
import pytest

from nc_jax import metrics
from tests.metrics import more_refs as ref
from tests.metrics.test_metrics import assert_close, make_data

DATASETS = [
    pytest.param(dict(seed=20), id="balanced"),
    pytest.param(dict(seed=21, imbalanced=True), id="imbalanced"),
    pytest.param(dict(seed=22, imbalanced=True, N=200, d=4, C=10), id="d<C"),
]
EPS = np.finfo(np.float64).eps


def data(kw):
    h, y, W, _ = make_data(**{"spread": 1.5, **kw})
    C = kw.get("C", 6)
    b = np.random.default_rng(kw["seed"]).normal(size=C).astype(np.float32)
    return h, y, C, W, b


# ----------------------------------------------------------------------------------------------
# Options against their float64 formulas
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", DATASETS)
def test_options_against_float64(kw):
    h, y, C, W, b = data(kw)
    logits = h @ W.T + b
    for kind in ("class", "sample"):
        for per_class in (True, False):
            assert_close(metrics.nc1(h, y, C, global_mean=kind, per_class=per_class),
                         ref.nc1(h, y, C, kind, per_class), what=f"nc1 {kind} {per_class}")
        for ddof in (0, 1, 2):
            out = metrics.nc2(h, y, C, W, ddof=ddof, global_mean=kind)
            expect = ref.nc2(h, y, C, W, ddof, kind)
            assert set(out) == set(expect)
            for k in expect:
                assert_close(out[k], expect[k], what=f"nc2 {k} {kind} {ddof}")
        for center_cos in (False, True):
            out = metrics.nc3(h, y, C, W, center_cos=center_cos, global_mean=kind)
            expect = ref.nc3(h, y, C, W, center_cos, kind)
            for k in expect:
                assert_close(out[k], expect[k], what=f"nc3 {k} {kind} {center_cos}")
        assert_close(metrics.nc1_quotient(h, y, C, global_mean=kind), ref.nc1_quotient(h, y, C, kind))
        assert_close(metrics.etf_error(h, y, C, global_mean=kind)["etf_error"], ref.etf_error(h, y, C, kind))
        assert_close(metrics.class_distances(h, y, C, global_mean=kind), ref.class_distances(h, y, C, kind))
        assert_close(metrics.bias_collapse(h, y, C, W, b, global_mean=kind),
                     ref.bias_collapse(h, y, C, W, b, kind))
    for average in ("sample", "class"):
        assert_close(metrics.nc4(h, y, C, logits, average=average), ref.nc4(h, y, C, logits, average))


def test_defaults_are_todays_programs():
    h, y, C, W, b = data(dict(seed=23, imbalanced=True))
    logits = h @ W.T
    same = np.testing.assert_array_equal
    same(np.asarray(metrics.nc1(h, y, C, per_class=False)), np.asarray(metrics.nc1(h, y, C)) * np.float32(C))
    same(np.asarray(metrics.nc1(h, y, C, global_mean="class", per_class=True)), np.asarray(metrics.nc1(h, y, C)))
    jax.tree_util.tree_map(same, metrics.nc2(h, y, C, W, ddof=1, global_mean="class"), metrics.nc2(h, y, C, W))
    jax.tree_util.tree_map(same, metrics.nc3(h, y, C, W, center_cos=False), metrics.nc3(h, y, C, W))
    same(np.asarray(metrics.nc4(h, y, C, logits, average="sample")), np.asarray(metrics.nc4(h, y, C, logits)))
    same(np.asarray(metrics.cdnv(h, y, C, power=2.0)), np.asarray(metrics.cdnv(h, y, C)))
    # on balanced classes the sample mean is the mean of the class means
    hb, yb, C, Wb, _ = data(dict(seed=24))
    assert_close(metrics.nc1(hb, yb, C, global_mean="sample"), float(metrics.nc1(hb, yb, C)), rtol=1e-5)


def test_options_under_jit_and_vmap():
    parts = [data(dict(seed=30 + r, imbalanced=True)) for r in range(3)]
    hs, ys, Ws, bs = (np.stack([p[i] for p in parts]) for i in (0, 1, 3, 4))
    C = parts[0][2]

    def f(h, y, W, b):
        logits = h @ W.T + b
        return {"nc1": metrics.nc1(h, y, C, global_mean="sample", per_class=False),
                "nc2": metrics.nc2(h, y, C, W, ddof=0, global_mean="sample"),
                "nc3": metrics.nc3(h, y, C, W, center_cos=True),
                "nc4": metrics.nc4(h, y, C, logits, average="class")}

    batched = jax.jit(jax.vmap(f))(hs, ys, Ws, bs)
    for r in range(3):
        jax.tree_util.tree_map(lambda a, e: assert_close(a[r], np.asarray(e, np.float64), rtol=1e-5),
                               batched, f(hs[r], ys[r], Ws[r], bs[r]))


def test_bad_options_raise():
    h, y, C, W, _ = data(dict(seed=25))
    cases = [
        (lambda: metrics.nc1(h, y, C, global_mean="median"), "global_mean must be one of"),
        (lambda: metrics.nc2(h, y, C, ddof=-1), "ddof must be"),
        (lambda: metrics.nc2(h, y, C, ddof=1.5), "ddof must be"),
        (lambda: metrics.nc3(h, y, C, W, global_mean="weighted"), "global_mean must be one of"),
        (lambda: metrics.nc4(h, y, C, h @ W.T, average="macro"), "average must be one of"),
        (lambda: metrics.nc1(np.where(h > 3, np.nan, h), y, C, global_mean="sample"), "non-finite"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


# ----------------------------------------------------------------------------------------------
# The peer table: each peer's formula in float64, against the nc-jax call
# ----------------------------------------------------------------------------------------------


def _stats(h, y, C):
    h = np.asarray(h, np.float64)
    mu = ref.means(h, y, C)
    R = h - mu[y]
    return h, mu, R.T @ R / len(y), np.array([np.mean(np.sum((h[y == c] - mu[c]) ** 2, 1)) for c in range(C)])


def _upper_mean(grid):
    return grid[np.triu_indices(grid.shape[0], k=1)].mean()


def _structure_error(A, B):
    K = A.shape[0]
    s = B @ A.T
    s = s / np.linalg.norm(s)
    s = s + 1 / K / np.sqrt(K - 1)
    s[np.diag_indices(K)] -= 1 / np.sqrt(K - 1)
    return np.linalg.norm(s)


@pytest.mark.parametrize("kw", DATASETS)
def test_rhubarbwu_neural_collapse(kw):
    h, y, C, W, b = data(kw)
    h64, mu, V_intra, V_norms = _stats(h, y, C)
    W64 = np.asarray(W, np.float64)
    mG = mu.mean(axis=0)  # MeanAccumulator.compute(): unweighted mean of the class means
    Mc = mu - mG
    V_inter = Mc.T @ Mc / C
    # covariance_ratio: "pinv", "svd" (top K-1 of V_inter), "quotient"
    pinv = np.linalg.pinv(V_inter, rcond=1e-10, hermitian=True)
    assert_close(metrics.nc1(h, y, C), np.trace(pinv @ V_intra) / C, what="pinv")
    U, s, _ = np.linalg.svd(V_inter)
    k = min(C - 1, h.shape[1])
    assert_close(metrics.nc1(h, y, C), np.trace(V_intra @ (U[:, :k] / s[:k]) @ U[:, :k].T) / C, what="svd")
    assert_close(metrics.nc1_quotient(h, y, C), np.trace(V_intra) / np.trace(V_inter), what="quotient")
    # variability_cdnv(V_norms, M, dist_exp)
    for dist_exp in (1.0, 2.0):
        with np.errstate(divide="ignore", invalid="ignore"):  # the diagonal, which is not used
            grid = np.array([[(V_norms[i] + V_norms[j]) / 2 / np.sum((mu[i] - mu[j]) ** 2) ** dist_exp
                              for j in range(C)] for i in range(C)])
        assert_close(metrics.cdnv(h, y, C, power=2 * dist_exp), _upper_mean(grid), what=f"cdnv {dist_exp}")
    # mean_norms, simplex_etf_error, self_duality_error, similarities
    assert_close(metrics.class_distances(h, y, C), np.linalg.norm(Mc, axis=-1))
    assert_close(metrics.etf_error(h, y, C)["etf_error"], _structure_error(Mc, Mc))
    assert_close(metrics.self_duality_error(h, y, C, W), _structure_error(Mc, W64))
    assert_close(metrics.nc3_dot_var(h, y, C, W, normalized=False), np.var((W64 * Mc).sum(1), ddof=1))
    cos = (W64 * Mc).sum(1) / (np.linalg.norm(W64, axis=1) * np.linalg.norm(Mc, axis=1))
    assert_close(metrics.nc3(h, y, C, W, center_cos=True)["cos"], cos)
    # kernel_stats(M, mG, kernel): mean and variance over the folded upper triangle
    Un = Mc / (np.linalg.norm(Mc, axis=-1, keepdims=True) + EPS)
    dist = np.linalg.norm(Un[:, None] - Un[None], axis=-1)
    with np.errstate(divide="ignore"):
        kernels = {"distance": dist, "log": np.log(dist ** -1.0),
                   "riesz": np.sign(h.shape[1] - 2) * dist ** (-(h.shape[1] - 2.0))}
    for name, grid in kernels.items():
        avg = _upper_mean(grid)
        var = _upper_mean((grid - avg) ** 2)
        out = metrics.uniformity(h, y, C, kernel=name)
        assert_close(out["mean"], avg, rtol=2e-4, what=name)
        assert_close(out["var"], var, rtol=2e-4, atol=1e-6, what=name)
    # equiangularity as a ddof=0 variance of the pairwise cosines (inner-product kernel)
    assert_close(np.asarray(metrics.nc2(h, y, C, ddof=0)["equiangular"], np.float64) ** 2, _upper_mean(
        (Un @ Un.T - _upper_mean(Un @ Un.T)) ** 2), rtol=2e-4)
    # clf_ncc_agreement: DecAccumulator (no bias; NCC on the uncentred means), weighted or not
    y_lin = np.argmax(h64 @ W64.T, axis=1)
    dists = (h64**2).sum(1)[:, None] + (mu**2).sum(1)[None] - 2 * h64 @ mu.T
    hits = np.bincount(y, weights=(y_lin == np.argmin(dists, axis=1)), minlength=C)
    ns = np.bincount(y, minlength=C)
    assert_close(metrics.ncc_agreement(h, y, C, W), ns @ (hits / ns) / ns.sum())
    assert_close(metrics.ncc_agreement(h, y, C, W, average="class"), np.mean(hits / ns))
    # orthogonality_deviation(M, m_G_ood): uncentred ID means, OOD mean of balanced OOD labels
    rng = np.random.default_rng(kw["seed"])
    h_ood = (rng.normal(size=(10 * C, h.shape[1])) + 0.3).astype(np.float32)
    y_ood = np.arange(10 * C) % C
    mG_ood = ref.means(h_ood, y_ood, C).mean(axis=0)
    dev = np.abs(mu @ mG_ood) / (np.linalg.norm(mu, axis=1) * np.linalg.norm(mG_ood))
    assert_close(metrics.nc5(h, y, C, h_ood), dev.mean())


@pytest.mark.parametrize("kw", DATASETS)
def test_tding1_validate_nc(kw):
    h, y, C, W, _ = data(kw)
    h64, mu, Sigma_W, _ = _stats(h, y, C)
    mu_G = h64.sum(axis=0) / len(y)  # compute_info: the sample mean
    Sigma_B = sum(np.outer(m - mu_G, m - mu_G) for m in mu) / C
    d = h.shape[1]
    # scipy.linalg.pinv's default cutoff: max(M, N) * eps * largest singular value
    collapse_metric = np.trace(Sigma_W @ np.linalg.pinv(Sigma_B, rcond=d * EPS, hermitian=True)) / C
    assert_close(metrics.nc1(h, y, C, global_mean="sample"), collapse_metric, rtol=2e-4)
    M = (mu - mu_G).T  # (d, K) columns
    WH = np.asarray(W, np.float64) @ M
    sub = (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)
    assert_close(metrics.self_duality_error(h, y, C, W, global_mean="sample"),
                 np.linalg.norm(WH / np.linalg.norm(WH) - sub))


@pytest.mark.parametrize("kw", DATASETS)
def test_papyan_han_donoho_notebook(kw):
    h, y, C, W, b = data(kw)
    h64, mu, Sw, _ = _stats(h, y, C)
    W64 = np.asarray(W, np.float64)
    M_ = (mu - mu.mean(axis=0)).T  # (d, C), muG the mean of the class means
    Sb = M_ @ M_.T / C
    U, s, _ = np.linalg.svd(Sb)
    k = min(C - 1, h.shape[1])
    inv_Sb = U[:, :k] @ np.diag(s[:k] ** -1) @ U[:, :k].T  # svds(Sb, k=C-1)
    assert_close(metrics.nc1(h, y, C, per_class=False), np.trace(Sw @ inv_Sb), what="Sw_invSb")
    M_norms, W_norms = np.linalg.norm(M_, axis=0), np.linalg.norm(W64.T, axis=0)
    out = metrics.nc2(h, y, C, W)
    assert_close(out["equinorm"], np.std(M_norms, ddof=1) / np.mean(M_norms), what="norm_M_CoV")
    assert_close(out["equinorm_weights"], np.std(W_norms, ddof=1) / np.mean(W_norms), what="norm_W_CoV")

    def coherence(V):
        G = V.T @ V + np.ones((C, C)) / (C - 1)
        G -= np.diag(np.diag(G))
        return np.abs(G).sum() / (C * (C - 1))  # torch.norm(G, 1): entry-wise

    assert_close(out["maxangle"], coherence(M_ / M_norms), what="cos_M")
    assert_close(out["maxangle_weights"], coherence(W64.T / W_norms), what="cos_W")
    dist = np.linalg.norm(W64.T / np.linalg.norm(W64.T) - M_ / np.linalg.norm(M_)) ** 2
    assert_close(metrics.nc3(h, y, C, W)["nc3"], dist, what="W_M_dist")
    outputs = h64 @ W64.T + b  # the network's outputs include the classifier's bias
    ncc = np.argmin(np.linalg.norm(h64[:, None] - mu[None], axis=-1), axis=1)
    mismatch = 1 - np.sum(np.argmax(outputs, axis=1) == ncc) / len(y)
    assert_close(metrics.nc4(h, y, C, (h @ W.T + b).astype(np.float32)), mismatch, what="NCC_mismatch")
    assert_close(1 - metrics.ncc_agreement(h, y, C, W, b), mismatch, what="NCC_mismatch (W, b)")
