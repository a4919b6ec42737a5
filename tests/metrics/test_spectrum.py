"""`metrics.class_mean_spectrum` against a float64 NumPy SVD, closed forms (simplex ETF, means on
one line), scale invariance, jit / vmap, and bad input."""

import jax
import numpy as np
import pytest

from nc_jax import metrics
from tests.metrics.test_metrics import assert_close, make_data, simplex_etf


def _ref(h, y, C, center=True, global_mean="class"):
    """float64: singular values of the (centred) class means over the largest, entropy rank."""
    h = np.asarray(h, np.float64)
    mu = np.array([h[y == c].mean(0) for c in range(C)])
    counts = np.bincount(y, minlength=C)
    g = mu.mean(0) if global_mean == "class" else (counts @ mu) / counts.sum()
    A = mu - g if center else mu
    s = np.linalg.svd(A, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return np.pad(s / s[0], (0, C - len(s))), np.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize("kw", [dict(seed=0), dict(seed=1, imbalanced=True),
                                dict(seed=2, imbalanced=True, N=200, d=4, C=10)],
                         ids=["balanced", "imbalanced", "d<C"])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("global_mean", ["class", "sample"])
def test_against_float64(kw, center, global_mean):
    h, y, _, _ = make_data(**kw)
    C = kw.get("C", 6)
    out = metrics.class_mean_spectrum(h, y, C, center=center, global_mean=global_mean)
    s, er = _ref(h, y, C, center, global_mean)
    assert out["spectrum"].shape == (C,)
    assert_close(out["spectrum"], s, rtol=1e-5, atol=1e-6)
    assert_close(out["effective_rank"], er, rtol=1e-5)


@pytest.mark.parametrize("C", [3, 10])
def test_simplex_etf_and_a_line_in_closed_form(C):
    rng = np.random.default_rng(C)
    M = simplex_etf(C, 2 * C, seed=C)
    y = np.repeat(np.arange(C), 4)
    # a small symmetric spread around each mean leaves the means exact
    noise = rng.normal(size=(2, 2 * C)) * 1e-2
    h = (M[y] + np.tile(np.concatenate([noise, -noise]), (C, 1)) + 5.0).astype(np.float32)
    out = metrics.class_mean_spectrum(h, y, C)
    assert_close(out["spectrum"], np.r_[np.ones(C - 1), 0.0], atol=1e-5)
    assert_close(out["effective_rank"], C - 1, rtol=1e-5)
    # the raw means carry the common offset 5 * (1, ..., 1): C directions, not C - 1
    assert float(metrics.class_mean_spectrum(h, y, C, center=False)["spectrum"][-1]) > 1e-2
    # centred means on one line: rank 1
    t = np.arange(C) - (C - 1) / 2
    line = (t[y, None] * rng.normal(size=(1, 7))).astype(np.float32)
    out = metrics.class_mean_spectrum(line, y, C)
    assert_close(out["spectrum"], np.r_[1.0, np.zeros(C - 1)], atol=1e-6)
    assert_close(out["effective_rank"], 1.0, rtol=1e-5)


def test_invariant_to_scale_and_zero_features():
    h, y, _, _ = make_data(seed=3)
    base = metrics.class_mean_spectrum(h, y, 6)
    for s in (2.0 ** -40, 3.7, 2.0 ** 50):
        out = metrics.class_mean_spectrum(h * np.float32(s), y, 6)
        assert_close(out["spectrum"], np.asarray(base["spectrum"], np.float64), rtol=1e-5, atol=1e-6)
        assert_close(out["effective_rank"], float(base["effective_rank"]), rtol=1e-5)
    zero = metrics.class_mean_spectrum(np.zeros_like(h), y, 6)
    assert_close(zero["spectrum"], np.zeros(6)) and assert_close(zero["effective_rank"], 0.0)


def test_jit_and_vmap_over_runs_equal_eager():
    data = [make_data(seed=s) for s in (4, 5)]
    hs, ys = np.stack([d[0] for d in data]), np.stack([d[1] for d in data])
    f = jax.jit(jax.vmap(lambda h, y: metrics.class_mean_spectrum(h, y, 6)))
    out = f(hs, ys)
    for r in range(2):
        s, er = _ref(hs[r], ys[r], 6)
        assert_close(out["spectrum"][r], s, rtol=1e-5, atol=1e-6)
        assert_close(out["effective_rank"][r], er, rtol=1e-5)


def test_bad_input_raises():
    h, y, _, _ = make_data(seed=6)
    with pytest.raises(ValueError, match="global_mean must be one of"):
        metrics.class_mean_spectrum(h, y, 6, global_mean="median")
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.class_mean_spectrum(h, y[:-1], 6)
    with pytest.raises(ValueError, match="class 5"):
        metrics.class_mean_spectrum(h[y != 5], y[y != 5], 6)
