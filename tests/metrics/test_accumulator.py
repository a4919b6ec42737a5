"""metrics.accumulator (jit / scan / vmap / merge) and exact per-class sums at any class size.

References: the float64 NumPy definitions of test_metrics (``ref_report``), closed forms for data
made of a few distinct rows, and float64 sums of the same float values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import metrics
from nc_jax.metrics import _stats

from .test_metrics import assert_close, make_data, ref_report

ONE_PASS = ("min_intra", "max_inter", "mean_intra", "mean_inter", "nc1", "nc2_equinorm",
            "nc2_equiangular", "nc2_maxangle", "cdnv", "nc3", "nc3_min_cos", "nc3_mean_cos",
            "nc2_equinorm_weights", "nc2_equiangular_weights", "nc2_maxangle_weights")


def as_np(rep):
    return {k: np.asarray(v, np.float64) for k, v in rep.items()}


def two_pass(acc, hb, yb, lb=None, W=None):
    """Both passes over stacked batches hb (S, B, d), yb (S, B), lb (S, B, C), each a lax.scan."""
    s1, _ = jax.lax.scan(lambda s, b: (acc.update(s, *b), None), acc.init(), (hb, yb))
    p2 = acc.second_pass(s1, with_logits=lb is not None)
    xs = (hb, yb) if lb is None else (hb, yb, lb)
    s2, _ = jax.lax.scan(lambda s, b: (p2.update(s, *b), None), p2.init(), xs)
    return acc.finalize(s1, W), p2.finalize(s2, W)


def test_accumulator_in_jit_scan_equals_collapse_report():
    h, y, W, logits = make_data(21, N=480, imbalanced=True, spread=2.0)
    C, d = 6, h.shape[1]
    full = as_np(metrics.collapse_report(h, y, C, W=W, logits=logits))
    ref = ref_report(h, y, C, W=W, logits=logits)
    acc = metrics.accumulator(C, d)
    one, rep = jax.jit(lambda hb, yb, lb, W: two_pass(acc, hb, yb, lb, W))(
        h.reshape(6, 80, d), y.reshape(6, 80), logits.reshape(6, 80, C), W)
    one, rep = as_np(one), as_np(rep)
    assert set(one) == set(ONE_PASS) and set(rep) == set(full)
    for k in full:
        assert_close(rep[k], full[k], rtol=1e-5, atol=1e-6, what=k)
        assert_close(rep[k], ref[k], what=k)
    for k in ONE_PASS:
        assert_close(one[k], full[k], rtol=1e-5, atol=1e-6, what=f"one pass {k}")
    # without the d x d scatter: no nc1 from pass 1, the rest unchanged
    lean = metrics.accumulator(C, d, second_moment=False)
    s = lean.update(lean.init(), h, y)
    out = as_np(lean.finalize(s))
    assert "nc1" not in out and "nc3" not in out
    for k in out:
        assert_close(out[k], full[k], rtol=1e-5, atol=1e-6, what=f"lean {k}")


def test_accumulator_under_vmap_over_two_runs():
    runs = [make_data(s, N=240) for s in (3, 4)]
    h = np.stack([r[0] for r in runs])
    h[1] *= 2.0**-70  # runs at different scales: the exponent is per run
    y = np.stack([r[1] for r in runs])
    acc = metrics.accumulator(6, h.shape[2])
    one, rep = jax.vmap(lambda h, y: two_pass(acc, h.reshape(3, 80, -1), y.reshape(3, 80)))(h, y)
    for i in range(2):
        full = as_np(metrics.collapse_report(h[i], y[i], 6))
        for k in full:
            assert_close(rep[k][i], full[k], rtol=1e-5, atol=1e-6, what=f"run {i} {k}")
            if k in one:
                assert_close(one[k][i], full[k], rtol=1e-5, atol=1e-6, what=f"run {i} one pass {k}")


def test_merged_halves_equal_one_pass_over_all():
    h, y, W, logits = make_data(22, N=400, imbalanced=True, spread=1.5)
    d = h.shape[1]
    h[200:] *= 8.0  # the halves have different exponents, so merging must rescale one
    y[:200] = np.where(y[:200] == 5, 4, y[:200])  # class 5 first appears in the second half
    acc = metrics.accumulator(6, d)
    a = acc.update(acc.init(), h[:200], y[:200])
    b = acc.update(acc.init(), h[200:], y[200:])
    whole = as_np(acc.finalize(acc.update(acc.init(), h, y), W))
    full = as_np(metrics.collapse_report(h, y, 6, W=W, logits=logits))
    for s1 in (acc.merge(a, b), acc.merge(b, a)):
        merged = as_np(acc.finalize(s1, W))
        for k in whole:
            assert_close(merged[k], whole[k], rtol=1e-5, atol=1e-6, what=k)
            assert_close(merged[k], full[k], rtol=1e-5, atol=1e-6, what=k)
        p2 = acc.second_pass(s1, with_logits=True)
        s2 = p2.merge(p2.update(p2.init(), h[:200], y[:200], logits[:200]),
                      p2.update(p2.init(), h[200:], y[200:], logits[200:]))
        rep = as_np(p2.finalize(s2, W))
        for k in full:
            assert_close(rep[k], full[k], rtol=1e-5, atol=1e-6, what=f"pass 2 {k}")


def test_accumulator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        metrics.accumulator(1, 4)
    with pytest.raises(ValueError, match="dim"):
        metrics.accumulator(3, 0)
    acc = metrics.accumulator(3, 4)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        acc.update(acc.init(), np.ones((5, 3)), np.zeros(5, int))
    with pytest.raises(ValueError, match="labels"):
        acc.update(acc.init(), np.ones((5, 4)), np.zeros(4, int))
    s = acc.update(acc.init(), np.eye(3, 4), np.arange(3))
    with pytest.raises(ValueError, match="logits"):
        p2 = acc.second_pass(s, with_logits=True)
        p2.update(p2.init(), np.eye(3, 4), np.arange(3))


# ----------------------------------------------------------------------------------------------
# Exact per-class sums
# ----------------------------------------------------------------------------------------------


def test_plain_segment_sum_kept_up_to_65536_rows():
    """Results computed before stay bit-identical: up to PLAIN_MAX rows nothing changes."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(_stats.PLAIN_MAX, 3)).astype(np.float32) + 1)
    y = jnp.asarray(rng.integers(0, 4, _stats.PLAIN_MAX))
    np.testing.assert_array_equal(_stats.segsum(x, y, 4), jax.ops.segment_sum(x, y, num_segments=4))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_exact_segsum_past_the_precision_of_a_low_precision_float(dtype):
    """The same code path as float32 past 2^24, at a size where half precision saturates."""
    rng = np.random.default_rng(1)
    n = 4096
    x = jnp.asarray((1 + 0.01 * rng.normal(size=(n, 3))).astype(np.float32), dtype)
    y = (np.arange(n) >= n - 16).astype(np.int32)
    xs = np.asarray(x, np.float64)
    ref = np.stack([xs[y == c].sum(0) for c in range(2)])
    eps = float(jnp.finfo(dtype).eps)
    plain = np.asarray(jax.ops.segment_sum(x, y, num_segments=2), np.float64)
    assert np.max(np.abs(plain - ref) / ref) > 4 * eps  # a sequential sum stops short
    out = np.asarray(jax.jit(lambda x, y: _stats.segsum(x, y, 2, plain_max=0))(x, y), np.float64)
    np.testing.assert_allclose(out, ref, rtol=2 * eps)


