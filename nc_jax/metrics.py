"""Neural Collapse (NC) measures: exact, jit-able, vmappable, per-layer and streaming.

Conventions used by every function
----------------------------------
* ``h``: features, shape ``(N, d)``, any float dtype (NumPy or JAX); computed in float32 unless the
  input is already float64 with ``jax_enable_x64`` on. Integer / half-precision inputs are upcast.
* ``y``: integer labels, shape ``(N,)``, values in ``[0, C)``; every class needs >= 1 sample.
* ``num_classes`` (C): a static Python int >= 2 (it fixes array shapes, so it cannot be traced).
* ``W``: classifier weights, shape ``(C, d)``, row ``w_c`` scores class ``c`` (logits = ``h @ W.T``).
* ``logits``: shape ``(N, C)``.
* Class means ``mu_c = (1/N_c) sum_{i: y_i = c} h_i``; global mean ``mu_G = (1/C) sum_c mu_c`` is the
  *unweighted* mean of the class means (Papyan, Han & Donoho 2020, "Prevalence of neural collapse",
  PNAS; their convention, which differs from the sample mean for imbalanced data).
  ``M`` is the ``(C, d)`` matrix of centered class means, rows ``mu_c - mu_G``.

Validation and transformations
------------------------------
Every public function checks its inputs at the Python boundary when they are concrete (NumPy
arrays or committed JAX arrays) and raises ``ValueError`` naming the problem: shape mismatch,
labels outside ``[0, C)`` or not integer, a class with no sample (the class is named), ``C < 2``,
non-finite features / weights / logits, and a wrong ``W`` or ``logits`` shape. The same functions
may be called inside ``jax.jit``, ``jax.vmap`` (e.g. over a leading run axis) or ``lax.scan``;
there the inputs are tracers, the checks cannot run and **inputs are trusted**: an out-of-range
label then silently contributes to no class, and an empty class yields meaningless (but finite)
numbers. ``num_classes`` is checked in all cases because it is static.

Nothing here forms a ``d x d`` matrix; the cost is ``O(N d C)`` time and ``O(N d + C d)`` memory
(``O(C d)`` for :func:`collapse_report_streaming`), so ``d = 4096`` is cheap.

Zero-norm feature rows
----------------------
Cosine similarities of a zero vector are undefined. In :func:`cosine_similarity_matrix` (and the
cosine keys of :func:`collapse_report`) feature rows with ``||h_i|| = 0`` are **skipped**: the
averages run over the pairs of non-zero rows only. A class whose rows are all zero gets a zero
normalized mean, hence ``intra_c = 0`` and ``inter_cc' = 0``. Likewise a centered class mean or a
weight row of zero norm gets cosine 0 with everything in :func:`nc2` / :func:`nc3`. No valid input
produces NaN.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "class_means",
    "cosine_similarity_matrix",
    "nc1",
    "nc2",
    "nc3",
    "ncc_accuracy",
    "ncc_predict",
    "nc4",
    "cdnv",
    "collapse_report",
    "layerwise",
    "effective_depth",
    "collapse_report_streaming",
    "REPORT_KEYS",
    "WEIGHT_KEYS",
    "LOGIT_KEYS",
]

#: Keys of :func:`collapse_report` that need only ``(h, y)``.
REPORT_KEYS = (
    "min_intra",
    "max_inter",
    "mean_intra",
    "mean_inter",
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_maxangle",
    "ncc_accuracy",
    "cdnv",
)
#: Extra keys of :func:`collapse_report` when ``W`` is given.
WEIGHT_KEYS = (
    "nc3",
    "nc3_min_cos",
    "nc3_mean_cos",
    "nc2_equinorm_weights",
    "nc2_equiangular_weights",
    "nc2_maxangle_weights",
)
#: Extra keys of :func:`collapse_report` when ``logits`` are given.
LOGIT_KEYS = ("nc4",)


# ----------------------------------------------------------------------------------------------
# Boundary validation (concrete inputs only)
# ----------------------------------------------------------------------------------------------


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(
            "num_classes must be a static Python int (it fixes array shapes and cannot be traced); "
            f"got {type(num_classes).__name__}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (C < 2 has no between-class structure); got {num_classes}")
    return int(num_classes)


def _as_float(x: Any) -> jax.Array:
    """Array in a float dtype of at least 32 bits (half precision is too coarse for these sums)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def _check_finite(x: jax.Array, what: str) -> None:
    if not bool(_all_finite(x)):
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(x))))
        raise ValueError(f"{what} contain {bad} non-finite value(s) (NaN or inf)")


