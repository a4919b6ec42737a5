"""Scale robustness of nc_jax.metrics and the exact power-of-two helpers of
nc_jax.metrics._scale behind it.

Every NC measure is invariant to rescaling h (and, separately, W and logits). Multiplying by 2^k
is exact in floating point, so the measures at s = 2^k must equal those at s = 1 exactly whenever
the scaled input itself is exact, and to float rounding otherwise. The helpers are checked against
NumPy's float64 ldexp / log2. The data sets and float64 references are those of test_metrics.py
(same shapes, so the jitted programs compiled there are reused when both files run together).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.metrics import _scale as _metric_scale
from nc_jax import metrics
from tests.metrics.test_metrics import assert_close, make_data, ref_cosine_matrix, ref_report

KEYS = metrics.REPORT_KEYS + metrics.WEIGHT_KEYS + metrics.LOGIT_KEYS
TINY = np.finfo(np.float32).tiny  # smallest normal float32, 2^-126
F32MAX = np.finfo(np.float32).max


def as_np(rep):
    return {k: np.asarray(v, np.float64) for k, v in rep.items()}


def scaled(x, k):
    """x * 2^k rounded to float32 in NumPy (no flush-to-zero: subnormals are kept)."""
    return (np.asarray(x, np.float64) * 2.0**k).astype(np.float32)


def is_exact(x, k):
    return np.array_equal(scaled(x, k).astype(np.float64), np.asarray(x, np.float64) * 2.0**k)


@pytest.fixture(scope="module")
def data():
    h, y, W, logits = make_data(8, imbalanced=True, spread=2.0)
    return h, y, W, logits, as_np(metrics.collapse_report(h, y, 6, W=W, logits=logits))


# ----------------------------------------------------------------------------------------------
# The helpers against NumPy float64
# ----------------------------------------------------------------------------------------------


def _all_kinds_of_float32(n, seed=0):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    special = [0.0, -0.0, 1e-45, -1e-45, 1e-39, TINY, -TINY, F32MAX, -F32MAX, 1.0, np.inf, -np.inf, np.nan]
    return np.concatenate([x[np.isfinite(x)], np.float32(special)])  # ~1/256 of the bits are subnormal


def test_ldexp_is_exact_over_all_float32():
    x = _all_kinds_of_float32(20000)
    f = jax.jit(_metric_scale.ldexp)
    for k in [-400, -277, -253, -200, -149, -127, -126, -60, -1, 0, 1, 23, 126, 127, 149, 200, 277, 400]:
        got = np.asarray(f(jnp.asarray(x), k), np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            ref = np.ldexp(x.astype(np.float64), k)
            # Documented: below the normal range -> 0 (XLA's flush-to-zero); beyond max -> inf.
            ref = np.where(np.abs(ref) < TINY, 0.0, ref)
            ref = np.where(np.abs(ref) > F32MAX, np.sign(ref) * np.inf, ref)
        ok = (got == ref) | (np.isnan(got) & np.isnan(ref))
        assert ok.all(), (k, x[~ok][:5], got[~ok][:5], ref[~ok][:5])


def test_max_exponent_including_subnormals_and_zero():
    f = jax.jit(_metric_scale.max_exponent)
    for v in [1e-45, 3e-45, 1e-40, 1.1e-38, TINY, 0.75, 1.0, 1.5, 2.0, 3e20, F32MAX]:
        a = np.float32([v / 3, -v, 0.0])  # the max is the negative entry's magnitude
        assert int(f(jnp.asarray(a))) == int(np.floor(np.log2(np.float64(np.float32(v))))), v
    assert int(f(jnp.zeros((3, 2)))) == _metric_scale.EMPTY_EXP
    per_row = jax.jit(jax.vmap(_metric_scale.max_exponent))(jnp.asarray(np.float32([[1e-40, 3.0], [5e30, -1.0], [0, 0]])))
    np.testing.assert_array_equal(per_row, [1, 101, _metric_scale.EMPTY_EXP])  # 2^101 <= 5e30 < 2^102


def test_row_exponents_match_numpy_log2():
    x = _all_kinds_of_float32(30000, seed=1)
    x = x[np.isfinite(x)]
    X = x[: len(x) // 6 * 6].reshape(-1, 6).copy()
    rng = np.random.default_rng(2)
    X[::7] = 0.0
    X[1::5] = np.float32(1e-45) * rng.integers(0, 300, X[1::5].shape)  # subnormal rows, some < 2^-141
    got = np.asarray(jax.jit(_metric_scale.row_exponents)(jnp.asarray(X)))
    m = np.abs(X.astype(np.float64)).max(axis=1)
    with np.errstate(divide="ignore"):
        ref = np.where(m > 0, np.floor(np.log2(m)), _metric_scale.EMPTY_EXP)
    assert got.shape == (len(X), 1)
    np.testing.assert_array_equal(got[:, 0], ref)


def test_normalize_and_float64():
    x = np.float32([[1e-41, -3e-42], [2e-40, 0.0]])  # all subnormal
    xs, e = jax.jit(_metric_scale.normalize)(jnp.asarray(x))
    assert 1.0 <= float(jnp.max(jnp.abs(xs))) < 2.0
    np.testing.assert_array_equal(np.asarray(xs, np.float64), np.ldexp(x.astype(np.float64), -int(e)))
    with jax.enable_x64(True):
        x64 = np.array([[1e-310, -2e-300], [3e300, 0.0]])
        xs, e = jax.jit(_metric_scale.normalize)(jnp.asarray(x64))
        assert xs.dtype == jnp.float64 and int(e) == int(np.floor(np.log2(3e300)))
        ref = np.ldexp(x64, -int(e))
        np.testing.assert_array_equal(np.asarray(xs), np.where(np.abs(ref) < np.finfo(np.float64).tiny, 0.0, ref))


# ----------------------------------------------------------------------------------------------
# collapse_report at any scale
# ----------------------------------------------------------------------------------------------

POW2 = np.arange(-120, 121)


def test_report_equal_at_power_of_two_scales_under_jit_and_vmap(data):
    h, y, W, logits, base = data
    # h by 2^k, W by 2^-k, logits by 2^(k//2): each has its own scale.
    hs = np.stack([scaled(h, k) for k in POW2])
    Ws = np.stack([scaled(W, -k) for k in POW2])
    ls = np.stack([scaled(logits, k // 2) for k in POW2])
    f = jax.jit(jax.vmap(lambda h, W, lg: metrics.collapse_report(h, y, 6, W=W, logits=lg)))
    out = as_np(f(hs, Ws, ls))
    exact = [i for i, k in enumerate(POW2) if is_exact(h, k) and is_exact(W, -k) and is_exact(logits, k // 2)]
    assert len(exact) > 200
    for key in KEYS:
        # the batched program may round differently from the unbatched base, but the same for all k
        assert_close(out[key], np.full(len(POW2), base[key]), rtol=1e-6, atol=1e-7, what=key)
        assert np.all(out[key][exact] == out[key][exact[0]]), key
    # Eager (validated inputs, jitted program): bit-identical where the scaled inputs are exact.
    for k in POW2[::12]:
        rep = as_np(metrics.collapse_report(scaled(h, k), y, 6, W=scaled(W, -k), logits=scaled(logits, k // 2)))
        exact = is_exact(h, k) and is_exact(W, -k) and is_exact(logits, k // 2)
        for key in KEYS:
            if exact:
                assert rep[key] == base[key], (k, key)
            else:  # some entries were rounded into the subnormal range by the scaling itself
                assert_close(rep[key], base[key], rtol=1e-6, atol=1e-7, what=f"{k} {key}")


@pytest.mark.parametrize("s", [1e-30, 1e-20, 1e19, 1e30, 3e36])
def test_report_at_non_power_of_two_scales(data, s):
    h, y, W, logits, base = data
    s64 = np.float64(s)
    # not exact: s h is rounded to float32, so agreement is to float rounding
    rep = as_np(metrics.collapse_report((h * s64).astype(np.float32), y, 6,
                                        W=(W / s64).astype(np.float32), logits=(logits * s64).astype(np.float32)))
    for key in KEYS:
        assert_close(rep[key], base[key], rtol=1e-5, atol=1e-7, what=key)


def test_report_at_the_ends_of_the_float32_range(data):
    h, y, W, logits, base = data
    e = int(np.floor(np.log2(np.abs(h).max())))
    top = scaled(h, 127 - e)  # max|h| in [2^127, 2^128): the largest binade of float32
    assert np.isfinite(top).all() and np.abs(top).max() > 1e38
    rep = as_np(metrics.collapse_report(top, y, 6, W=scaled(W, 127 - e), logits=logits))
    assert all(rep[k] == base[k] for k in KEYS), {k: (rep[k], base[k]) for k in KEYS if rep[k] != base[k]}
    # Every entry subnormal (max|h| ~ 2^-130): the input itself keeps only ~19 bits, so the
    # reference is the float64 definition on exactly these numbers, and the result must equal the
    # report of the same numbers brought into the normal range (an exact power of two).
    sub = scaled(h, -130 - e)
    assert np.abs(sub).max() < TINY
    rep = as_np(metrics.collapse_report(sub, y, 6, W=W, logits=logits))
    normal = as_np(metrics.collapse_report(scaled(sub, 130 + e), y, 6, W=W, logits=logits))
    assert all(rep[k] == normal[k] for k in KEYS)
    ref = ref_report(sub.astype(np.float64) * 2.0**130, y, 6, W, logits)
    for key in KEYS:
        assert_close(rep[key], ref[key], what=key)


def _same(a, b, exact, what, rtol=1e-6):
    if exact:
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        assert_close(a, b, rtol=rtol, atol=1e-7, what=what)


def test_individual_functions_at_extreme_scales(data):
    h, y, W, logits, _ = data
    funcs = {
        "nc1": lambda h, W, lg: metrics.nc1(h, y, 6),
        "nc2": lambda h, W, lg: metrics.nc2(h, y, 6, W=W),
        "nc3": lambda h, W, lg: metrics.nc3(h, y, 6, W),
        "nc4": lambda h, W, lg: metrics.nc4(h, y, 6, lg),
        "cdnv": lambda h, W, lg: metrics.cdnv(h, y, 6),
        "ncc_predict": lambda h, W, lg: metrics.ncc_predict(h, y, 6),
        "ncc_accuracy": lambda h, W, lg: metrics.ncc_accuracy(h, y, 6),
        "cos": lambda h, W, lg: metrics.cosine_similarity_matrix(h, y, 6),
        "cos_centered": lambda h, W, lg: metrics.cosine_similarity_matrix(h, y, 6, center=True),
    }
    for name, f in funcs.items():
        base = jax.tree_util.tree_map(np.asarray, f(h, W, logits))
        for k in (-120, 120):
            out = jax.tree_util.tree_map(np.asarray, f(scaled(h, k), scaled(W, -k), scaled(logits, k)))
            # exact unless entries were rounded into the subnormal range by the scaling itself
            exact = is_exact(h, k) and is_exact(W, -k) and is_exact(logits, k)
            jax.tree_util.tree_map(functools.partial(_same, exact=exact, what=f"{name} {k}"), out, base)
        out = f((h * np.float32(1e-30)), (W * np.float32(1e30)), (logits * np.float32(1e-30)))
        jax.tree_util.tree_map(functools.partial(_same, exact=False, what=name, rtol=1e-5), out, base)


def test_layerwise_scales_each_layer_on_its_own():
    # The layer shapes of test_metrics.test_layerwise_stacks_per_layer_reports (compiled once).
    h, y, _, _ = make_data(14, N=200, spread=2.0)
    feats = (h, np.maximum(h @ np.random.default_rng(0).normal(size=(24, 40)), 0).astype(np.float32), h[:, :5])
    base = as_np(metrics.layerwise(feats, y, 6))
    out = as_np(metrics.layerwise(tuple(scaled(f, k) for f, k in zip(feats, (-100, 120, 30))), y, 6))
    assert all(is_exact(f, k) for f, k in zip(feats, (-100, 120, 30)))
    for key in metrics.REPORT_KEYS:
        np.testing.assert_array_equal(out[key], base[key], err_msg=key)


def test_rows_of_any_relative_size_keep_their_direction(data):
    # Cosines and argmax are per-row invariant: rows 2^-260 .. 2^0 times the largest one (down to
    # subnormal) count with their direction, against the float64 pairwise definition.
    h, y, _, logits, _ = data
    rng = np.random.default_rng(3)
    h = scaled(h, 0)
    h[::3] = (h[::3] * 2.0 ** rng.integers(-140, 0, (len(h[::3]), 1))).astype(np.float32)
    h[1::3] = (h[1::3] * 2.0 ** rng.integers(0, 120, (len(h[1::3]), 1))).astype(np.float32)
    G = np.asarray(metrics.cosine_similarity_matrix(h, y, 6), np.float64)
    assert_close(G, ref_cosine_matrix(h, y, 6))
    lg = (logits * 2.0 ** rng.integers(-140, 120, (len(logits), 1))).astype(np.float32)
    pred = np.asarray(metrics.ncc_predict(h, y, 6))
    assert_close(metrics.nc4(h, y, 6, lg), np.mean(np.argmax(lg.astype(np.float64), 1) != pred))


def test_class_means_are_scale_equivariant(data):
    h, y, _, _, _ = data
    base = np.asarray(metrics.class_means(h, y, 6), np.float64)
    for k in (-100, 60, 120):
        np.testing.assert_array_equal(np.asarray(metrics.class_means(scaled(h, k), y, 6), np.float64), base * 2.0**k)
    # 1e38-sized features: a plain sum of a class would overflow, the means do not
    top = scaled(h, 126 - int(np.floor(np.log2(np.abs(h).max()))))
    means = np.asarray(metrics.class_means(top, y, 6), np.float64)
    assert np.isfinite(means).all()
    assert_close(means, np.stack([top[y == c].astype(np.float64).mean(0) for c in range(6)]))


def test_streaming_keeps_one_scale_across_batches(data):
    h, y, W, logits, _ = data
    # The first batch is 2^-40 times smaller than the rest: pass 1 must rescale what it has
    # accumulated when a later batch raises the exponent.
    h = h.copy()
    h[:64] = scaled(h[:64], -40)
    full = as_np(metrics.collapse_report(h, y, 6, W=W, logits=logits))
    for k in (-80, 0, 110):
        hk = scaled(h, k)

        def batches(hk=hk):
            return ((hk[i : i + 64], y[i : i + 64], logits[i : i + 64]) for i in range(0, len(y), 64))

        out = as_np(metrics.collapse_report_streaming(batches, 6, W=scaled(W, -k)))
        for key in KEYS:
            assert_close(out[key], full[key], rtol=1e-5, atol=1e-7, what=f"{k} {key}")


# ----------------------------------------------------------------------------------------------
# All-zero inputs (documented values, never NaN)
# ----------------------------------------------------------------------------------------------


def test_all_zero_features_give_the_documented_values(data):
    _, y, W, logits, _ = data
    h = np.zeros((len(y), 24), np.float32)
    n0 = np.mean(y == 0)
    expect = {
        "min_intra": 0.0, "max_inter": 0.0, "mean_intra": 0.0, "mean_inter": 0.0, "nc1": 0.0, "cdnv": 0.0,
        "nc2_equinorm": 0.0, "nc2_equiangular": 0.0, "nc2_maxangle": 1.0 / 5, "ncc_accuracy": n0,
        "nc4": np.mean(np.argmax(logits, 1) != 0), "nc3": 1.0, "nc3_min_cos": 0.0, "nc3_mean_cos": 0.0,
    }
    eager = as_np(metrics.collapse_report(h, y, 6, W=W, logits=logits))
    # zero runs next to a non-zero one: the exponent is per run
    runs = [np.stack([h, h + 1, h]), np.stack([y] * 3), np.stack([W] * 3), np.stack([logits] * 3)]
    batched = as_np(jax.vmap(lambda h, y, W, lg: metrics.collapse_report(h, y, 6, W=W, logits=lg))(*runs))
    streamed = as_np(metrics.collapse_report_streaming(
        lambda: ((h[i : i + 64], y[i : i + 64], logits[i : i + 64]) for i in range(0, len(y), 64)), 6, W=W))
    for rep in (eager, streamed, {k: v[2] for k, v in batched.items()}):
        assert not any(np.isnan(v) for v in rep.values())
        for key, v in expect.items():
            assert_close(rep[key], v, rtol=0, atol=1e-6, what=key)  # nc3 = 1 up to rounding
    zero_w = as_np(metrics.collapse_report(h, y, 6, W=np.zeros_like(W), logits=np.zeros_like(logits)))
    assert zero_w["nc3"] == 0.0 and zero_w["nc4"] == 0.0 and zero_w["nc2_maxangle_weights"] == pytest.approx(0.2)
    np.testing.assert_array_equal(metrics.class_means(h, y, 6), np.zeros((6, 24)))