@pytest.fixture(scope="module")
def huge_class():
    """A class of 2^25 - 8192 samples, far past float32's 2^24, and one of 4096. Each class is
    made of two distinct rows, so the float64 reference is a closed form."""
    n1 = 4096
    n0 = 2**25 - 2 * n1
    rows = {0: np.float32([[np.cos(0.02), np.sin(0.02)], [np.cos(0.02), -np.sin(0.02)]]),
            1: np.float32([[0.63, 0.8], [0.57, 0.8]])}
    h = np.empty((n0 + n1, 2), np.float32)
    h[0:n0:2], h[1:n0:2] = rows[0]
    h[n0::2], h[n0 + 1::2] = rows[1]
    y = (np.arange(n0 + n1) >= n0).astype(np.int32)

    r64 = [rows[c].astype(np.float64) for c in (0, 1)]
    ubar = [(r / np.linalg.norm(r, axis=1, keepdims=True)).mean(0) for r in r64]
    mu = np.stack([r.mean(0) for r in r64])
    var = np.array([np.sum((r[0] - r[1]) ** 2) / 4 for r in r64])
    counts = np.array([n0, n1])
    sw = sum(cnt * np.outer(r[0] - r[1], r[0] - r[1]) / 4 for cnt, r in zip(counts, r64)) / counts.sum()
    m0 = (mu[0] - mu[1]) / 2  # M has rows +-m0; Sigma_B = m0 m0^T, its one eigenvalue ||m0||^2
    v = m0 / np.linalg.norm(m0)
    expect = {"min_intra": min(ubar[0] @ ubar[0], ubar[1] @ ubar[1]),
              "mean_intra": (ubar[0] @ ubar[0] + ubar[1] @ ubar[1]) / 2,
              "max_inter": ubar[0] @ ubar[1],
              "nc1": (v @ sw @ v) / (m0 @ m0) / 2,  # tr(Sigma_W Sigma_B^+) / C
              "cdnv": var.sum() / (2 * np.sum((mu[0] - mu[1]) ** 2)),
              "ncc_accuracy": 1.0}
    assert abs(ubar[0] @ ubar[0] - 0.9996) < 1e-6
    # the test can fail: a plain float32 sum of class 0's unit vectors is far off
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    plain = np.asarray(jax.ops.segment_sum(jnp.asarray(u), jnp.asarray(y), num_segments=2))
    assert abs(plain[0, 0] / n0 - ubar[0][0]) > 1e-3
    return h, y, expect


