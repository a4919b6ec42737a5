"""nc_jax.metrics against independent float64 NumPy definitions, closed forms and invariances.

The references below follow the textbook definitions literally (O(N^2) pairwise cosines, d x d
covariance matrices with eigh, explicit loops over class pairs) and share no code with the module.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import metrics
from tests.metrics import more_refs

RTOL, ATOL = 1e-4, 1e-6


# ----------------------------------------------------------------------------------------------
# Independent float64 references
# ----------------------------------------------------------------------------------------------


def ref_means(h, y, C):
    h = np.asarray(h, np.float64)
    return np.stack([h[y == c].mean(axis=0) for c in range(C)])


def ref_cosine_matrix(h, y, C, center=False):
    """O(N^2): every pairwise cosine, then block averages over all ordered pairs of non-zero rows."""
    h = np.asarray(h, np.float64)
    if center:
        h = h - ref_means(h, y, C).mean(axis=0)
    norms = np.linalg.norm(h, axis=1)
    keep = norms > 0
    h, yk, norms = h[keep], y[keep], norms[keep]
    pair = (h @ h.T) / np.outer(norms, norms)
    G = np.zeros((C, C))
    for c, cp in itertools.product(range(C), range(C)):
        block = pair[np.ix_(yk == c, yk == cp)]
        G[c, cp] = block.mean() if block.size else 0.0
    return G


def ref_nc1(h, y, C):
    h = np.asarray(h, np.float64)
    N, d = h.shape
    mu = ref_means(h, y, C)
    mu_g = mu.mean(axis=0)
    Sw = np.zeros((d, d))
    for i in range(N):
        r = h[i] - mu[y[i]]
        Sw += np.outer(r, r)
    Sw /= N
    Sb = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / C
    evals, evecs = np.linalg.eigh(Sb)
    k = min(C - 1, d)
    idx = np.argsort(evals)[::-1][:k]
    inv_Sb = evecs[:, idx] @ np.diag(1.0 / evals[idx]) @ evecs[:, idx].T
    return np.trace(Sw @ inv_Sb) / C


def _ref_nc2_rows(V, C):
    norms = np.array([np.linalg.norm(v) for v in V])
    cos = np.array([[V[a] @ V[b] / (norms[a] * norms[b]) for b in range(C)] for a in range(C)])
    pairs = [cos[a, b] for a in range(C) for b in range(a + 1, C)]
    maxangle = np.mean([abs(cos[a, b] + 1.0 / (C - 1)) for a in range(C) for b in range(C) if a != b])
    equiangular = np.std(pairs, ddof=1) if len(pairs) > 1 else 0.0
    return {"equinorm": np.std(norms, ddof=1) / np.mean(norms), "equiangular": equiangular, "maxangle": maxangle}


def ref_nc2(h, y, C, W=None):
    mu = ref_means(h, y, C)
    out = _ref_nc2_rows(mu - mu.mean(axis=0), C)
    if W is not None:
        out.update({f"{k}_weights": v for k, v in _ref_nc2_rows(np.asarray(W, np.float64), C).items()})
    return out


def ref_nc3(h, y, W, C):
    W = np.asarray(W, np.float64)
    mu = ref_means(h, y, C)
    M = mu - mu.mean(axis=0)
    papyan = np.sum((W / np.sqrt(np.sum(W**2)) - M / np.sqrt(np.sum(M**2))) ** 2)
    cos = np.array([W[c] @ mu[c] / (np.linalg.norm(W[c]) * np.linalg.norm(mu[c])) for c in range(C)])
    return {"nc3": papyan, "cos": cos, "min_cos": cos.min(), "mean_cos": cos.mean()}


def ref_ncc_pred(h, y, C):
    h = np.asarray(h, np.float64)
    mu = ref_means(h, y, C)
    dist = np.linalg.norm(h[:, None, :] - mu[None, :, :], axis=2)
    return np.argmin(dist, axis=1)


def ref_cdnv(h, y, C):
    h = np.asarray(h, np.float64)
    mu = ref_means(h, y, C)
    var = [np.mean(np.sum((h[y == c] - mu[c]) ** 2, axis=1)) for c in range(C)]
    vals = [
        (var[a] + var[b]) / (2 * np.sum((mu[a] - mu[b]) ** 2)) for a in range(C) for b in range(C) if a != b
    ]
    return np.mean(vals)


def ref_report(h, y, C, W=None, logits=None):
    G = ref_cosine_matrix(h, y, C)
    off = ~np.eye(C, dtype=bool)
    out = {
        "min_intra": np.diag(G).min(),
        "max_inter": G[off].max(),
        "mean_intra": np.diag(G).mean(),
        "mean_inter": G[off].mean(),
        "nc1": ref_nc1(h, y, C),
        "ncc_accuracy": np.mean(ref_ncc_pred(h, y, C) == y),
        "cdnv": ref_cdnv(h, y, C),
    }
    out.update({f"nc2_{k}": v for k, v in ref_nc2(h, y, C, W).items()})
    if W is not None:
        r3 = ref_nc3(h, y, W, C)
        out.update(nc3=r3["nc3"], nc3_min_cos=r3["min_cos"], nc3_mean_cos=r3["mean_cos"])
    if logits is not None:
        out["nc4"] = np.mean(np.argmax(logits, axis=1) != ref_ncc_pred(h, y, C))
    out.update(more_refs.report_extra(h, y, C, W))
    return out


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def make_data(seed, N=240, d=24, C=6, imbalanced=False, spread=1.0, offset=0.0):
    """Gaussian classes around random means (float32), every class present."""
    rng = np.random.default_rng(seed)
    if imbalanced:
        p = rng.dirichlet(np.full(C, 0.7))
        y = np.concatenate([np.arange(C), rng.choice(C, N - C, p=p)])
    else:
        y = np.arange(N) % C
    y = rng.permutation(y)
    mu = rng.normal(size=(C, d)) * 2.0 + offset
    h = (mu[y] + spread * rng.normal(size=(N, d))).astype(np.float32)
    W = rng.normal(size=(C, d)).astype(np.float32)
    logits = (h @ W.T + 0.5 * rng.normal(size=(N, C))).astype(np.float32)
    return h, y.astype(np.int32), W, logits


def simplex_etf(C, d, seed=0, scale=3.0):
    """Rows: a simplex ETF (unit norm, pairwise cos -1/(C-1)) embedded by a random partial rotation."""
    rng = np.random.default_rng(seed)
    M_star = np.sqrt(C / (C - 1)) * (np.eye(C) - np.ones((C, C)) / C)
    U, _ = np.linalg.qr(rng.normal(size=(d, C)))
    return scale * (M_star @ U.T)  # (C, d)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol, err_msg=what)


DATASETS = [
    pytest.param(dict(seed=0), id="balanced"),
    pytest.param(dict(seed=1, imbalanced=True), id="imbalanced"),
    pytest.param(dict(seed=2, imbalanced=True, offset=3.0, spread=0.3), id="imbalanced-offset"),
]


# ----------------------------------------------------------------------------------------------
# Each metric against its reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", DATASETS)
def test_class_means(kw):
    h, y, _, _ = make_data(**kw)
    assert_close(metrics.class_means(h, y, 6), ref_means(h, y, 6))


@pytest.mark.parametrize("kw", DATASETS)
@pytest.mark.parametrize("center", [False, True])
def test_cosine_matrix_matches_pairwise_definition(kw, center):
    h, y, _, _ = make_data(**kw)
    G = metrics.cosine_similarity_matrix(h, y, 6, center=center)
    assert G.shape == (6, 6)
    assert_close(G, ref_cosine_matrix(h, y, 6, center=center))


@pytest.mark.parametrize("kw", DATASETS)
def test_nc1_matches_dxd_eigh(kw):
    h, y, _, _ = make_data(**kw)
    assert_close(metrics.nc1(h, y, 6), ref_nc1(h, y, 6))


def test_nc1_float32_d256_is_not_pinv_garbage():
    # The situation of the pitfall note (C=10, d=256, float32): a d x d pinv gives ~1e7.
    rng = np.random.default_rng(3)
    C, d, N = 10, 256, 1000
    y = np.arange(N) % C
    mu = rng.normal(size=(C, d)) * 5 + 10.0
    h = (mu[y] + 0.1 * rng.normal(size=(N, d))).astype(np.float32)
    assert_close(metrics.nc1(h, y, C), ref_nc1(h, y, C))


def test_nc1_fewer_dimensions_than_classes():
    h, y, _, _ = make_data(4, N=120, d=3, C=8)
    assert_close(metrics.nc1(h, y, 8), ref_nc1(h, y, 8))


@pytest.mark.parametrize("kw", DATASETS)
def test_nc2_with_and_without_weights(kw):
    h, y, W, _ = make_data(**kw)
    ref = ref_nc2(h, y, 6, W)
    out = metrics.nc2(h, y, 6)
    assert set(out) == {"equinorm", "equiangular", "maxangle"}
    for k in out:
        assert_close(out[k], ref[k], what=k)
    out = metrics.nc2(h, y, 6, W=W)
    assert set(out) == set(ref)
    for k in out:
        assert_close(out[k], ref[k], what=k)


@pytest.mark.parametrize("kw", DATASETS)
def test_nc3(kw):
    h, y, W, _ = make_data(**kw)
    out, ref = metrics.nc3(h, y, 6, W), ref_nc3(h, y, W, 6)
    for k in ref:
        assert_close(out[k], ref[k], what=k)


@pytest.mark.parametrize("kw", DATASETS)
def test_ncc_accuracy_and_nc4(kw):
    # Wide spread so that the NCC rule makes mistakes and the accuracy is a real test.
    h, y, W, logits = make_data(**kw) if "spread" in kw else make_data(**kw, spread=2.5)
    pred = ref_ncc_pred(h, y, 6)
    np.testing.assert_array_equal(np.asarray(metrics.ncc_predict(h, y, 6)), pred)
    assert_close(metrics.ncc_accuracy(h, y, 6), np.mean(pred == y))
    assert_close(metrics.nc4(h, y, 6, logits), np.mean(np.argmax(logits, 1) != pred))


@pytest.mark.parametrize("kw", DATASETS)
def test_cdnv(kw):
    h, y, _, _ = make_data(**kw)
    assert_close(metrics.cdnv(h, y, 6), ref_cdnv(h, y, 6))


@pytest.mark.parametrize("kw", DATASETS)
def test_collapse_report_all_keys(kw):
    h, y, W, logits = make_data(**kw, spread=2.0) if "spread" not in kw else make_data(**kw)
    out = metrics.collapse_report(h, y, 6, W=W, logits=logits)
    ref = ref_report(h, y, 6, W, logits)
    assert set(out) == set(ref) == set(metrics.REPORT_KEYS + metrics.WEIGHT_KEYS + metrics.LOGIT_KEYS)
    for k in ref:
        assert out[k].shape == ()
        assert out[k].dtype == jnp.float32
        assert_close(out[k], ref[k], what=k)
    assert set(metrics.collapse_report(h, y, 6)) == set(metrics.REPORT_KEYS)


def test_zero_norm_rows_are_skipped():
    h, y, _, _ = make_data(5, N=120)
    h[::7] = 0.0  # zero rows in several classes
    G = metrics.cosine_similarity_matrix(h, y, 6)
    assert_close(G, ref_cosine_matrix(h, y, 6))
    out = metrics.collapse_report(h, y, 6)
    assert all(np.isfinite(np.asarray(v)) for v in out.values())


def test_all_zero_class_gives_zero_cosines():
    h, y, _, _ = make_data(6, N=60)
    h[y == 2] = 0.0
    G = np.asarray(metrics.cosine_similarity_matrix(h, y, 6))
    assert np.all(G[2] == 0) and np.all(G[:, 2] == 0)
    assert_close(np.delete(np.delete(G, 2, 0), 2, 1), np.delete(np.delete(ref_cosine_matrix(h, y, 6), 2, 0), 2, 1))
    out = metrics.collapse_report(h, y, 6)
    assert all(np.isfinite(np.asarray(v)) for v in out.values())
    assert float(out["min_intra"]) == 0.0


def test_tiny_rows_keep_their_direction():
    # 1e-25 entries square to 0 in float32; the direction must still count as a unit vector.
    h, y, _, _ = make_data(7, N=60)
    h[:6] *= np.float32(1e-26)
    assert_close(metrics.cosine_similarity_matrix(h, y, 6), ref_cosine_matrix(h, y, 6))


# ----------------------------------------------------------------------------------------------
# Closed forms: a simplex ETF
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("C", [3, 10])
@pytest.mark.parametrize("imbalanced", [False, True])
def test_simplex_etf_closed_forms(C, imbalanced):
    d = 32
    E = simplex_etf(C, d, seed=C)
    rng = np.random.default_rng(C)
    # Same N = 5C either way, so both cases share one compilation per C.
    counts = 1 + rng.multinomial(4 * C, rng.dirichlet(np.ones(C))) if imbalanced else np.full(C, 5)
    y = rng.permutation(np.repeat(np.arange(C), counts)).astype(np.int32)
    h = E[y].astype(np.float32)
    W = (0.5 * E).astype(np.float32)
    logits = h @ W.T
    out = metrics.collapse_report(h, y, C, W=W, logits=logits)
    expect = dict(
        min_intra=1.0, mean_intra=1.0, max_inter=-1 / (C - 1), mean_inter=-1 / (C - 1), nc1=0.0,
        nc2_equinorm=0.0, nc2_equiangular=0.0, nc2_maxangle=0.0, ncc_accuracy=1.0, cdnv=0.0, nc3=0.0,
        nc3_min_cos=1.0, nc3_mean_cos=1.0, nc2_equinorm_weights=0.0, nc2_equiangular_weights=0.0,
        nc2_maxangle_weights=0.0, nc4=0.0,
    )
    for k, v in expect.items():
        assert_close(out[k], v, rtol=0, atol=2e-6, what=k)
    G = np.asarray(metrics.cosine_similarity_matrix(h, y, C))
    assert_close(G, np.where(np.eye(C, dtype=bool), 1.0, -1 / (C - 1)), rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------------------------
# Invariances
# ----------------------------------------------------------------------------------------------

SCALAR_KEYS = metrics.REPORT_KEYS + metrics.WEIGHT_KEYS + metrics.LOGIT_KEYS


@pytest.mark.parametrize("a", [1e-3, 7.0, 1e3])
def test_scale_invariance(a):
    h, y, W, logits = make_data(8, imbalanced=True, spread=2.0)
    base = metrics.collapse_report(h, y, 6, W=W, logits=logits)
    scaled = metrics.collapse_report(h * np.float32(a), y, 6, W=W * np.float32(a), logits=logits)
    for k in SCALAR_KEYS:
        assert_close(scaled[k], base[k], rtol=2e-4, atol=1e-6, what=k)


def test_class_permutation_invariance():
    h, y, W, logits = make_data(9, imbalanced=True, spread=2.0)
    perm = np.random.default_rng(0).permutation(6)
    y2 = perm[y]  # class c is now called perm[c]
    inv = np.argsort(perm)
    W2, logits2 = W[inv], logits[:, inv]
    base = metrics.collapse_report(h, y, 6, W=W, logits=logits)
    out = metrics.collapse_report(h, y2, 6, W=W2, logits=logits2)
    for k in SCALAR_KEYS:
        assert_close(out[k], base[k], what=k)
    G, G2 = metrics.cosine_similarity_matrix(h, y, 6), metrics.cosine_similarity_matrix(h, y2, 6)
    assert_close(np.asarray(G2)[np.ix_(perm, perm)], np.asarray(G, np.float64))
    assert_close(np.asarray(metrics.class_means(h, y2, 6))[perm], np.asarray(metrics.class_means(h, y, 6), np.float64))


def test_rotation_invariance():
    h, y, W, logits = make_data(10, imbalanced=True, spread=2.0)
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(h.shape[1],) * 2))
    hq, Wq = (h @ Q).astype(np.float32), (W @ Q).astype(np.float32)
    base = metrics.collapse_report(h, y, 6, W=W, logits=logits)
    out = metrics.collapse_report(hq, y, 6, W=Wq, logits=logits)
    for k in SCALAR_KEYS:
        assert_close(out[k], base[k], rtol=2e-4, atol=2e-6, what=k)


# ----------------------------------------------------------------------------------------------
# Transformations: vmap, jit, scan
# ----------------------------------------------------------------------------------------------


def _runs(R=3, **kw):
    data = [make_data(20 + r, **kw) for r in range(R)]
    return [np.stack(x) for x in zip(*data)]


def test_vmap_over_runs_equals_loop():
    hs, ys, Ws, lgs = _runs(imbalanced=True, spread=2.0)
    batched = jax.vmap(lambda h, y, W, lg: metrics.collapse_report(h, y, 6, W=W, logits=lg))(hs, ys, Ws, lgs)
    for r in range(hs.shape[0]):
        single = metrics.collapse_report(hs[r], ys[r], 6, W=Ws[r], logits=lgs[r])
        for k in single:
            assert_close(batched[k][r], np.asarray(single[k], np.float64), rtol=1e-5, what=k)


def test_vmap_individual_functions():
    hs, ys, Ws, lgs = _runs(R=2)
    funcs = {
        "nc1": lambda h, y, W, lg: metrics.nc1(h, y, 6),
        "cdnv": lambda h, y, W, lg: metrics.cdnv(h, y, 6),
        "cos": lambda h, y, W, lg: metrics.cosine_similarity_matrix(h, y, 6, center=True),
        "nc3": lambda h, y, W, lg: metrics.nc3(h, y, 6, W)["nc3"],
        "nc4": lambda h, y, W, lg: metrics.nc4(h, y, 6, lg),
        "acc": lambda h, y, W, lg: metrics.ncc_accuracy(h, y, 6),
        "nc2": lambda h, y, W, lg: metrics.nc2(h, y, 6, W=W)["maxangle_weights"],
    }
    for name, f in funcs.items():
        batched = jax.vmap(f)(hs, ys, Ws, lgs)
        for r in range(2):
            assert_close(batched[r], np.asarray(f(hs[r], ys[r], Ws[r], lgs[r]), np.float64), rtol=1e-5, what=name)


def test_inside_jitted_scan():
    # The training loop records NC inside a jitted lax.scan: inputs are tracers, checks are skipped.
    hs, ys, Ws, _ = _runs(R=4)

    @jax.jit
    def record(hs, ys, Ws):
        def step(carry, xs):
            h, y, W = xs
            return carry, metrics.collapse_report(h, y, 6, W=W)

        return jax.lax.scan(step, 0, (hs, ys, Ws))[1]

    traj = record(hs, ys, Ws)
    for t in range(4):
        eager = metrics.collapse_report(hs[t], ys[t], 6, W=Ws[t])
        for k in eager:
            assert_close(traj[k][t], np.asarray(eager[k], np.float64), rtol=1e-5, what=k)


def test_accepts_jax_arrays_and_float64_numpy():
    h, y, _, _ = make_data(11)
    ref = ref_nc1(h, y, 6)
    assert_close(metrics.nc1(jnp.asarray(h), jnp.asarray(y), 6), ref)
    assert_close(metrics.nc1(h.astype(np.float64), y.astype(np.int64), 6), ref)
    out = metrics.collapse_report(h.astype(np.float16), y, 6)
    assert out["nc1"].dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [64, 97])
def test_streaming_equals_in_memory(batch):
    h, y, W, logits = make_data(12, imbalanced=True, spread=2.0)
    full = metrics.collapse_report(h, y, 6, W=W, logits=logits)

    def batches():
        return ((h[i : i + batch], y[i : i + batch], logits[i : i + batch]) for i in range(0, len(y), batch))

    out = metrics.collapse_report_streaming(batches, 6, W=W)
    assert set(out) == set(full)
    for k in full:
        assert_close(out[k], np.asarray(full[k], np.float64), rtol=1e-5, atol=1e-6, what=k)
    # Without logits: no nc4, and the reference values directly.
    out = metrics.collapse_report_streaming(lambda: ((h[i : i + batch], y[i : i + batch]) for i in range(0, 240, batch)), 6)
    ref = ref_report(h, y, 6)
    assert set(out) == set(metrics.REPORT_KEYS)
    for k in out:
        assert_close(out[k], ref[k], what=k)


def test_streaming_rejects_inconsistent_passes():
    h, y, _, _ = make_data(13, N=120)
    calls = []

    def batches():
        calls.append(1)
        n = 120 if len(calls) == 1 else 60
        return iter([(h[:n], y[:n])])

    with pytest.raises(ValueError, match="same batches"):
        metrics.collapse_report_streaming(batches, 6)
    with pytest.raises(ValueError, match="no batch"):
        metrics.collapse_report_streaming(lambda: iter([]), 6)
    with pytest.raises(ValueError, match="class 5 has no sample"):
        metrics.collapse_report_streaming(lambda: iter([(h[y < 5], y[y < 5])]), 6)
    with pytest.raises(ValueError, match="feature dimension"):
        metrics.collapse_report_streaming(lambda: iter([(h, y), (h[:, :3], y)]), 6)


# ----------------------------------------------------------------------------------------------
# Layerwise and effective depth
# ----------------------------------------------------------------------------------------------


def test_layerwise_stacks_per_layer_reports():
    h, y, _, _ = make_data(14, N=200, spread=2.0)
    rng = np.random.default_rng(0)
    feats = (h, np.maximum(h @ rng.normal(size=(24, 40)), 0).astype(np.float32), h[:, :5])
    out = metrics.layerwise(feats, y, 6)
    assert set(out) == set(metrics.REPORT_KEYS)
    for l, f in enumerate(feats):
        ref = ref_report(f, y, 6)
        for k in out:
            assert out[k].shape == (3,)
            assert_close(out[k][l], ref[k], what=f"{k}[{l}]")
    with pytest.raises(ValueError, match="layer 1 has 10 rows"):
        metrics.layerwise((h, h[:10]), y, 6)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.layerwise((), y, 6)


def test_effective_depth():
    errs = np.array([[0.5, 0.2, 0.05, 0.0], [0.3, 0.3, 0.3, 0.3], [0.0, 0.5, 0.0, 0.5]])
    np.testing.assert_array_equal(metrics.effective_depth(errs, 0.1), [3, 4, 1])
    np.testing.assert_array_equal(metrics.effective_depth(errs, 0.0), [4, 4, 1])
    np.testing.assert_array_equal(metrics.effective_depth(errs[0], 0.2), 2)  # <= eps counts
    np.testing.assert_array_equal(metrics.effective_depth(errs, np.array([0.3, 0.2, 0.6])), [2, 4, 1])
    v = jax.jit(jax.vmap(metrics.effective_depth, in_axes=(0, None)))(errs, 0.1)
    np.testing.assert_array_equal(v, [3, 4, 1])
    with pytest.raises(ValueError, match="L >= 1"):
        metrics.effective_depth(np.zeros((2, 0)), 0.1)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_input_messages():
    h, y, W, logits = make_data(15, N=60)
    cases = [
        (lambda: metrics.nc1(h, y[:-1], 6), "shape mismatch"),
        (lambda: metrics.nc1(h[0], y, 6), r"shape \(N, d\)"),
        (lambda: metrics.nc1(h, np.where(y == 0, 6, y), 6), r"labels outside \[0, 6\)"),
        (lambda: metrics.nc1(h, np.where(y == 0, -1, y), 6), "labels outside"),
        (lambda: metrics.nc1(h, y.astype(np.float32), 6), "integers"),
        (lambda: metrics.nc1(h, np.where(y == 4, 3, y), 6), "class 4 has no sample"),
        (lambda: metrics.nc1(h, np.zeros_like(y), 1), "num_classes must be >= 2"),
        (lambda: metrics.nc1(h, y, 6.0), "static Python int"),
        (lambda: metrics.nc1(np.where(np.arange(60)[:, None] == 3, np.nan, h), y, 6), "non-finite"),
        (lambda: metrics.collapse_report(np.full_like(h, np.inf), y, 6), "non-finite"),
        (lambda: metrics.collapse_report(h, y, 6, W=W.T), "W shape"),
        (lambda: metrics.nc3(h, y, 6, W[:, :-1]), "W shape"),
        (lambda: metrics.collapse_report(h, y, 6, logits=logits[:, :5]), "logits shape"),
        (lambda: metrics.cosine_similarity_matrix(np.zeros((0, 3)), y[:0], 6), "non-empty"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


def test_old_argument_order_fails_loudly():
    # nc3 / nc4 used to take (h, y, W, C) / (h, y, logits, C); now num_classes is third everywhere.
    h, y, W, logits = make_data(15, N=60)
    with pytest.raises(ValueError, match=r"num_classes must be a static Python int.*nc3 takes \(h, y, num_classes"):
        metrics.nc3(h, y, W, 6)
    with pytest.raises(ValueError, match=r"nc4 takes \(h, y, num_classes.*nc4\(h, y, C, logits\)"):
        metrics.nc4(h, y, logits, 6)
    with pytest.raises(ValueError, match="num_classes must be a static Python int"):  # traced too
        jax.vmap(lambda h, W: metrics.nc3(h, y, W, 6))(h[None], W[None])
    with pytest.raises(TypeError):  # the weights are required
        metrics.nc3(h, y, 6)


@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e20])
def test_ncc_predict_centers_against_float64(scale):
    """Nearest of given centers (held-out features against training means) equals NumPy float64
    argmin of Euclidean distances, at any common scale."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(5, 7)) * 3
    h = centers[rng.integers(0, 5, 200)] + rng.normal(size=(200, 7))
    d2 = ((h[:, None, :] - centers[None]) ** 2).sum(-1)
    want = d2.argmin(1)
    # rows whose two nearest centers are within float32 rounding may legitimately differ
    part = np.sort(d2, axis=1)
    clear = (part[:, 1] - part[:, 0]) > 1e-4 * part[:, 1]
    got = np.asarray(metrics.ncc_predict_centers((h * scale).astype(np.float32),
                                                 (centers * scale).astype(np.float32)))
    assert clear.sum() > 150
    np.testing.assert_array_equal(got[clear], want[clear])
    with pytest.raises(ValueError, match=r"\(N, d\) and centers \(C, d\)"):
        metrics.ncc_predict_centers(h, centers[:, :3])


