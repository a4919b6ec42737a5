"""The measures of nc_jax/metrics/_more_api.py against float64 NumPy definitions written from the
papers' formulas (tests/metrics/more_refs.py), closed forms at a simplex ETF, exact rescaling,
jit / vmap, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import metrics
from tests.metrics import more_refs as ref
from tests.metrics.test_metrics import assert_close, make_data, simplex_etf

DATASETS = [
    pytest.param(dict(seed=0), id="balanced"),
    pytest.param(dict(seed=1, imbalanced=True), id="imbalanced"),
    pytest.param(dict(seed=2, imbalanced=True, N=200, d=4, C=10), id="d<C"),
]


def data(kw):
    h, y, W, _ = make_data(**{"spread": 1.5, **kw})
    C = kw.get("C", 6)
    rng = np.random.default_rng(kw["seed"] + 100)
    b = rng.normal(size=C).astype(np.float32)
    h_ood = (rng.normal(size=(50, h.shape[1])) + 0.5).astype(np.float32)
    return h, y, C, W, b, h_ood


@pytest.mark.parametrize("kw", DATASETS)
def test_scalar_measures_against_float64(kw):
    h, y, C, W, b, _ = data(kw)
    assert_close(metrics.nc1_quotient(h, y, C), ref.nc1_quotient(h, y, C))
    e = metrics.etf_error(h, y, C, W)
    assert set(e) == {"etf_error", "etf_error_weights"}
    assert_close(e["etf_error"], ref.etf_error(h, y, C))
    assert_close(e["etf_error_weights"], ref.etf_error_weights(W))
    assert set(metrics.etf_error(h, y, C)) == {"etf_error"}
    assert_close(metrics.self_duality_error(h, y, C, W), ref.self_duality_error(h, y, C, W))
    assert_close(metrics.bias_collapse(h, y, C, W, b), ref.bias_collapse(h, y, C, W, b))
    assert_close(metrics.class_distances(h, y, C), ref.class_distances(h, y, C))
    for center in (True, False):
        for normalized in (True, False):
            assert_close(metrics.nc3_dot_var(h, y, C, W, center=center, normalized=normalized),
                         ref.nc3_dot_var(h, y, C, W, center, normalized), what=f"{center} {normalized}")
    assert_close(metrics.nc3_dot_var(h, y, C, W, ddof=0), ref.nc3_dot_var(h, y, C, W, ddof=0))


@pytest.mark.parametrize("kw", DATASETS)
def test_uniformity_kernels_against_float64(kw):
    h, y, C, _, _, _ = data(kw)
    for kernel, s in (("log", None), ("distance", None), ("riesz", None), ("riesz", 1.5), ("riesz", -1.0)):
        out = metrics.uniformity(h, y, C, kernel=kernel, s=s)
        expect = ref.uniformity(h, y, C, kernel, s)
        for k in ("mean", "var"):
            assert_close(out[k], expect[k], rtol=2e-4, atol=1e-6, what=f"{kernel} {s} {k}")


@pytest.mark.parametrize("kw", DATASETS)
def test_agreement_cdnv_power_and_nc5_against_float64(kw):
    h, y, C, W, b, h_ood = data(kw)
    for bias in (None, b):
        for average in ("sample", "class"):
            assert_close(metrics.ncc_agreement(h, y, C, W, bias, average=average),
                         ref.ncc_agreement(h, y, C, W, bias, average), what=f"{bias is None} {average}")
    for power in (1, 2.0, 3.5, 4):
        assert_close(metrics.cdnv(h, y, C, power=power), ref.cdnv(h, y, C, power), what=str(power))
    for per_sample in (False, True):
        assert_close(metrics.nc5(h, y, C, h_ood, per_sample=per_sample), ref.nc5(h, y, C, h_ood, per_sample))


def test_imbalanced_class_average_differs_from_sample_average():
    # one class of 3 samples entirely misassigned by the linear head: the class average sees it
    h, y, C, W, _, _ = data(dict(seed=1, imbalanced=True))
    counts = np.bincount(y, minlength=C)
    small = int(np.argmin(counts))
    W = W.copy()
    W[small] = -10 * np.abs(W).max()  # class `small` is never predicted by the head
    by_class = float(metrics.ncc_agreement(h, y, C, W, average="class"))
    assert_close(by_class, ref.ncc_agreement(h, y, C, W, average="class"))
    assert abs(by_class - float(metrics.ncc_agreement(h, y, C, W))) > 1e-3


def test_report_keys_and_bias():
    h, y, C, W, b, _ = data(dict(seed=3, imbalanced=True))
    logits = h @ W.T + b
    out = metrics.collapse_report(h, y, C, W=W, logits=logits, b=b)
    assert set(out) == set(metrics.REPORT_KEYS + metrics.WEIGHT_KEYS + metrics.LOGIT_KEYS + metrics.BIAS_KEYS)
    assert_close(out["bias_collapse"], ref.bias_collapse(h, y, C, W, b))
    for k, v in ref.report_extra(h, y, C, W).items():
        assert_close(out[k], v, what=k)
    assert "bias_collapse" not in metrics.collapse_report(h, y, C, W=W)
    # the existing keys do not depend on b
    plain = metrics.collapse_report(h, y, C, W=W, logits=logits)
    for k in plain:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(plain[k]), err_msg=k)


@pytest.mark.parametrize("C", [3, 7])
def test_simplex_etf_closed_forms(C):
    d = 16
    E = simplex_etf(C, d, seed=C)  # rows: norm 3, pairwise cos -1/(C-1), sum 0
    y = np.repeat(np.arange(C), 4).astype(np.int32)
    offset = np.linspace(-1, 1, d)
    h = (E[y] + offset).astype(np.float32)  # mu_G = offset
    W = (0.5 * E).astype(np.float32)
    b = (-W.astype(np.float64) @ offset).astype(np.float32)
    atol = 3e-6
    e = metrics.etf_error(h, y, C, W)
    assert_close(e["etf_error"], 0.0, rtol=0, atol=atol)
    assert_close(e["etf_error_weights"], 0.0, rtol=0, atol=atol)
    assert_close(metrics.self_duality_error(h, y, C, W), 0.0, rtol=0, atol=atol)
    assert_close(metrics.nc1_quotient(h, y, C), 0.0, rtol=0, atol=atol)
    assert_close(metrics.nc3_dot_var(h, y, C, W), 0.0, rtol=0, atol=atol)
    assert_close(metrics.bias_collapse(h, y, C, W, b), 0.0, rtol=0, atol=1e-5)
    assert_close(metrics.class_distances(h, y, C), np.full(C, 3.0), rtol=1e-6)
    u = metrics.uniformity(h, y, C)
    r = np.sqrt(2 * C / (C - 1))  # distance of two unit vectors with cos -1/(C-1)
    assert_close(u["mean"], np.log(1 / r), rtol=1e-5)
    assert_close(u["var"], 0.0, rtol=0, atol=atol)
    assert_close(metrics.ncc_agreement(h, y, C, W, b, average="class"), 1.0, rtol=0)
    # OOD features whose mean is orthogonal to every class mean: NC5 = 0
    v = np.random.default_rng(C).normal(size=d)
    v -= E.T @ np.linalg.lstsq(E.T, v, rcond=None)[0]
    ood = np.stack([v + 0.1, v - 0.1]).astype(np.float32)
    assert_close(metrics.nc5(E[y].astype(np.float32), y, C, ood), 0.0, rtol=0, atol=atol)


def test_zero_features_give_documented_values():
    y = np.arange(12).astype(np.int32) % 4
    h = np.zeros((12, 5), np.float32)
    W = np.ones((4, 5), np.float32)
    out = metrics.collapse_report(h, y, 4, W=W)
    assert float(out["nc1_quotient"]) == 0.0
    assert_close(out["etf_error"], 1.0, rtol=1e-6)  # zero Gram: distance to the unit-norm ETF
    assert float(out["uniformity_log_mean"]) == np.inf and float(out["uniformity_log_var"]) == np.inf
    assert not any(np.isnan(float(v)) for v in out.values())


@pytest.mark.parametrize("k", [-100, 70])
def test_exact_rescaling(k):
    h, y, C, W, b, h_ood = data(dict(seed=4, imbalanced=True))
    s = np.float32(2.0**k)
    for f in (lambda h, W: metrics.nc1_quotient(h, y, C), lambda h, W: metrics.etf_error(h, y, C, W),
              lambda h, W: metrics.self_duality_error(h, y, C, W), lambda h, W: metrics.nc3_dot_var(h, y, C, W),
              lambda h, W: metrics.uniformity(h, y, C), lambda h, W: metrics.ncc_agreement(h, y, C, W),
              lambda h, W: metrics.nc5(h, y, C, h_ood * s)):
        jax.tree_util.tree_map(np.testing.assert_array_equal, f(h * s, W / s), f(h, W))
    # scale-equivariant ones, exactly
    np.testing.assert_array_equal(np.asarray(metrics.class_distances(h * s, y, C), np.float64),
                                  np.asarray(metrics.class_distances(h, y, C), np.float64) * 2.0**k)
    # CDNV with ||.||^3: variances scale with s^2, the denominator with s^3
    assert_close(metrics.cdnv(h * s, y, C, power=3), float(metrics.cdnv(h, y, C, power=3)) * 2.0 ** (-k),
                 rtol=1e-6)
    raw = lambda h, W: np.asarray(metrics.nc3_dot_var(h, y, C, W, normalized=False), np.float64)
    np.testing.assert_array_equal(raw(h * s, W / s), raw(h, W))  # the products are unchanged
    np.testing.assert_array_equal(raw(h * np.float32(8), W), raw(h, W) * 64)
    # bias collapse is in units of the logits: h, W and b scaled consistently
    small = 2.0 ** (k // 4)
    assert_close(metrics.bias_collapse(h * np.float32(small), y, C, W * np.float32(small), b * np.float32(small**2)),
                 float(metrics.bias_collapse(h, y, C, W, b)) * small**2, rtol=1e-6)


def _runs(R=3):
    parts = [data(dict(seed=10 + r, imbalanced=True)) for r in range(R)]
    return [np.stack([p[i] for p in parts]) for i in (0, 1, 3, 4, 5)], parts[0][2]


MEASURES = {
    "nc1_quotient": lambda h, y, W, b, o, C: metrics.nc1_quotient(h, y, C),
    "etf_error": lambda h, y, W, b, o, C: metrics.etf_error(h, y, C, W),
    "self_duality_error": lambda h, y, W, b, o, C: metrics.self_duality_error(h, y, C, W, global_mean="sample"),
    "nc3_dot_var": lambda h, y, W, b, o, C: metrics.nc3_dot_var(h, y, C, W, normalized=False),
    "bias_collapse": lambda h, y, W, b, o, C: metrics.bias_collapse(h, y, C, W, b),
    "class_distances": lambda h, y, W, b, o, C: metrics.class_distances(h, y, C),
    "uniformity": lambda h, y, W, b, o, C: metrics.uniformity(h, y, C, kernel="riesz", s=2),
    "ncc_agreement": lambda h, y, W, b, o, C: metrics.ncc_agreement(h, y, C, W, b, average="class"),
    "cdnv": lambda h, y, W, b, o, C: metrics.cdnv(h, y, C, power=4),
    "nc5": lambda h, y, W, b, o, C: metrics.nc5(h, y, C, o, per_sample=True),
    "report": lambda h, y, W, b, o, C: metrics.collapse_report(h, y, C, W=W, b=b),
}


@pytest.mark.parametrize("name", list(MEASURES))
def test_jit_and_vmap_over_runs_equal_eager(name):
    (hs, ys, Ws, bs, oods), C = _runs()
    f = MEASURES[name]
    batched = jax.jit(jax.vmap(lambda h, y, W, b, o: f(h, y, W, b, o, C)))(hs, ys, Ws, bs, oods)
    for r in range(len(hs)):
        eager = f(hs[r], ys[r], Ws[r], bs[r], oods[r], C)
        jax.tree_util.tree_map(lambda a, e: assert_close(a[r], np.asarray(e, np.float64), rtol=1e-5, what=name),
                               batched, eager)


def test_bad_input_raises():
    h, y, C, W, b, h_ood = data(dict(seed=5))
    nan_h = h.copy()
    nan_h[3, 2] = np.nan
    cases = [
        (lambda: metrics.bias_collapse(h, y, C, W, b[:-1]), "b shape"),
        (lambda: metrics.bias_collapse(h, y, C, W, b[None, :]), "b shape"),
        (lambda: metrics.bias_collapse(h, y, C, W, np.full_like(b, np.nan)), "non-finite"),
        (lambda: metrics.ncc_agreement(h, y, C, W, b[:3]), "b shape"),
        (lambda: metrics.collapse_report(h, y, C, W=W, b=b[:3]), "b shape"),
        (lambda: metrics.collapse_report(h, y, C, b=b), "needs the classifier weights"),
        (lambda: metrics.nc1_quotient(nan_h, y, C), "non-finite"),
        (lambda: metrics.etf_error(h, y, C, W.T), "W shape"),
        (lambda: metrics.self_duality_error(h, y, C, None), "needs the classifier weights"),
        (lambda: metrics.nc3_dot_var(h, y, C, np.where(W > 0, np.nan, W)), "non-finite"),
        (lambda: metrics.nc5(h, y, C, h_ood[:, :3]), "h_ood has d=3"),
        (lambda: metrics.nc5(h, y, C, np.full_like(h_ood, np.nan)), "non-finite"),
        (lambda: metrics.uniformity(h, y, C, kernel="gauss"), "kernel must be one of"),
        (lambda: metrics.uniformity(h, y, C, kernel="riesz", s=np.nan), "s must be"),
        (lambda: metrics.ncc_agreement(h, y, C, W, average="median"), "average must be one of"),
        (lambda: metrics.class_distances(h, y, C, global_mean="median"), "global_mean must be one of"),
        (lambda: metrics.cdnv(h, y, C, power=0), "power must be"),
        (lambda: metrics.cdnv(h, y, C, power="4"), "power must be"),
        (lambda: metrics.nc3_dot_var(h, y, C, W, ddof=-1), "ddof must be"),
        (lambda: metrics.class_distances(h, y[:-1], C), "shape mismatch"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


def test_dtype_and_shapes():
    h, y, C, W, b, h_ood = data(dict(seed=6))
    assert metrics.class_distances(h, y, C).shape == (C,)
    for v in (metrics.nc1_quotient(h, y, C), metrics.bias_collapse(h, y, C, W, b), metrics.nc5(h, y, C, h_ood)):
        assert v.shape == () and v.dtype == jnp.float32
