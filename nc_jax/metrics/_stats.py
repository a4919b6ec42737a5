"""Sufficient statistics and class-mean geometry behind :mod:`nc_jax.metrics` (traced code only).

All NC measures are functions of two additive passes over the data:

* pass 1 (:class:`Stats1`): per-class counts ``N_c``, feature sums and sums of unit vectors;
* the class-mean geometry (:class:`Geometry`): ``mu_c``, ``mu_G``, ``M`` and the thin SVD of ``M``;
* pass 2 (:class:`Stats2`, needs the geometry): NC1 projections, within-class sums of squares, NCC
  hits and NC4 mismatches.

Additivity is what lets :func:`nc_jax.metrics.collapse_report_streaming` run in ``O(C d)`` memory.
The features passed here are already brought to ``max|h| in [1, 2)`` by one exact power of two
(:mod:`nc_jax.metrics._scale`), so no squared norm below over- or underflows because of the scale of
the data; directions (cosines, argmax of logits) use one exact power of two per row instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nc_jax.metrics._scale import EMPTY_EXP, ldexp, row_exponents


def safe_div(num, den):
    """num / den where den != 0, else 0 (the documented value for degenerate denominators)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def normalize_rows(x, exps=None):
    """Unit rows ``(..., K)`` and a mask of non-zero rows.

    A direction does not depend on the row's scale, so each row is first brought to
    ``max|.| in [1, 2)`` by its own exact power of two (``exps``: :func:`row_exponents` of ``x`` if
    already computed): squaring can then neither overflow nor underflow (a row of 1e-25 entries is a
    valid direction although its squared norm is 0 in float32), and a row far smaller than the
    others, even subnormal, keeps its direction exactly.
    """
    exps = row_exponents(x) if exps is None else exps
    nonzero = exps != EMPTY_EXP
    v = ldexp(x, -exps)
    nrm = jnp.linalg.norm(v, axis=-1, keepdims=True)  # >= 1 on non-zero rows
    return v / jnp.where(nonzero, nrm, 1), nonzero[..., 0]


def divide_rows(x):
    """Unit rows and non-zero mask of an array computed at unit scale (M, class means), whose
    entries are normal floats or 0: dividing by the row max keeps the squares in range, which is
    all these need (cheaper to compile than :func:`normalize_rows`)."""
    amax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    nonzero = amax > 0
    v = x / jnp.where(nonzero, amax, 1)
    nrm = jnp.linalg.norm(v, axis=-1, keepdims=True)  # >= 1 on non-zero rows
    return v / jnp.where(nonzero, nrm, 1), nonzero[..., 0]


def row_norms(V):
    # Scaled norm: ||v|| = a ||v / a|| with a = max|v_k|, robust to over/underflow of the squares.
    amax = jnp.max(jnp.abs(V), axis=-1)
    scaled = V / jnp.where(amax > 0, amax, 1)[..., None]
    return amax * jnp.linalg.norm(scaled, axis=-1)


def fro_normalize(X):
    n = row_norms(X.reshape(1, -1))[0]
    return X / jnp.where(n > 0, n, 1)


def cosine_gram(U):
    """(K, K) cosines from unit rows U (zero rows: cosine 0 with everything)."""
    return jnp.clip(mm(U, U.T), -1.0, 1.0)


def mm(a, b):
    # Full float32 matmuls: on GPUs the default precision may be TF32 (10-bit mantissa), which would
    # dominate the error of NC1 projections and of NCC distances.
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


#: Row counts up to which :func:`segsum` is XLA's plain (sequential) ``segment_sum``, whose
#: numbers earlier results were computed with; beyond it the exact path below is taken.
PLAIN_MAX = 1 << 16


def segsum(x, y, C, plain_max=PLAIN_MAX):
    """Per-class sums ``(C, ...)`` of ``x`` (N, ...) for labels ``y`` (N,).

    Integer ``x`` and ``N <= plain_max`` use ``segment_sum``. Its float sum is sequential: the
    error grows with the class size, and in float32 a sum of ones stops growing at ``2^24``. Larger
    float inputs go through :func:`exact_segsum` (result correct to about one rounding).
    """
    if x.shape[0] <= plain_max or not jnp.issubdtype(x.dtype, jnp.floating):
        return jax.ops.segment_sum(x, y, num_segments=C)
    flat = x.reshape(x.shape[0], -1)
    return exact_segsum(flat, y, C).reshape((C,) + x.shape[1:])