def _check_labels(y: Any, n: int, num_classes: int, *, require_all: bool = True) -> np.ndarray:
    """Checks labels and returns the per-class counts (host NumPy)."""
    y_np = np.asarray(y)
    if y_np.ndim != 1:
        raise ValueError(f"labels y must have shape (N,), got shape {y_np.shape}")
    if y_np.shape[0] != n:
        raise ValueError(f"shape mismatch: labels y have {y_np.shape[0]} entries but features h have N={n} rows")
    if not np.issubdtype(y_np.dtype, np.integer):
        raise ValueError(f"labels y must be integers, got dtype {y_np.dtype}")
    if n:
        lo, hi = int(y_np.min()), int(y_np.max())
        if lo < 0 or hi >= num_classes:
            bad = np.unique(y_np[(y_np < 0) | (y_np >= num_classes)])
            raise ValueError(
                f"labels outside [0, {num_classes}) (num_classes={num_classes}): found {bad[:10].tolist()}"
            )
    counts = np.bincount(y_np.astype(np.int64), minlength=num_classes)
    if require_all:
        _check_counts(counts)
    return counts


def _check_counts(counts: np.ndarray) -> None:
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        listed = ", ".join(str(c) for c in empty[:10]) + (", ..." if empty.size > 10 else "")
        raise ValueError(
            f"class {int(empty[0])} has no sample (empty classes: {listed}); every class in "
            f"[0, num_classes) needs at least one sample for class means to exist"
        )


def _check_features(h: jax.Array, what: str = "features h") -> tuple[int, int]:
    if h.ndim != 2:
        raise ValueError(
            f"{what} must have shape (N, d), got shape {tuple(h.shape)} "
            "(use jax.vmap for a leading run axis)"
        )
    n, d = h.shape
    if n == 0 or d == 0:
        raise ValueError(f"{what} must be non-empty, got shape {tuple(h.shape)}")
    _check_finite(h, what)
    return n, d


def _check_weights(W: jax.Array, num_classes: int, d: int) -> None:
    if W.ndim != 2 or W.shape != (num_classes, d):
        raise ValueError(
            f"W shape mismatch: expected (num_classes, d) = ({num_classes}, {d}), got {tuple(W.shape)} "
            "(rows are the class weight vectors w_c; logits = h @ W.T)"
        )
    _check_finite(W, "weights W")


def _check_logits(logits: jax.Array, n: int, num_classes: int) -> None:
    if logits.ndim != 2 or logits.shape != (n, num_classes):
        raise ValueError(
            f"logits shape mismatch: expected (N, num_classes) = ({n}, {num_classes}), got {tuple(logits.shape)}"
        )
    _check_finite(logits, "logits")


def _prepare(h, y, num_classes, W=None, logits=None):
    """Converts inputs and, when all of them are concrete, validates them."""
    C = _check_num_classes(num_classes)
    traced = any(_is_tracer(a) for a in (h, y, W, logits) if a is not None)
    h = _as_float(h)
    y = jnp.asarray(y)
    W = None if W is None else _as_float(W)
    logits = None if logits is None else _as_float(logits)
    if not traced:
        n, d = _check_features(h)
        _check_labels(y, n, C)
        if W is not None:
            _check_weights(W, C, d)
        if logits is not None:
            _check_logits(logits, n, C)
    return h, y, C, W, logits


# ----------------------------------------------------------------------------------------------
# Traced building blocks
# ----------------------------------------------------------------------------------------------


