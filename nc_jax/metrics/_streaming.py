"""Two-pass, ``O(C d)``-memory version of :func:`nc_jax.metrics.collapse_report` (re-exported there).

Scale: the in-memory report brings all features to ``max|h| in [1, 2)`` by one power of two
``2^-e``. A stream cannot know ``e`` before it has seen every batch, so pass 1 keeps its statistics
at the largest exponent seen so far and, when a batch raises it, rescales what it has accumulated
(shifts and sums are linear in ``h``; power-of-two rescaling is exact and commutes with float
rounding). After pass 1, ``e`` is the exponent of all the data, and pass 2 scales every batch by
that same ``2^-e``: the result equals the in-memory report up to summation order, at any scale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics._checks import (
    as_float,
    check_counts,
    check_features,
    check_labels,
    check_logits,
    check_num_classes,
    check_weights,
)
from nc_jax.metrics._measures import prepare_weights, report_from, static_C
from nc_jax.metrics._scale import EMPTY_EXP, ldexp, row_exponents, unit_rows
from nc_jax.metrics._stats import (
    Stats1,
    geometry,
    merge1,
    normalize_rows,
    segsum,
    stats1,
    stats2,
)


@static_C
def _pass1_step(acc: Stats1, exp, h, y, num_classes):
    """Adds batch ``h`` (B, d) to ``acc`` (kept at scale ``2^-exp``); returns ``(acc', exp')``."""
    exps = row_exponents(h)
    e = jnp.maximum(exp, jnp.max(exps))
    acc = acc._replace(ref=ldexp(acc.ref, exp - e), shifted_sums=ldexp(acc.shifted_sums, exp - e))
    units = normalize_rows(h, exps)  # from the unscaled rows, like the in-memory report
    return merge1(acc, stats1(ldexp(h, -e), y, num_classes, units, acc.ref, acc.seen)), e


@static_C
def _pass2_step(h, y, exp, geom, num_classes, logits=None):
    logits = None if logits is None else unit_rows(logits)  # argmax: one exponent per row
    return stats2(ldexp(h, -exp), y, geom, num_classes, logits)


@static_C
def _unit_sums_step(h, y, num_classes):
    """Per-class sums (C, d) of the batch's unit rows, as pass 1 accumulates them."""
    return segsum(normalize_rows(h, row_exponents(h))[0], y, num_classes)


#: How far a class's summed unit vectors may move between the passes, per sample: float32
#: rounding of the sums stays far below; a loader that yields other features (augmentation,
#: another subset) moves them by much more.
PASS_TOLERANCE = 1e-3


_geometry_jit = static_C(lambda counts, ref, sums, num_classes: geometry(counts, ref, sums, num_classes))


@functools.partial(jax.jit, static_argnames=("num_classes", "has_logits"))
def _report_from_jit(s1, geom, s2, num_classes, W=None, has_logits=False):
    return report_from(s1, geom, s2, num_classes, W, has_logits)


@jax.jit
def _add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _empty_stats1(C, d, dtype) -> Stats1:
    zi, zf = jnp.zeros((C,), jnp.int32), jnp.zeros((C, d), dtype)
    return Stats1(counts=zi, ref=zf, seen=jnp.zeros((C,), bool), shifted_sums=zf, unit_sums=zf, unit_counts=zi)


def _unpack_batch(batch, num_classes, d, idx, pass_no):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"batch {idx} (pass {pass_no}) must be a tuple (h, y) or (h, y, logits)")
    h = as_float(batch[0])
    y = jnp.asarray(batch[1])
    logits = None if len(batch) == 2 or batch[2] is None else as_float(batch[2])
    n, d_b = check_features(h, what=f"features h of batch {idx}")
    if d is not None and d_b != d:
        raise ValueError(f"shape mismatch: batch {idx} has feature dimension {d_b}, earlier batches {d}")
    check_labels(y, n, num_classes, require_all=False)
    if logits is not None:
        check_logits(logits, n, num_classes)
    return h, y, logits, d_b


def collapse_report_streaming(
    batches_fn: Callable[[], Iterable[Any]], num_classes: int, W=None
) -> dict[str, jax.Array]:
    """:func:`~nc_jax.metrics.collapse_report` for data given as batches, in ``O(C d)`` memory
    (two passes).

    Args:
      batches_fn: called twice; each call must return a fresh iterable over the SAME batches
        ``(h_b, y_b)`` or ``(h_b, y_b, logits_b)`` (h_b (B, d), y_b (B,), logits_b (B, C); B may
        vary). Pass 1 accumulates per-class counts, feature sums and unit-vector sums (cosines)
        and the largest feature exponent; pass 2, given the class means and the SVD basis of M,
        accumulates the NC1 projections, the within-class sums of squares (CDNV), NCC hits and,
        if logits are present, NC4 mismatches.
      num_classes: C.  W: optional (C, d) classifier weights.
    Returns:
      the same dict as ``collapse_report(h, y, C, W, logits)`` on the concatenated data (``nc4``
      only if every batch carries logits), equal up to float rounding, at any feature scale.

    Every batch is validated (this function is not meant to be traced); each pass is jitted per
    batch shape, so keep B fixed (a ragged last batch costs one extra compilation).
    """
    C = check_num_classes(num_classes, "collapse_report_streaming")
    s1, exp, d = None, jnp.int32(EMPTY_EXP), None
    for idx, batch in enumerate(batches_fn()):
        h, y, _, d = _unpack_batch(batch, C, d, idx, 1)
        if s1 is None:
            s1 = _empty_stats1(C, d, h.dtype)
        s1, exp = _pass1_step(s1, exp, h, y, num_classes=C)
    if s1 is None:
        raise ValueError("batches_fn() yielded no batch")
    counts1 = np.asarray(s1.counts)
    check_counts(counts1.astype(np.int64))
    if W is not None:
        W = as_float(W)
        check_weights(W, C, d)
        W = prepare_weights(W)
    geom = _geometry_jit(s1.counts, s1.ref, s1.shifted_sums, num_classes=C)

    s2, with_logits, units2 = None, [], None
    for idx, batch in enumerate(batches_fn()):
        h, y, logits, _ = _unpack_batch(batch, C, d, idx, 2)
        with_logits.append(logits is not None)
        inc = _pass2_step(h, y, exp, geom, num_classes=C, logits=logits)
        s2 = inc if s2 is None else _add(s2, inc)
        u = _unit_sums_step(h, y, num_classes=C)
        units2 = u if units2 is None else units2 + u
    same = s2 is not None and np.array_equal(np.asarray(s2.counts), counts1)
    if same:
        # the counts alone miss a loader that yields other features for the same labels
        moved = np.max(np.abs(np.asarray(units2, np.float64) - np.asarray(s1.unit_sums, np.float64)),
                       axis=1)
        same = bool(np.all(moved <= PASS_TOLERANCE * np.maximum(counts1, 1)))
    if not same:
        raise ValueError(
            "the two passes saw different data: batches_fn() must return a fresh iterator over the "
            "same batches on every call (an augmenting or reshuffling-to-other-samples loader "
            "gives other features in the second pass)"
        )
    has_logits = all(with_logits)
    if any(with_logits) and not has_logits:
        raise ValueError("either every batch or no batch must carry logits")
    return _report_from_jit(s1, geom, s2, num_classes=C, W=W, has_logits=has_logits)