def colsum(x):
    """Column sums of x (N, m); exact as :func:`segsum` beyond ``PLAIN_MAX`` rows."""
    if x.shape[0] <= PLAIN_MAX:
        return jnp.sum(x, axis=0)
    return exact_segsum(x, jnp.zeros(x.shape[0], jnp.int32), 1)[0]


def chunk_rows(dtype) -> int:
    """Rows per chunk of :func:`chunk_class_sums`: ``2^L`` with ``L = min(11, (p+1)//2 - 1)``,
    ``p`` the mantissa bits (float32: 2048, bfloat16: 8)."""
    return 1 << min(11, (jnp.finfo(dtype).nmant + 1) // 2 - 1)


def step_rows(dtype, m) -> int:
    """Rows per step of a loop over chunks summing ``m`` columns: whole multiples ``G`` of
    :func:`chunk_rows` (``G`` a power of two), about 2^20 values a step, so that narrow data
    does not pay the loop's per-step cost 2^11 rows at a time."""
    k = chunk_rows(dtype)
    return k * max(1, 1 << max(0, ((1 << 20) // (k * max(m, 1))).bit_length() - 1))


def pairwise_sum(x):
    """Sum over axis 0 as a balanced tree (error ~ log2(n) roundings, not n)."""
    while x.shape[0] > 1:
        if x.shape[0] % 2:
            x = jnp.concatenate([x, jnp.zeros_like(x[:1])])
        x = x[0::2] + x[1::2]
    return x[0]


def chunk_class_sums(vals, y, C, split=True):
    """Per-class column sums (C, m) of ``vals`` (n, m), to about one rounding per
    :func:`chunk_rows` rows whatever the class size (any n; best a multiple of chunk_rows).

    Rows are taken in chunks of ``K = 2^L = chunk_rows`` rows. Within a chunk each column is split
    exactly as ``x = hi + lo``: ``hi`` rounded to a multiple of ``q = 2^(E - s)`` (``|x| < 2^E``
    over the chunk's column, ``s = p - L``, ``p`` mantissa bits), ``lo = x - hi``, ``|lo| <= q/2``.
    Any partial sum of ``hi`` is a multiple of ``q`` below ``2^(E+L)``, i.e. has at most ``p + 1``
    significant bits: ``segment_sum`` adds them without rounding. The sum of ``lo`` carries the
    sequential error, ``2^-s`` times smaller than a plain sum's (the error-free splitting of Ogita,
    Rump & Oishi 2005, "Accurate sum and dot product", SIAM J. Sci. Comput.). The chunks' sums
    then meet in a balanced tree. ``split=False`` skips the splitting: plain sums of ``K`` rows,
    relative error up to ``K eps`` (for checks that need no more).
    """
    fi = jnp.finfo(vals.dtype)
    K = chunk_rows(vals.dtype)
    s = fi.nmant - (K.bit_length() - 1)
    n, m = vals.shape
    G = -(-n // K)
    if G * K != n:  # zero rows add nothing
        vals = jnp.concatenate([vals, jnp.zeros((G * K - n, m), vals.dtype)])
        y = jnp.concatenate([y, jnp.zeros((G * K - n,), y.dtype)])
    ids = y + C * (jnp.arange(G * K, dtype=y.dtype) // K)
    if not split:
        return pairwise_sum(jax.ops.segment_sum(vals, ids, num_segments=G * C).reshape(G, C, m))
    v = vals.reshape(G, K, m)
    _, E = jnp.frexp(jnp.max(jnp.abs(v), axis=1, keepdims=True))
    # clamped so that q and 1/q are normal floats (a tiny or zero column then has hi = 0)
    E = jnp.clip(E, fi.minexp + s + 1, fi.maxexp - 1)
    one = jnp.ones((), vals.dtype)
    hi = (jnp.round(v * jnp.ldexp(one, s - E)) * jnp.ldexp(one, E - s)).reshape(G * K, m)
    lo = vals - hi
    part = (jax.ops.segment_sum(hi, ids, num_segments=G * C)
            + jax.ops.segment_sum(lo, ids, num_segments=G * C))
    return pairwise_sum(part.reshape(G, C, m))


def two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``a + b = s + e`` exactly (Knuth's TwoSum)."""
    s = a + b
    z = s - a
    return s, (a - (s - z)) + (b - z)


def comp_add(acc, v):
    """Compensated accumulation: ``acc = (sum, compensation)`` plus ``v``; the value is
    ``sum + compensation`` (Kahan-Babuska / Neumaier), so the error does not grow with the number
    of terms."""
    s, e = two_sum(acc[0], v)
    return s, acc[1] + e


def scan_rows(body, carry, xs, chunk):
    """``carry = body(carry, *chunk_of_each(xs))`` over consecutive row chunks of the arrays ``xs``
    (same leading length N): ``lax.scan`` over the full chunks (sliced in place, no copy of the
    inputs), then one call on the last ``N mod chunk`` rows."""
    n = xs[0].shape[0]
    full = n // chunk
    if full:
        def step(c, i):
            return body(c, *(jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk) for x in xs)), None

        carry, _ = jax.lax.scan(step, carry, jnp.arange(full))
    if n % chunk:
        carry = body(carry, *(x[full * chunk:] for x in xs))
    return carry


def exact_segsum(x, y, C):
    """Per-class sums (C, m) of ``x`` (N, m) in ``O(C m)`` extra memory (and one step's rows):
    steps of :func:`step_rows` rows summed by :func:`chunk_class_sums`, accumulated with
    :func:`comp_add`.
    The relative error stays about one float rounding at any N (float32: also past ``2^24``)."""
    zero = jnp.zeros((C, x.shape[1]), x.dtype)
    total, comp = scan_rows(lambda acc, xc, yc: comp_add(acc, chunk_class_sums(xc, yc, C)),
                            (zero, zero), (x, y), step_rows(x.dtype, x.shape[1]))
    return total + comp


def offdiag_mask(C):
    return ~jnp.eye(C, dtype=bool)


# ----------------------------------------------------------------------------------------------
# Pass 1
# ----------------------------------------------------------------------------------------------


class Stats1(NamedTuple):
    """First-pass sufficient statistics (additive over batches, see :func:`merge1`)."""

    counts: jax.Array  # (C,)     N_c
    ref: jax.Array  # (C, d)   per-class shift r_c: the first sample seen of class c
    seen: jax.Array  # (C,)     bool, class c has a shift already
    shifted_sums: jax.Array  # (C, d)   sum_{i in c} (h_i - r_c)
    unit_sums: jax.Array  # (C, d)   sum_{i in c, h_i != 0} h_i / ||h_i||
    unit_counts: jax.Array  # (C,)     number of non-zero rows of class c


def class_refs(h, y, C, ref=None, seen=None):
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


def shifted_sums(h, y, C):
    """``(N_c, r_c, sum_{i in c} (h_i - r_c))`` of one in-memory array."""
    ref, _ = class_refs(h, y, C)
    counts = segsum(jnp.ones(y.shape, jnp.int32), y, C)
    return counts, ref, segsum(h - jnp.take(ref, y, axis=0), y, C)


def stats1(h, y, C, units, ref=None, seen=None) -> Stats1:
    """Pass-1 statistics of features ``h`` (B, d) at the common scale; ``units``: the pair
    ``normalize_rows`` of the unscaled features (the common scale may flush their small rows)."""
    ref, seen = class_refs(h, y, C, ref, seen)
    u, nonzero = units
    return Stats1(
        counts=segsum(jnp.ones(y.shape, jnp.int32), y, C),
        ref=ref,
        seen=seen,
        shifted_sums=segsum(h - jnp.take(ref, y, axis=0), y, C),
        unit_sums=segsum(u, y, C),
        unit_counts=segsum(nonzero.astype(jnp.int32), y, C),
    )


def merge1(acc: Stats1, inc: Stats1) -> Stats1:
    """Adds the statistics of a new batch, computed with ``acc``'s shifts (``inc.ref`` extends them;
    a class first seen in this batch had zero count and sums before, so its new shift is consistent)."""
    return Stats1(
        counts=acc.counts + inc.counts,
        ref=inc.ref,
        seen=inc.seen,
        shifted_sums=acc.shifted_sums + inc.shifted_sums,
        unit_sums=acc.unit_sums + inc.unit_sums,
        unit_counts=acc.unit_counts + inc.unit_counts,
    )


# ----------------------------------------------------------------------------------------------
# Geometry of the class means
# ----------------------------------------------------------------------------------------------


class Geometry(NamedTuple):
    means: jax.Array  # (C, d)
    global_mean: jax.Array  # (d,)
    centered: jax.Array  # (C, d)  M, rows mu_c - mu_G
    basis: jax.Array  # (k, d)  top-k right singular vectors of M, k = min(C-1, d)
    inv_sv: jax.Array  # (k,)    1/s_j on the kept directions, 0 on numerically-null ones


def means_from(counts, ref, sums):
    # max(., 1): under jit an empty class (untrusted input) gives a finite mean instead of NaN.
    return ref + sums / jnp.maximum(counts, 1).astype(sums.dtype)[:, None]


def geometry(counts, ref, sums, C) -> Geometry:
    means = means_from(counts, ref, sums)
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
    scale = jnp.maximum(s[0], jnp.max(row_norms(means)))
    keep = s > scale * (C * jnp.finfo(M.dtype).eps)
    inv_sv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1), 0)
    return Geometry(means, mu_g, M, vt, inv_sv)


def geometry_of(h, y, C):
    """``(N_c, Geometry)`` of one in-memory array."""
    counts, ref, sums = shifted_sums(h, y, C)
    return counts, geometry(counts, ref, sums, C)


def ncc_scores(h, global_mean, centered):
    """(N, C) scores whose argmin is the nearest class mean of each row of ``h``, given the global
    mean mu_G (d,) and the centered class means m_c = mu_c - mu_G (C, d)."""
    # argmin_c ||h - mu_c||^2 = argmin_c ||m_c||^2 - 2 <h - mu_G, m_c>: centering by mu_G first keeps
    # float32 cancellation at the scale of the class spread rather than of ||mu_c||.
    return jnp.sum(centered * centered, axis=1) - 2.0 * mm(h - global_mean, centered.T)


# ----------------------------------------------------------------------------------------------
# Pass 2
# ----------------------------------------------------------------------------------------------


class Stats2(NamedTuple):
    """Second-pass sufficient statistics (additive over batches); need the geometry of pass 1."""

    counts: jax.Array  # (C,) N_c again, to check that both passes saw the same data
    proj_sq: jax.Array  # (k,) sum_i <v_j, h_i - mu_{y_i}>^2
    within_sq: jax.Array  # (C,) sum_{i in c} ||h_i - mu_c||^2
    ncc_correct: jax.Array  # ()  number of samples whose nearest class mean is their own
    nc4_mismatch: jax.Array  # () number of samples where argmax(logits) != nearest class mean


def stats2(h, y, geom: Geometry, C, logits=None) -> Stats2:
    r = h - jnp.take(geom.means, y, axis=0)
    q = mm(r, geom.basis.T)
    pred = jnp.argmin(ncc_scores(h, geom.global_mean, geom.centered), axis=1)
    if logits is None:
        mismatch = jnp.zeros((), jnp.int32)
    else:
        # logits come as unit_rows(logits): argmax is per-row invariant, and XLA would read
        # subnormal logits as 0 (false ties)
        mismatch = jnp.sum(jnp.argmax(logits, axis=1) != pred, dtype=jnp.int32)
    return Stats2(
        counts=segsum(jnp.ones(y.shape, jnp.int32), y, C),
        proj_sq=colsum(q * q),
        within_sq=segsum(jnp.sum(r * r, axis=1), y, C),
        ncc_correct=jnp.sum(pred == y, dtype=jnp.int32),
        nc4_mismatch=mismatch,
    )