def _safe_div(num, den):
    """num / den where den != 0, else 0 (the documented value for degenerate denominators)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _normalize_rows(x):
    """Unit rows and a mask of non-zero rows.

    Rows are first divided by their max |entry| so that squaring can neither overflow nor underflow
    (a row of 1e-25 entries is a valid direction even though its squared norm is 0 in float32).
    """
    amax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    nonzero = amax > 0
    v = x / jnp.where(nonzero, amax, 1)
    nrm = jnp.linalg.norm(v, axis=-1, keepdims=True)  # >= 1 on non-zero rows
    return v / jnp.where(nonzero, nrm, 1), nonzero[..., 0]


def _cosine_gram(V):
    """(K, K) cosines of the rows of V; rows of zero norm get cosine 0 with everything."""
    U, _ = _normalize_rows(V)
    return jnp.clip(_mm(U, U.T), -1.0, 1.0)


def _mm(a, b):
    # Full float32 matmuls: on GPUs the default precision may be TF32 (10-bit mantissa), which would
    # dominate the error of NC1 projections and of NCC distances.
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _segsum(x, y, C):
    return jax.ops.segment_sum(x, y, num_segments=C)


def _offdiag_mask(C):
    return ~jnp.eye(C, dtype=bool)


class _Stats1(NamedTuple):
    """First-pass sufficient statistics (additive over batches, see :func:`_merge1`)."""

    counts: jax.Array  # (C,)     N_c
    ref: jax.Array  # (C, d)   per-class shift r_c: the first sample seen of class c
    seen: jax.Array  # (C,)     bool, class c has a shift already
    shifted_sums: jax.Array  # (C, d)   sum_{i in c} (h_i - r_c)
    unit_sums: jax.Array  # (C, d)   sum_{i in c, h_i != 0} h_i / ||h_i||
    unit_counts: jax.Array  # (C,)     number of non-zero rows of class c


def _class_refs(h, y, C, ref=None, seen=None):
    """Per-class shift r_c = first sample of class c (from an earlier batch once one was seen).

    Summing ``h_i - r_c`` instead of ``h_i`` makes the float32 rounding of the class mean scale with
    the within-class spread instead of ``||mu_c||``: a collapsed class gets its mean exactly, so
    ``h_i - mu_c`` is exactly 0 (NC1, CDNV = 0) however large the features are.
    """
    n = h.shape[0]
    first = jax.ops.segment_min(jnp.arange(n), y, num_segments=C)  # int max for absent classes
    present = first < n
    batch_ref = jnp.take(h, jnp.clip(first, 0, n - 1), axis=0)
    if ref is None:
        return batch_ref, present
    return jnp.where(seen[:, None], ref, batch_ref), seen | present


def _stats1(h, y, C, ref=None, seen=None) -> _Stats1:
    ref, seen = _class_refs(h, y, C, ref, seen)
    u, nonzero = _normalize_rows(h)
    return _Stats1(
        counts=_segsum(jnp.ones(y.shape, jnp.int32), y, C),
        ref=ref,
        seen=seen,
        shifted_sums=_segsum(h - jnp.take(ref, y, axis=0), y, C),
        unit_sums=_segsum(u, y, C),
        unit_counts=_segsum(nonzero.astype(jnp.int32), y, C),
    )


@jax.jit
def _merge1(acc: _Stats1, inc: _Stats1) -> _Stats1:
    """Adds the statistics of a new batch, computed with ``acc``'s shifts (``inc.ref`` extends them;
    a class first seen in this batch had zero count and sums before, so its new shift is consistent)."""
    return _Stats1(
        counts=acc.counts + inc.counts,
        ref=inc.ref,
        seen=inc.seen,
        shifted_sums=acc.shifted_sums + inc.shifted_sums,
        unit_sums=acc.unit_sums + inc.unit_sums,
        unit_counts=acc.unit_counts + inc.unit_counts,
    )


class _Geometry(NamedTuple):
    means: jax.Array  # (C, d)
    global_mean: jax.Array  # (d,)
    centered: jax.Array  # (C, d)  M, rows mu_c - mu_G
    basis: jax.Array  # (k, d)  top-k right singular vectors of M, k = min(C-1, d)
    inv_sv: jax.Array  # (k,)    1/s_j on the kept directions, 0 on numerically-null ones


def _means_from(counts, ref, shifted_sums):
    # max(., 1): under jit an empty class (untrusted input) gives a finite mean instead of NaN.
    return ref + shifted_sums / jnp.maximum(counts, 1).astype(shifted_sums.dtype)[:, None]


def _geometry(counts, ref, shifted_sums, C) -> _Geometry:
    means = _means_from(counts, ref, shifted_sums)
    mu_g = jnp.mean(means, axis=0)
    M = means - mu_g
    # Sigma_B = M^T M / C has rank <= C-1 (rows of M sum to 0). Working with the thin SVD of the
    # (C, d) matrix M instead of a d x d pseudo-inverse avoids both the d^2 cost and the float32
    # rounding-noise eigenvalues that a default-cutoff pinv would invert (NC1 ~ 1e7 instead of 1e-3).
    _, s, vt = jnp.linalg.svd(M, full_matrices=False)
    k = min(C - 1, M.shape[1])
    s, vt = s[:k], vt[:k]
    # Keep exactly the top k = C-1 directions; among them, drop only directions that are zero to
    # float rounding: class means genuinely spanning fewer than C-1 dimensions, where the
    # pseudo-inverse of the true lower-rank Sigma_B has no component. The entries of M carry
    # rounding of order eps * ||mu_c||, hence that term in the noise floor.
    scale = jnp.maximum(s[0], jnp.max(_row_norms(means)))
    keep = s > scale * (C * jnp.finfo(M.dtype).eps)
    inv_sv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1), 0)
    return _Geometry(means, mu_g, M, vt, inv_sv)


def _ncc_scores(h, geom):
    # argmin_c ||h - mu_c||^2 = argmin_c ||m_c||^2 - 2 <h - mu_G, m_c>: centering by mu_G first keeps
    # float32 cancellation at the scale of the class spread rather than of ||mu_c||.
    hc = h - geom.global_mean
    M = geom.centered
    return jnp.sum(M * M, axis=1) - 2.0 * _mm(hc, M.T)


class _Stats2(NamedTuple):
    """Second-pass sufficient statistics (additive over batches); need the geometry of pass 1."""

    counts: jax.Array  # (C,) N_c again, to check that both passes saw the same data
    proj_sq: jax.Array  # (k,) sum_i <v_j, h_i - mu_{y_i}>^2
    within_sq: jax.Array  # (C,) sum_{i in c} ||h_i - mu_c||^2
    ncc_correct: jax.Array  # ()  number of samples whose nearest class mean is their own
    nc4_mismatch: jax.Array  # () number of samples where argmax(logits) != nearest class mean


def _stats2(h, y, geom: _Geometry, C, logits=None) -> _Stats2:
    r = h - jnp.take(geom.means, y, axis=0)
    q = _mm(r, geom.basis.T)
    pred = jnp.argmin(_ncc_scores(h, geom), axis=1)
    if logits is None:
        mismatch = jnp.zeros((), jnp.int32)
    else:
        mismatch = jnp.sum(jnp.argmax(logits, axis=1) != pred, dtype=jnp.int32)
    return _Stats2(
        counts=_segsum(jnp.ones(y.shape, jnp.int32), y, C),
        proj_sq=jnp.sum(q * q, axis=0),
        within_sq=_segsum(jnp.sum(r * r, axis=1), y, C),
        ncc_correct=jnp.sum(pred == y, dtype=jnp.int32),
        nc4_mismatch=mismatch,
    )


def _cos_matrix_from(unit_sums, unit_counts):
    ubar = unit_sums / jnp.maximum(unit_counts, 1).astype(unit_sums.dtype)[:, None]
    # Lemma 2.4.4: the average of cos over all ordered pairs (i, j) of two classes equals the inner
    # product of the classes' mean unit vectors.
    return jnp.clip(_mm(ubar, ubar.T), -1.0, 1.0)


def _cos_summary(G, C):
    off = _offdiag_mask(C)
    intra = jnp.diag(G)
    return {
        "min_intra": jnp.min(intra),
        "max_inter": jnp.max(jnp.where(off, G, -jnp.inf)),
        "mean_intra": jnp.mean(intra),
        "mean_inter": jnp.sum(jnp.where(off, G, 0)) / (C * (C - 1)),
    }


def _nc1_from(proj_sq, inv_sv, n):
    # tr(Sigma_W Sigma_B^+)/C = (1/N) sum_j sum_i <v_j, h_i - mu_{y_i}>^2 / s_j^2 ; dividing twice by
    # s_j (instead of by s_j^2) postpones overflow for tiny kept singular values.
    return jnp.sum((proj_sq * inv_sv) * inv_sv) / n


def _std(x, ddof):
    n = x.shape[0]
    mean = jnp.mean(x)
    return jnp.sqrt(jnp.sum((x - mean) ** 2) / max(n - ddof, 1))


def _nc2_from(V, C):
    """Equinorm, equiangularity and max-angle of the rows of V (C, d)."""
    norms = _row_norms(V)
    equinorm = _safe_div(_std(norms, 1), jnp.mean(norms))
    G = _cosine_gram(V)
    iu = np.triu_indices(C, k=1)
    pair_cos = G[iu]  # each unordered pair c < c' once
    off = _offdiag_mask(C)
    return {
        "equinorm": equinorm,
        "equiangular": _std(pair_cos, 1),
        "maxangle": jnp.sum(jnp.where(off, jnp.abs(G + 1.0 / (C - 1)), 0)) / (C * (C - 1)),
    }


def _row_norms(V):
    # Scaled norm: ||v|| = a ||v / a|| with a = max|v_k|, robust to over/underflow of the squares.
    amax = jnp.max(jnp.abs(V), axis=-1)
    scaled = V / jnp.where(amax > 0, amax, 1)[..., None]
    return amax * jnp.linalg.norm(scaled, axis=-1)


def _fro_normalize(X):
    n = _row_norms(X.reshape(1, -1))[0]
    return X / jnp.where(n > 0, n, 1)


def _nc3_from(W, means, M):
    diff = _fro_normalize(W) - _fro_normalize(M)
    Wn, _ = _normalize_rows(W)
    Hn, _ = _normalize_rows(means)
    cos = jnp.clip(jnp.sum(Wn * Hn, axis=1), -1.0, 1.0)
    return {"nc3": jnp.sum(diff * diff), "cos": cos, "min_cos": jnp.min(cos), "mean_cos": jnp.mean(cos)}


def _cdnv_from(within_sq, counts, M, C):
    var = within_sq / jnp.maximum(counts, 1).astype(within_sq.dtype)
    sq = jnp.sum(M * M, axis=1)
    dist2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * _mm(M, M.T), 0.0)
    num = var[:, None] + var[None, :]
    # Coinciding means: the ratio is +inf unless both classes also have zero variance (0/0 := 0).
    ratio = jnp.where(dist2 > 0, num / (2.0 * jnp.where(dist2 > 0, dist2, 1)), jnp.where(num > 0, jnp.inf, 0.0))
    off = _offdiag_mask(C)
    return jnp.sum(jnp.where(off, ratio, 0)) / (C * (C - 1))


def _report_from(s1: _Stats1, geom: _Geometry, s2: _Stats2, C, W=None, has_logits=False):
    n = jnp.sum(s1.counts).astype(geom.means.dtype)
    out = _cos_summary(_cos_matrix_from(s1.unit_sums, s1.unit_counts), C)
    out["nc1"] = _nc1_from(s2.proj_sq, geom.inv_sv, n)
    for key, val in _nc2_from(geom.centered, C).items():
        out[f"nc2_{key}"] = val
    out["ncc_accuracy"] = s2.ncc_correct.astype(n.dtype) / n
    out["cdnv"] = _cdnv_from(s2.within_sq, s1.counts, geom.centered, C)
    if W is not None:
        r3 = _nc3_from(W, geom.means, geom.centered)
        out["nc3"], out["nc3_min_cos"], out["nc3_mean_cos"] = r3["nc3"], r3["min_cos"], r3["mean_cos"]
        for key, val in _nc2_from(W, C).items():
            out[f"nc2_{key}_weights"] = val
    if has_logits:
        out["nc4"] = s2.nc4_mismatch.astype(n.dtype) / n
    return out


def _report_impl(h, y, num_classes, W=None, logits=None):
    C = num_classes
    s1 = _stats1(h, y, C)
    geom = _geometry(s1.counts, s1.ref, s1.shifted_sums, C)
    s2 = _stats2(h, y, geom, C, logits)
    return _report_from(s1, geom, s2, C, W, logits is not None)


_static_C = functools.partial(jax.jit, static_argnames=("num_classes",))


@_static_C
def _class_means_jit(h, y, num_classes):
    return _means_from(*_shifted_sums(h, y, num_classes))


def _shifted_sums(h, y, C):
    ref, _ = _class_refs(h, y, C)
    counts = _segsum(jnp.ones(y.shape, jnp.int32), y, C)
    return counts, ref, _segsum(h - jnp.take(ref, y, axis=0), y, C)


@functools.partial(jax.jit, static_argnames=("num_classes", "center"))
def _cosine_jit(h, y, num_classes, center):
    if center:
        h = h - jnp.mean(_class_means_jit(h, y, num_classes), axis=0)
    u, nonzero = _normalize_rows(h)
    return _cos_matrix_from(_segsum(u, y, num_classes), _segsum(nonzero.astype(jnp.int32), y, num_classes))


def _geometry_of(h, y, C):
    counts, ref, sums = _shifted_sums(h, y, C)
    return counts, _geometry(counts, ref, sums, C)


@_static_C
def _nc1_jit(h, y, num_classes):
    counts, geom = _geometry_of(h, y, num_classes)
    q = _mm(h - jnp.take(geom.means, y, axis=0), geom.basis.T)
    return _nc1_from(jnp.sum(q * q, axis=0), geom.inv_sv, h.shape[0])


@_static_C
def _nc2_jit(h, y, num_classes, W=None):
    _, geom = _geometry_of(h, y, num_classes)
    out = _nc2_from(geom.centered, num_classes)
    if W is not None:
        out.update({f"{k}_weights": v for k, v in _nc2_from(W, num_classes).items()})
    return out


@_static_C
def _nc3_jit(h, y, W, num_classes):
    _, geom = _geometry_of(h, y, num_classes)
    return _nc3_from(W, geom.means, geom.centered)


@_static_C
def _ncc_predict_jit(h, y, num_classes):
    _, geom = _geometry_of(h, y, num_classes)
    return jnp.argmin(_ncc_scores(h, geom), axis=1)


@_static_C
def _cdnv_jit(h, y, num_classes):
    counts, geom = _geometry_of(h, y, num_classes)
    r = h - jnp.take(geom.means, y, axis=0)
    return _cdnv_from(_segsum(jnp.sum(r * r, axis=1), y, num_classes), counts, geom.centered, num_classes)


_report_jit = _static_C(_report_impl)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def class_means(h, y, num_classes: int) -> jax.Array:
    """Class means ``mu_c = (1/N_c) sum_{i: y_i = c} h_i``.

    Args:
      h: features (N, d).  y: labels (N,) in [0, C).  num_classes: C (static int >= 2).
    Returns:
      (C, d) array, row c = mu_c.
    """
    h, y, C, _, _ = _prepare(h, y, num_classes)
    return _class_means_jit(h, y, num_classes=C)


def cosine_similarity_matrix(h, y, num_classes: int, center: bool = False) -> jax.Array:
    """Average intra-/inter-class cosine similarities (thesis Sec. 2.2, "Neural Collapse Measures").

    ``G[c, c] = intra_c  = (1/N_c^2)      sum_{i, j in c}            cos(h_i, h_j)``,
    ``G[c, c'] = inter_cc' = (1/(N_c N_c')) sum_{i in c, j in c'}    cos(h_i, h_j)``,
    averages over ALL ordered pairs (i = j included). By Lemma 2.4.4 of the thesis these equal
    ``<u_c, u_c'>`` with ``u_c`` the mean of the unit vectors ``h_i / ||h_i||`` of class c, which is
    how they are computed: ``O(N d + C^2 d)``, never pairwise. Zero-norm rows are skipped (the averages
    run over non-zero rows; ``N_c`` counts non-zero rows only; an all-zero class gives a zero row and
    column). Values are clipped to [-1, 1] against rounding.

    Args:
      h: features (N, d).  y: labels (N,).  num_classes: C (static int).
      center: if True, subtract the global mean ``mu_G`` (unweighted mean of class means) first.
    Returns:
      (C, C) symmetric array G.
    """
    h, y, C, _, _ = _prepare(h, y, num_classes)
    return _cosine_jit(h, y, num_classes=C, center=bool(center))


def nc1(h, y, num_classes: int) -> jax.Array:
    """NC1 (variability collapse): ``tr(Sigma_W Sigma_B^+) / C`` (Papyan et al. 2020, Fig. 6).

    ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``,
    ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T = M^T M / C``.
    ``Sigma_B^+`` is the pseudo-inverse restricted to the top ``C-1`` eigen-directions of ``Sigma_B``
    (its rank is at most C-1; a default-cutoff pinv in float32 inverts rounding noise). With the
    thin SVD ``M = U S V^T`` (C x d, no d x d matrix) and ``k = min(C-1, d)``:

    ``NC1 = (1/N) sum_{j<k} (1/s_j^2) sum_i <v_j, h_i - mu_{y_i}>^2``.

    Directions whose singular value is zero to rounding (``s_j <= C eps max(s_0, max_c ||mu_c||)``,
    eps the float epsilon; only when the class means span fewer than C-1 dimensions) are dropped,
    i.e. the pseudo-inverse of the true rank is used. Class means are accumulated relative to the
    first sample of each class, so an exactly collapsed class contributes exactly 0.
    The result is 0 for perfectly collapsed classes, invariant to scaling, rotation and relabeling.

    Args:  h (N, d), y (N,), num_classes C.
    Returns: scalar.
    """
    h, y, C, _, _ = _prepare(h, y, num_classes)
    return _nc1_jit(h, y, num_classes=C)


def nc2(h, y, num_classes: int, W=None) -> dict[str, jax.Array]:
    """NC2 (convergence to a simplex ETF), as in Papyan et al. 2020 (Figs. 2-4).

    With ``m_c = mu_c - mu_G`` (rows of M):

    * ``equinorm   = std_c ||m_c|| / mean_c ||m_c||``
    * ``equiangular = std_{c < c'} cos(m_c, m_c')``
    * ``maxangle   = mean_{c != c'} |cos(m_c, m_c') + 1/(C-1)|``

    ``std`` is the unbiased (ddof=1) standard deviation, as ``torch.std`` in Papyan et al.'s code;
    equiangularity takes each unordered pair once. Zero-norm vectors have cosine 0 with everything,
    and ``equinorm = 0`` if all norms are 0. A simplex ETF gives 0 for all three.

    Args:
      h (N, d), y (N,), num_classes C.
      W: optional (C, d) classifier weights; then the same three measures of its rows ``w_c``
        (uncentered, as in Papyan et al.) are added as ``equinorm_weights``, ``equiangular_weights``,
        ``maxangle_weights``.
    Returns:
      dict of scalars.
    """
    h, y, C, W, _ = _prepare(h, y, num_classes, W=W)
    return _nc2_jit(h, y, num_classes=C, W=W)


def nc3(h, y, W, num_classes: int) -> dict[str, jax.Array]:
    """NC3 (self-duality of classifier and class means).

    * ``nc3 = || W/||W||_F - M/||M||_F ||_F^2`` (Papyan et al. 2020, Fig. 5; M rows ``mu_c - mu_G``);
    * ``cos[c] = cos(w_c, mu_c)`` with the uncentered class mean (thesis Sec. 2.2, NC3 item:
      ``cos(w_c, h~_c) = 1``), ``min_cos = min_c cos[c]``, ``mean_cos = mean_c cos[c]``.

    Args:  h (N, d), y (N,), W (C, d), num_classes C.
    Returns: dict with scalars ``nc3``, ``min_cos``, ``mean_cos`` and the (C,) array ``cos``.
    """
    h, y, C, W, _ = _prepare(h, y, num_classes, W=W)
    if W is None:
        raise ValueError("nc3 needs the classifier weights W of shape (num_classes, d)")
    return _nc3_jit(h, y, W, num_classes=C)


def ncc_predict(h, y, num_classes: int) -> jax.Array:
    """Nearest-class-center predictions ``argmin_c ||h_i - mu_c||`` (Euclidean; ties -> lowest c).

    The class means are those of ``(h, y)``. Returns (N,) int array.
    """
    h, y, C, _, _ = _prepare(h, y, num_classes)
    return _ncc_predict_jit(h, y, num_classes=C)


def ncc_accuracy(h, y, num_classes: int) -> jax.Array:
    """Accuracy of the nearest-class-mean rule on ``(h, y)`` (Papyan et al. NC4; Galanti et al. 2022).

    ``(1/N) sum_i [argmin_c ||h_i - mu_c|| == y_i]``; ``1 - ncc_accuracy`` is the NCC error
    ``err_S(h_i)`` of Definition 3.2.2 (effective depth). Returns a scalar in [0, 1].
    """
    h, y, C, _, _ = _prepare(h, y, num_classes)
    return jnp.mean(_ncc_predict_jit(h, y, num_classes=C) == y)


def nc4(h, y, logits, num_classes: int) -> jax.Array:
    """NC4 (convergence to NCC): fraction of samples with ``argmax_c logits_ic != argmin_c ||h_i - mu_c||``.

    (Papyan et al. 2020, Fig. 7, "proportion mismatch from NCC".) logits: (N, C). Returns a scalar.
    """
    h, y, C, _, logits = _prepare(h, y, num_classes, logits=logits)
    if logits is None:
        raise ValueError("nc4 needs logits of shape (N, num_classes)")
    return jnp.mean(jnp.argmax(logits, axis=1) != _ncc_predict_jit(h, y, num_classes=C))


def cdnv(h, y, num_classes: int) -> jax.Array:
    """Class-distance normalized variance (Galanti, Gyorgy & Hutter 2022, "On the role of neural
    collapse in transfer learning", ICLR), averaged over ordered pairs of distinct classes:

    ``CDNV = mean_{c != c'} (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2)``,
    ``Var_c = (1/N_c) sum_{i in c} ||h_i - mu_c||^2``.

    (Squared distance in the denominator, as in Galanti et al.; some later papers use the 4th
    power.) A pair with coinciding means contributes +inf, or 0 if both variances are 0 too.
    Returns a scalar.
    """
    h, y, C, _, _ = _prepare(h, y, num_classes)
    return _cdnv_jit(h, y, num_classes=C)


def collapse_report(h, y, num_classes: int, W=None, logits=None) -> dict[str, jax.Array]:
    """All NC measures in one jitted call; a flat dict of scalars (vmappable over a run axis).

    Keys (see the individual functions for formulas and sources):

    * ``min_intra``, ``mean_intra``: min / mean over c of ``intra_c`` (thesis, Sec. 2.2; uncentered
      features, zero rows skipped); ``max_inter``, ``mean_inter``: max / mean over c != c' of
      ``inter_cc'`` (see :func:`cosine_similarity_matrix`);
    * ``nc1``: :func:`nc1`;
    * ``nc2_equinorm``, ``nc2_equiangular``, ``nc2_maxangle``: :func:`nc2` of the centered means;
    * ``ncc_accuracy``: :func:`ncc_accuracy`;  ``cdnv``: :func:`cdnv`;
    * with ``W`` (C, d): ``nc3``, ``nc3_min_cos``, ``nc3_mean_cos`` (:func:`nc3`) and
      ``nc2_equinorm_weights``, ``nc2_equiangular_weights``, ``nc2_maxangle_weights``;
    * with ``logits`` (N, C): ``nc4`` (:func:`nc4`).

    Inputs are validated when concrete; under ``jax.jit`` / ``jax.vmap`` / ``lax.scan`` they are
    trusted (see the module docstring). Example, over a leading run axis::

        jax.vmap(lambda h, y: collapse_report(h, y, 10))(h_runs, y_runs)
    """
    h, y, C, W, logits = _prepare(h, y, num_classes, W=W, logits=logits)
    return _report_jit(h, y, num_classes=C, W=W, logits=logits)


@_static_C
def _layerwise_jit(features, y, num_classes):
    reports = [_report_impl(h, y, num_classes) for h in features]
    return {k: jnp.stack([r[k] for r in reports]) for k in reports[0]}


def layerwise(features: Sequence[Any], y, num_classes: int) -> dict[str, jax.Array]:
    """:func:`collapse_report` (``REPORT_KEYS``, no W / logits terms) of every layer, stacked.

    Args:
      features: sequence of L arrays ``(N, d_l)``; ``d_l`` may differ between layers.
      y: labels (N,), shared by all layers.  num_classes: C.
    Returns:
      dict key -> (L,) array (index l = layer l of ``features``). ``1 - out["ncc_accuracy"]``
      feeds :func:`effective_depth`.
    """
    if not isinstance(features, (tuple, list)) or len(features) == 0:
        raise ValueError("features must be a non-empty tuple or list of (N, d_l) arrays, one per layer")
    C = _check_num_classes(num_classes)
    traced = any(_is_tracer(a) for a in (*features, y))
    feats = tuple(_as_float(f) for f in features)
    y = jnp.asarray(y)
    if not traced:
        n = None
        for l, f in enumerate(feats):
            n_l, _ = _check_features(f, what=f"features of layer {l}")
            if n is not None and n_l != n:
                raise ValueError(f"shape mismatch: layer {l} has {n_l} rows but layer 0 has {n}")
            n = n_l
        _check_labels(y, n, C)
    return _layerwise_jit(feats, y, num_classes=C)


def effective_depth(ncc_errors, eps) -> jax.Array:
    """epsilon-effective depth (thesis Definition 3.2.2, after Galanti et al. 2022).

    The minimal 1-based layer index ``i`` in ``[1, L]`` with ``ncc_errors[..., i-1] <= eps``, and ``L``
    if there is none.

    Args:
      ncc_errors: (..., L) NCC errors per layer (``1 - ncc_accuracy``), e.g. ``1 - layerwise(...)[
        "ncc_accuracy"]``; leading axes (runs) are batched, so it is vmappable as is.
      eps: threshold, scalar or broadcastable to ``ncc_errors.shape[:-1]``.
    Returns:
      int32 array of shape ``ncc_errors.shape[:-1]``.
    """
    if not _is_tracer(ncc_errors):
        shape = np.shape(ncc_errors)
        if len(shape) == 0 or shape[-1] == 0:
            raise ValueError(f"ncc_errors must have shape (..., L) with L >= 1, got shape {shape}")
    e = jnp.asarray(ncc_errors)
    L = e.shape[-1]
    hit = e <= jnp.asarray(eps)[..., None]
    first = jnp.argmax(hit, axis=-1).astype(jnp.int32) + 1
    return jnp.where(jnp.any(hit, axis=-1), first, jnp.int32(L))


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------



@_static_C
def _stats1_jit(h, y, ref, seen, num_classes):
    return _stats1(h, y, num_classes, ref, seen)



@_static_C
def _stats2_jit(h, y, geom, num_classes, logits=None):
    return _stats2(h, y, geom, num_classes, logits)


_geometry_jit = _static_C(lambda counts, ref, sums, num_classes: _geometry(counts, ref, sums, num_classes))


@functools.partial(jax.jit, static_argnames=("num_classes", "has_logits"))
def _report_from_jit(s1, geom, s2, num_classes, W=None, has_logits=False):
    return _report_from(s1, geom, s2, num_classes, W, has_logits)


@jax.jit
def _add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _tree_add(a, b):
    return b if a is None else _add(a, b)


def _unpack_batch(batch, num_classes, d, idx, pass_no):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"batch {idx} (pass {pass_no}) must be a tuple (h, y) or (h, y, logits)")
    h = _as_float(batch[0])
    y = jnp.asarray(batch[1])
    logits = None if len(batch) == 2 or batch[2] is None else _as_float(batch[2])
    n, d_b = _check_features(h, what=f"features h of batch {idx}")
    if d is not None and d_b != d:
        raise ValueError(f"shape mismatch: batch {idx} has feature dimension {d_b}, earlier batches {d}")
    _check_labels(y, n, num_classes, require_all=False)
    if logits is not None:
        _check_logits(logits, n, num_classes)
    return h, y, logits, d_b


def collapse_report_streaming(
    batches_fn: Callable[[], Iterable[Any]], num_classes: int, W=None
) -> dict[str, jax.Array]:
    """:func:`collapse_report` for data given as batches, in ``O(C d)`` memory (two passes).

    Args:
      batches_fn: called twice; each call must return a fresh iterable over the SAME batches
        ``(h_b, y_b)`` or ``(h_b, y_b, logits_b)`` (h_b (B, d), y_b (B,), logits_b (B, C); B may
        vary). Pass 1 accumulates per-class counts, feature sums and unit-vector sums (cosines);
        pass 2, given the class means and the SVD basis of M, accumulates the NC1 projections,
        the within-class sums of squares (CDNV), NCC hits and, if logits are present, NC4 mismatches.
      num_classes: C.  W: optional (C, d) classifier weights.
    Returns:
      the same dict as ``collapse_report(h, y, C, W, logits)`` on the concatenated data (``nc4``
      only if every batch carries logits), equal up to float rounding.

    Every batch is validated (this function is not meant to be traced); each pass is jitted per
    batch shape, so keep B fixed (a ragged last batch costs one extra compilation).
    """
    C = _check_num_classes(num_classes)
    s1, d = None, None
    for idx, batch in enumerate(batches_fn()):
        h, y, _, d = _unpack_batch(batch, C, d, idx, 1)
        if s1 is None:
            inc = _stats1_jit(h, y, jnp.zeros((C, d), h.dtype), jnp.zeros((C,), bool), num_classes=C)
            s1 = inc
        else:
            s1 = _merge1(s1, _stats1_jit(h, y, s1.ref, s1.seen, num_classes=C))
    if s1 is None:
        raise ValueError("batches_fn() yielded no batch")
    counts1 = np.asarray(s1.counts)
    _check_counts(counts1.astype(np.int64))
    if W is not None:
        W = _as_float(W)
        _check_weights(W, C, d)
    geom = _geometry_jit(s1.counts, s1.ref, s1.shifted_sums, num_classes=C)

    s2, with_logits = None, []
    for idx, batch in enumerate(batches_fn()):
        h, y, logits, _ = _unpack_batch(batch, C, d, idx, 2)
        with_logits.append(logits is not None)
        s2 = _tree_add(s2, _stats2_jit(h, y, geom, num_classes=C, logits=logits))
    if s2 is None or not np.array_equal(np.asarray(s2.counts), counts1):
        raise ValueError(
            "the two passes saw different data: batches_fn() must return a fresh iterator over the "
            "same batches on every call"
        )
    has_logits = all(with_logits)
    if any(with_logits) and not has_logits:
        raise ValueError("either every batch or no batch must carry logits")
    return _report_from_jit(s1, geom, s2, num_classes=C, W=W, has_logits=has_logits)