@pytest.mark.slow
def test_class_of_2_to_the_25_samples_in_memory(huge_class):
    h, y, expect = huge_class
    rep = metrics.collapse_report(h, y, 2)
    for k, val in expect.items():
        assert_close(rep[k], val, rtol=2e-6, atol=1e-9, what=k)


@pytest.mark.slow
def test_class_of_2_to_the_25_samples_streaming(huge_class):
    h, y, expect = huge_class
    half = len(y) // 2
    rep = metrics.collapse_report_streaming(lambda: iter([(h[:half], y[:half]), (h[half:], y[half:])]), 2)
    for k, val in expect.items():
        assert_close(rep[k], val, rtol=2e-6, atol=1e-9, what=k)


def test_streaming_names_a_non_finite_batch():
    """Finiteness is checked within the update's own pass over the batch; the error still names
    the batch and counts the bad values."""
    h, y, _, _ = make_data(23, N=120)
    bad = h.copy()
    bad[70, 3], bad[100, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match="batch 1 contain 2 non-finite"):
        metrics.collapse_report_streaming(lambda: iter([(h[:60], y[:60]), (bad[60:], y[60:])]), 6)
    calls = []

    def second_pass_differs():  # finite in pass 1, not in pass 2
        calls.append(1)
        return iter([(h if len(calls) == 1 else bad, y)])

    with pytest.raises(ValueError, match="batch 0 contain 2 non-finite"):
        metrics.collapse_report_streaming(second_pass_differs, 6)


def test_readme_accumulator_recipe_runs_and_equals_collapse_report():
    import os
    import re

    import flax.linen as nn

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    section = text.split("\n### NC metrics in your own training loop\n", 1)[1].split("\n### ", 1)[0]
    code = [c for c in re.findall(r"```python\n(.*?)```", section, re.S) if "accumulator(" in c][0]

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x, return_features=False):
            h = nn.relu(nn.Dense(4)(x)) + x[:, :4]
            logits = nn.Dense(3, name="head")(h)
            return (logits, (h,)) if return_features else logits

    rng = np.random.default_rng(5)
    yb = rng.integers(0, 3, (4, 50)).astype(np.int32)
    xb = (np.eye(3, 6)[yb] * 3 + rng.normal(size=(4, 50, 6))).astype(np.float32)
    model = Tiny()
    variables = model.init(jax.random.key(0), xb[0])
    scope = {"jax": jax, "nc_jax": __import__("nc_jax"), "model": model, "C": 3, "d": 4}
    exec(compile(code, "README.md", "exec"), scope)
    one, rep = scope["eval_nc"](variables, xb, yb)
    h = model.apply(variables, xb.reshape(200, 6), return_features=True)[1][-1]
    full = as_np(metrics.collapse_report(h, yb.reshape(200), 3))
    assert set(rep) == set(full)
    for k in full:
        assert_close(rep[k], full[k], rtol=1e-5, atol=1e-6, what=k)
        if k in one:
            assert_close(one[k], full[k], rtol=1e-5, atol=1e-6, what=f"one pass {k}")
