"""Two-pass, ``O(C d)``-memory version of :func:`nc_jax.metrics.collapse_report` (re-exported there).

Scale: the in-memory report brings all features to ``max|h| in [1, 2)`` by one power of two
``2^-e``. A stream cannot know ``e`` before it has seen every batch, so pass 1 keeps its statistics
at the largest exponent seen so far and, when a batch raises it, rescales what it has accumulated
(shifts and sums are linear in ``h``; power-of-two rescaling is exact and commutes with float
rounding). After pass 1, ``e`` is the exponent of all the data, and pass 2 scales every batch by
that same ``2^-e``: the result equals the in-memory report up to summation order, at any scale.

The loop itself is a thin driver over :mod:`nc_jax.metrics._accumulator` (pass 1 without the
``d x d`` scatter matrix, so memory stays ``O(C d)``): it validates each batch, checks that the
second pass saw the first pass's data, and returns pass 2's report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics._accumulator import (finalize2_jit, init1_jit, init2_jit, pass2_unit_sums, update1,
                                         update2)
from nc_jax.metrics._checks import (
    as_float,
    check_counts,
    check_finite,
    check_labels,
    check_logits,
    check_num_classes,
    check_weights,
)

#: How far a class's summed unit vectors may move between the passes, per sample: float32
#: rounding of the sums stays far below; a loader that yields other features (augmentation,
#: another subset) moves them by much more.
PASS_TOLERANCE = 1e-3



def _finite(h):
    # the same row maxima the update computes for the exponents (one pass over h for both);
    # max propagates NaN
    return jnp.all(jnp.isfinite(jnp.max(jnp.abs(h), axis=-1, keepdims=True)))


# One compiled program per batch shape; the state is donated (updated in place). Each also says
# whether the batch was finite, which the host checks before trusting the new state.
_update1 = jax.jit(lambda C, s, h, y: (update1(C, s, h, y), _finite(h)), static_argnums=0,
                   donate_argnums=1)
_update2 = jax.jit(lambda C, wl, s, h, y, lg: (update2(C, wl, s, h, y, lg), _finite(h)),
                   static_argnums=(0, 1), donate_argnums=2)


def _unpack_batch(batch, num_classes, d, idx, pass_no):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"batch {idx} (pass {pass_no}) must be a tuple (h, y) or (h, y, logits)")
    h = as_float(batch[0])
    y = jnp.asarray(batch[1])
    logits = None if len(batch) == 2 or batch[2] is None else as_float(batch[2])
    what = f"features h of batch {idx}"
    if h.ndim != 2:
        raise ValueError(f"{what} must have shape (N, d), got shape {tuple(h.shape)} "
                         "(use jax.vmap for a leading run axis)")
    n, d_b = h.shape
    if n == 0 or d_b == 0:
        raise ValueError(f"{what} must be non-empty, got shape {tuple(h.shape)}")
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
    s1, d = None, None
    for idx, batch in enumerate(batches_fn()):
        h, y, _, d = _unpack_batch(batch, C, d, idx, 1)
        if s1 is None:
            s1 = init1_jit(C, d, h.dtype, False)
        s1, ok = _update1(C, s1, h, y)
        if not ok:
            check_finite(h, f"features h of batch {idx}")
    if s1 is None:
        raise ValueError("batches_fn() yielded no batch")
    counts1 = np.asarray(s1.counts)
    check_counts(counts1.astype(np.int64))
    if W is not None:
        W = as_float(W)
        check_weights(W, C, d)
    units1 = np.asarray(s1.sums[:, d:2 * d], np.float64) + np.asarray(s1.comp[:, d:2 * d], np.float64)

    s2, has_logits = None, None
    for idx, batch in enumerate(batches_fn()):
        h, y, logits, _ = _unpack_batch(batch, C, d, idx, 2)
        if s2 is None:
            has_logits = logits is not None
            s2 = init2_jit(C, s1)
        elif has_logits != (logits is not None):
            raise ValueError("either every batch or no batch must carry logits")
        s2, ok = _update2(C, has_logits, s2, h, y, logits)
        if not ok:
            check_finite(h, f"features h of batch {idx}")
    same = s2 is not None and np.array_equal(np.asarray(s2.counts), counts1)
    if same:
        # the counts alone miss a loader that yields other features for the same labels
        moved = np.max(np.abs(np.asarray(pass2_unit_sums(s2), np.float64) - units1), axis=1)
        same = bool(np.all(moved <= PASS_TOLERANCE * np.maximum(counts1, 1)))
    if not same:
        raise ValueError(
            "the two passes saw different data: batches_fn() must return a fresh iterator over the "
            "same batches on every call (an augmenting or reshuffling-to-other-samples loader "
            "gives other features in the second pass)"
        )
    return finalize2_jit(C, has_logits, s2, W)