def test_complex_features_and_nan_depth_inputs_are_refused():
    h = (np.random.default_rng(0).normal(size=(8, 3)) * (1 + 1j)).astype(np.complex64)
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match="real features"):
        metrics.collapse_report(h, y, 2)
    with pytest.raises(ValueError, match="contains NaN"):
        metrics.effective_depth(np.array([0.5, np.nan, 0.0]), 0.01)
    with pytest.raises(ValueError, match="eps must be a number"):
        metrics.effective_depth(np.array([0.5, 0.2, 0.0]), float("nan"))


def test_streaming_refuses_a_second_pass_with_other_features():
    """An augmenting loader (same labels and counts, other features) is caught, not averaged
    into a wrong NC1."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    h = rng.normal(size=(120, 5)) + 3 * np.eye(5)[y]
    calls = []

    def batches():
        calls.append(1)
        noise = rng.normal(size=h.shape) * (2.0 if len(calls) > 1 else 0.0)
        return iter([(h[:60] + noise[:60], y[:60]), (h[60:] + noise[60:], y[60:])])

    with pytest.raises(ValueError, match="two passes saw different data"):
        metrics.collapse_report_streaming(batches, 3)
    same = metrics.collapse_report_streaming(lambda: iter([(h[:60], y[:60]), (h[60:], y[60:])]), 3)
    np.testing.assert_allclose(same["nc1"], metrics.collapse_report(h, y, 3)["nc1"], rtol=1e-5)
