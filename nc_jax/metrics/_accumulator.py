"""NC statistics accumulated batch by batch as pure functions (re-exported as
:func:`nc_jax.metrics.accumulator`).

Pass 1 accumulates, per class, the count ``N_c``, ``sum (h_i - r_c)`` (``r_c``: the first sample
seen of class c), ``sum h_i/||h_i||`` and ``sum ||h_i - r_c||^2``, and optionally the ``d x d``
scatter ``sum (h_i - r_{y_i})(h_i - r_{y_i})^T``; that is enough for the cosine measures, NC2,
NC3, CDNV and NC1. The nearest-class-mean measures (NCC accuracy, NC4) need the class means
first: pass 2 accumulates, given pass 1's geometry, the NC1 projections, within-class sums of
squares, NCC hits and NC4 mismatches, and gives the full report.

Every float sum that enters a measure is exact to about one rounding at any class size (pass 2's
unit-vector sums, only a check that it sees pass 1's data, are plain sums of chunks, compensated
across chunks): each batch is processed in
chunks of :func:`~nc_jax.metrics._stats.chunk_rows` rows whose per-class sums are error-free up to
one rounding (:func:`~nc_jax.metrics._stats.chunk_class_sums`), and chunks and batches are added
with compensated (TwoSum) accumulation, held as ``(sum, compensation)`` pairs in the state.

Scale: pass 1 keeps its statistics at ``2^-exp``, ``exp`` the largest row exponent seen so far,
and rescales them exactly when a batch raises it (shifts and sums are linear in ``h``, squares
quadratic); pass 2 uses the final ``exp`` for every batch, as the in-memory report does.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from nc_jax.metrics._checks import as_float, check_num_classes
from nc_jax.metrics._measures import (cdnv_from, cos_matrix_from, cos_summary, nc1_from, nc2_from,
                                      nc3_from, report_from, weights_at_unit_scale)
from nc_jax.metrics._batchscale import batch_row_exponents, batch_scaler, batch_units
from nc_jax.metrics._scale import EMPTY_EXP, ldexp, unit_rows
from nc_jax.metrics._stats import (Geometry, Stats1, Stats2, chunk_class_sums, step_rows,
                                   comp_add, divide_rows, geometry, mm, scan_rows,
                                   two_sum)


class Pass1State(NamedTuple):
    """Pass-1 state at scale ``2^-exp``; ``(sums, comp)`` and ``(scatter, scatter_comp)`` are
    compensated pairs (value = sum of the two)."""

    exp: jax.Array  # ()        largest row exponent seen (EMPTY_EXP before any non-zero row)
    counts: jax.Array  # (C,)      N_c
    seen: jax.Array  # (C,)      class c has a shift r_c
    ref: jax.Array  # (C, d)    r_c
    sums: jax.Array  # (C, 2d+1) columns [sum (h_i - r_c) | sum of unit rows | sum ||h_i - r_c||^2]
    comp: jax.Array  # (C, 2d+1)
    unit_counts: jax.Array  # (C,)      non-zero rows of class c
    scatter: jax.Array | None  # (d, d)  sum (h_i - r_{y_i})(h_i - r_{y_i})^T, or None
    scatter_comp: jax.Array | None


class Context(NamedTuple):
    """What pass 2 needs from pass 1 (constant during pass 2)."""

    exp: jax.Array  # ()
    counts: jax.Array  # (C,)
    unit_sums: jax.Array  # (C, d)
    unit_counts: jax.Array  # (C,)
    geom: Geometry
    coords: jax.Array  # (C, k) M V^T: the centered means in the basis V
    dist: jax.Array  # (C, C) ||mu_c - mu_c'||^2, exactly 0 on the diagonal


class Pass2State(NamedTuple):
    ctx: Context
    counts: jax.Array  # (C,)
    sums: jax.Array  # (C, d+1) columns [sum of unit rows | sum ||h_i - mu_c||^2]
    comp: jax.Array
    proj: jax.Array  # (k,) sum_i <v_j, h_i - mu_{y_i}>^2
    proj_comp: jax.Array
    ncc_correct: jax.Array  # () int32
    nc4_mismatch: jax.Array  # () int32


class Accumulator(NamedTuple):
    """``init() -> state``, ``update(state, h, y) -> state``, ``finalize(state, W=None) -> dict``,
    ``merge(a, b) -> state``; pass 1 also has ``second_pass(state, with_logits=False)``."""

    init: Callable
    update: Callable
    finalize: Callable
    merge: Callable
    second_pass: Callable | None = None


def _compsum(pair):
    return pair[0] + pair[1]


def _check_batch(h, y, d, logits=None, C=None):
    if h.ndim != 2 or h.shape[1] != d:
        raise ValueError(f"features h must have shape (B, {d}) (dim={d}), got {tuple(h.shape)}")
    if y.shape != (h.shape[0],):
        raise ValueError(f"labels y must have shape ({h.shape[0]},), got {tuple(y.shape)}")
    if logits is not None and logits.shape != (h.shape[0], C):
        raise ValueError(f"logits must have shape ({h.shape[0]}, {C}), got {tuple(logits.shape)}")


# ----------------------------------------------------------------------------------------------
# Pass 1
# ----------------------------------------------------------------------------------------------


def init1(C, d, dtype, second_moment) -> Pass1State:
    zi, zc = jnp.zeros((C,), jnp.int32), jnp.zeros((C, 2 * d + 1), dtype)
    zs = jnp.zeros((d, d), dtype) if second_moment else None
    return Pass1State(jnp.int32(EMPTY_EXP), zi, jnp.zeros((C,), bool), jnp.zeros((C, d), dtype),
                      zc, zc, zi, zs, zs)


def rescale1(s: Pass1State, e) -> Pass1State:
    """``s`` at the (larger or equal) exponent ``e``: exact power-of-two rescaling."""
    k = s.exp - e
    d = s.ref.shape[1]

    def cols(a):  # shifted sums scale with h, unit sums not at all, squared norms with h^2
        return jnp.concatenate([ldexp(a[:, :d], k), a[:, d:2 * d], ldexp(a[:, 2 * d:], 2 * k)], 1)

    sc = None if s.scatter is None else (ldexp(s.scatter, 2 * k), ldexp(s.scatter_comp, 2 * k))
    return s._replace(exp=e, ref=ldexp(s.ref, k), sums=cols(s.sums), comp=cols(s.comp),
                      scatter=None if sc is None else sc[0],
                      scatter_comp=None if sc is None else sc[1])


def update1(C, s: Pass1State, h, y) -> Pass1State:
    d = s.ref.shape[1]
    h, y = as_float(h).astype(s.ref.dtype), jnp.asarray(y)
    _check_batch(h, y, d)
    n = h.shape[0]
    exps = batch_row_exponents(h)
    e = jnp.maximum(s.exp, jnp.max(exps))
    s = rescale1(s, e)
    first = jax.ops.segment_min(jnp.arange(n), y, num_segments=C)  # n+ for absent classes
    batch_ref = ldexp(jnp.take(h, jnp.clip(first, 0, n - 1), axis=0), -e)
    ref = jnp.where(s.seen[:, None], s.ref, batch_ref)
    ones = jnp.ones((n,), jnp.int32)
    nonzero = (exps[:, 0] != EMPTY_EXP).astype(jnp.int32)

    scale = batch_scaler(h, exps, e)

    def body(carry, hc, yc, ec):
        r = scale(hc, -e) - jnp.take(ref, yc, axis=0)
        u = batch_units(scale, hc, ec)  # from the unscaled rows: tiny rows keep their direction
        parts = (r, u, jnp.sum(r * r, axis=1, keepdims=True))
        sums = comp_add(carry[0], jnp.concatenate([chunk_class_sums(p, yc, C) for p in parts], 1))
        scat = carry[1] if carry[1] is None else comp_add(carry[1], mm(r.T, r))
        return sums, scat

    scat = None if s.scatter is None else (s.scatter, s.scatter_comp)
    (sums, comp), scat = scan_rows(body, ((s.sums, s.comp), scat), (h, y, exps),
                                   step_rows(h.dtype, 2 * d + 1))
    return Pass1State(e, s.counts + jax.ops.segment_sum(ones, y, num_segments=C), s.seen | (first < n),
                      ref, sums, comp, s.unit_counts + jax.ops.segment_sum(nonzero, y, num_segments=C),
                      None if scat is None else scat[0], None if scat is None else scat[1])


def merge1(a: Pass1State, b: Pass1State) -> Pass1State:
    """Pass-1 state of the union of two disjoint parts of the data (any order of rows)."""
    e = jnp.maximum(a.exp, b.exp)
    a, b = rescale1(a, e), rescale1(b, e)
    d = a.ref.shape[1]
    # b's sums are relative to b's shifts; move them to a's where a has one:
    # x - r_a = (x - r_b) + delta, delta = r_b - r_a
    delta = jnp.where(a.seen[:, None], b.ref - a.ref, 0)
    nb = b.counts.astype(delta.dtype)[:, None]
    sb = b.sums[:, :d] + b.comp[:, :d]
    corr = jnp.concatenate([nb * delta, jnp.zeros_like(delta),
                            2 * jnp.sum(delta * sb, 1, keepdims=True)
                            + nb * jnp.sum(delta * delta, 1, keepdims=True)], 1)
    sums, err = two_sum(a.sums, b.sums)
    scat = scat_comp = None
    if a.scatter is not None:
        cross = mm(sb.T, delta)
        scat, err2 = two_sum(a.scatter, b.scatter)
        scat_comp = a.scatter_comp + b.scatter_comp + err2 + (cross + cross.T + mm((nb * delta).T, delta))
    return Pass1State(e, a.counts + b.counts, a.seen | b.seen, jnp.where(a.seen[:, None], a.ref, b.ref),
                      sums, a.comp + b.comp + err + corr, a.unit_counts + b.unit_counts, scat, scat_comp)


def _parts1(s: Pass1State):
    d = s.ref.shape[1]
    tot = _compsum((s.sums, s.comp))
    return tot[:, :d], tot[:, d:2 * d], tot[:, 2 * d]


def finalize1(C, s: Pass1State, W=None) -> dict:
    shifted, units, sq = _parts1(s)
    geom = geometry(s.counts, s.ref, shifted, C)
    out = cos_summary(cos_matrix_from(units, s.unit_counts), C)
    n = jnp.sum(s.counts).astype(shifted.dtype)
    delta = shifted / jnp.maximum(s.counts, 1).astype(shifted.dtype)[:, None]  # mu_c - r_c
    if s.scatter is not None:
        # Sigma_W N = sum (h - r)(h - r)^T - sum_c N_c delta_c delta_c^T, seen only through V
        sw = _compsum((s.scatter, s.scatter_comp)) - mm(shifted.T, delta)
        out["nc1"] = nc1_from(jnp.sum(mm(geom.basis, sw) * geom.basis, axis=1), geom.inv_sv, n)
    for key, val in nc2_from(geom.centered, divide_rows(geom.centered)[0], C).items():
        out[f"nc2_{key}"] = val
    within = jnp.maximum(sq - jnp.sum(shifted * delta, axis=1), 0)
    out["cdnv"] = cdnv_from(within, s.counts, geom.centered, C)
    if W is not None:
        Wu = weights_at_unit_scale(as_float(W))
        r3 = nc3_from(*Wu, geom.means, geom.centered)
        out["nc3"], out["nc3_min_cos"], out["nc3_mean_cos"] = r3["nc3"], r3["min_cos"], r3["mean_cos"]
        for key, val in nc2_from(*Wu, C).items():
            out[f"nc2_{key}_weights"] = val
    return out


# ----------------------------------------------------------------------------------------------
# Pass 2
# ----------------------------------------------------------------------------------------------


def init2(C, s: Pass1State) -> Pass2State:
    shifted, units, _ = _parts1(s)
    geom = geometry(s.counts, s.ref, shifted, C)
    # squared distances between the means, each from the difference itself (no cancellation)
    dist = jax.lax.map(lambda m: jnp.sum((geom.means - m) ** 2, axis=1), geom.means)
    dist = jnp.where(jnp.eye(C, dtype=bool), 0, dist)
    ctx = Context(s.exp, s.counts, units, s.unit_counts, geom, mm(geom.centered, geom.basis.T), dist)
    d, k, dt = units.shape[1], geom.basis.shape[0], units.dtype
    z = jnp.zeros((C, d + 1), dt)
    return Pass2State(ctx, jnp.zeros((C,), jnp.int32), z, z, jnp.zeros((k,), dt), jnp.zeros((k,), dt),
                      jnp.int32(0), jnp.int32(0))


def update2(C, with_logits, s: Pass2State, h, y, logits=None) -> Pass2State:
    ctx = s.ctx
    d = ctx.unit_sums.shape[1]
    h, y = as_float(h).astype(ctx.unit_sums.dtype), jnp.asarray(y)
    if with_logits and logits is None:
        raise ValueError("this second pass was set up with_logits=True: update needs logits (B, C)")
    _check_batch(h, y, d, logits if with_logits else None, C)
    n = h.shape[0]
    exps = batch_row_exponents(h)
    xs = (h, y, exps) + ((unit_rows(as_float(logits)),) if with_logits else ())

    scale = batch_scaler(h, exps, ctx.exp)

    def body(carry, hc, yc, ec, *lc):
        (sums, proj, hits, mism) = carry
        r = scale(hc, -ctx.exp) - jnp.take(ctx.geom.means, yc, axis=0)
        q = mm(r, ctx.geom.basis.T)  # (K, k) coordinates of h_i - mu_{y_i} in V
        # unit sums only check that pass 2 sees pass 1's data (tolerance 1e-3 per sample):
        # sums of chunk_rows rows, compensated across chunks, are accurate enough
        u = batch_units(scale, hc, ec)
        sums = comp_add(sums, jnp.concatenate(
            [chunk_class_sums(u, yc, C, split=False),
             chunk_class_sums(jnp.sum(r * r, axis=1, keepdims=True), yc, C)], axis=1))
        proj = comp_add(proj, chunk_class_sums(q * q, jnp.zeros_like(yc), 1)[0])
        # ||h - mu_c||^2 - ||r||^2 = ||mu_y - mu_c||^2 - 2 <r, m_c> + 2 <r, m_y>; the last term is
        # constant over c, and m_c lies in the span of V: <r, m_c> = q . coords_c. One (K, k) x
        # (k, C) product instead of a second (K, d) x (d, C) one, and the cancellation happens at
        # the scale of r, not of the means.
        pred = jnp.argmin(jnp.take(ctx.dist, yc, axis=0) - 2.0 * mm(q, ctx.coords.T), axis=1)
        hits = hits + jnp.sum(pred == yc, dtype=jnp.int32)
        if lc:
            mism = mism + jnp.sum(jnp.argmax(lc[0], axis=1) != pred, dtype=jnp.int32)
        return sums, proj, hits, mism

    carry = ((s.sums, s.comp), (s.proj, s.proj_comp), s.ncc_correct, s.nc4_mismatch)
    (sums, comp), (proj, pc), hits, mism = scan_rows(body, carry, xs, step_rows(h.dtype, d + 1))
    counts = s.counts + jax.ops.segment_sum(jnp.ones((n,), jnp.int32), y, num_segments=C)
    return Pass2State(ctx, counts, sums, comp, proj, pc, hits, mism)


def merge2(a: Pass2State, b: Pass2State) -> Pass2State:
    """Pass-2 states of disjoint parts (same pass-1 context): the statistics add."""
    sums, err = two_sum(a.sums, b.sums)
    proj, errp = two_sum(a.proj, b.proj)
    return Pass2State(a.ctx, a.counts + b.counts, sums, a.comp + b.comp + err, proj,
                      a.proj_comp + b.proj_comp + errp, a.ncc_correct + b.ncc_correct,
                      a.nc4_mismatch + b.nc4_mismatch)


def pass2_unit_sums(s: Pass2State):
    """(C, d) per-class sums of unit rows seen by pass 2 (to compare with pass 1's)."""
    return _compsum((s.sums, s.comp))[:, :-1]


def finalize2(C, with_logits, s: Pass2State, W=None) -> dict:
    ctx = s.ctx
    within = _compsum((s.sums, s.comp))[:, -1]
    s1 = Stats1(ctx.counts, None, None, None, ctx.unit_sums, ctx.unit_counts)
    s2 = Stats2(s.counts, _compsum((s.proj, s.proj_comp)), within, s.ncc_correct, s.nc4_mismatch)
    Wu = None if W is None else weights_at_unit_scale(as_float(W))
    return report_from(s1, ctx.geom, s2, C, Wu, with_logits)


# ----------------------------------------------------------------------------------------------
# Public constructor
# ----------------------------------------------------------------------------------------------


def accumulator(num_classes: int, dim: int, *, second_moment: bool = True,
                dtype=jnp.float32) -> Accumulator:
    """NC statistics of data seen in batches, as pure functions (jit / scan / vmap-able).

    Args:
      num_classes: C (static int >= 2).  dim: feature dimension d (static int >= 1).
      second_moment: keep the ``(d, d)`` scatter matrix so that pass 1 alone gives ``nc1``
        (memory ``O(d^2 + C d)``, ``O(B d^2)`` work per batch); False: ``O(C d)`` memory, ``nc1``
        from the second pass only.
      dtype: float dtype of the state (float64 needs ``jax_enable_x64``).
    Returns:
      ``Accumulator(init, update, finalize, merge, second_pass)``:

      * ``state = init()``; ``state = update(state, h, y)`` with ``h`` (B, d), ``y`` (B,) int;
      * ``finalize(state, W=None)``: the keys of ``collapse_report(h_all, y_all, C, W)`` that one
        pass allows: ``min_intra``, ``max_inter``, ``mean_intra``, ``mean_inter``, ``nc2_*``,
        ``cdnv``, ``nc1`` (with ``second_moment``), and with ``W`` (C, d) the ``nc3*`` and
        ``nc2_*_weights`` keys;
      * ``merge(a, b)``: the state of the union of the data of ``a`` and ``b`` (aligns the scale
        exponents and the per-class shifts; states do not merge by plain addition);
      * ``second_pass(state, with_logits=False)``: an ``Accumulator`` whose ``init()`` starts from
        the class means of ``state``; its ``update(state2, h, y[, logits])`` must see the same
        data again, and its ``finalize(state2, W=None)`` returns the full ``collapse_report`` dict
        (``ncc_accuracy``, ``nc1`` and ``cdnv`` from the two-pass formulas, ``nc4`` with logits).
        Its ``merge`` adds the statistics of two shards (same pass-1 state).

    Inside ``jit`` / ``vmap`` / ``scan`` the data are trusted (labels in ``[0, C)``, finite
    features); shapes are checked always. The results equal ``collapse_report`` on all the data
    to float rounding, at any scale of ``h`` and any class size.
    """
    C = check_num_classes(num_classes, "accumulator")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive Python int (the feature dimension d), got {dim!r}")
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits < 32:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return _build(C, dim, bool(second_moment), jnp.dtype(dtype))


# Jitted once per (C, d, ...): repeated accumulator(...) calls and eager use hit the compile cache;
# inside an outer jit / vmap / scan they are inlined as plain functions.
init1_jit = jax.jit(init1, static_argnums=(0, 1, 2, 3))
update1_jit = jax.jit(update1, static_argnums=0)
finalize1_jit = jax.jit(finalize1, static_argnums=0)
merge1_jit = jax.jit(merge1)
init2_jit = jax.jit(init2, static_argnums=0)
update2_jit = jax.jit(update2, static_argnums=(0, 1))
finalize2_jit = jax.jit(finalize2, static_argnums=(0, 1))
merge2_jit = jax.jit(merge2)


@functools.lru_cache(maxsize=None)
def _second(C, with_logits):
    return (lambda s, h, y, logits=None: update2_jit(C, with_logits, s, h, y, logits),
            lambda s, W=None: finalize2_jit(C, with_logits, s, W))


@functools.lru_cache(maxsize=None)
def _build(C, dim, second_moment, dtype) -> Accumulator:
    def second_pass(state, with_logits: bool = False) -> Accumulator:
        update, finalize = _second(C, bool(with_logits))
        return Accumulator(init=lambda: init2_jit(C, state), update=update, finalize=finalize,
                           merge=merge2_jit)

    return Accumulator(
        init=lambda: init1_jit(C, dim, dtype, second_moment),
        update=lambda s, h, y: update1_jit(C, s, h, y),
        finalize=lambda s, W=None: finalize1_jit(C, s, W),
        merge=merge1_jit,
        second_pass=second_pass,
    )
