"""Boundary validation of the inputs of :mod:`nc_jax.metrics` (concrete inputs only).

Checks run on the host before any jitted program, so that bad input raises a ``ValueError`` naming
the problem instead of giving meaningless numbers. Inside ``jax.jit`` / ``jax.vmap`` / ``lax.scan``
the inputs are tracers and only the static ``num_classes`` can be checked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_num_classes(num_classes: Any, func: str | None = None) -> int:
    """``num_classes`` as a Python int >= 2.

    Every metric takes ``(h, y, num_classes, ...)``; an array here almost always means arguments in
    the former order ``nc3(h, y, W, C)`` / ``nc4(h, y, logits, C)``, so the message says so.
    """
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        hint = ""
        if hasattr(num_classes, "shape") or isinstance(num_classes, (list, tuple)):
            name = func or "the metric"
            hint = (
                f". {name} takes (h, y, num_classes, ...): num_classes comes third, before W or logits, "
                "e.g. nc3(h, y, C, W) and nc4(h, y, C, logits) (the old order nc3(h, y, W, C) is no "
                "longer accepted)"
            )
        raise ValueError(
            "num_classes must be a static Python int (it fixes array shapes and cannot be traced); "
            f"got {type(num_classes).__name__}{hint}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (C < 2 has no between-class structure); got {num_classes}")
    return int(num_classes)


def as_float(x: Any) -> jax.Array:
    """Array in a float dtype of at least 32 bits (half precision is too coarse for these sums)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        # astype would drop the imaginary part with only a warning
        raise ValueError(f"NC metrics take real features; got dtype {x.dtype} (pass the real "
                         f"part, or the magnitudes, explicitly)")
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def check_finite(x: jax.Array, what: str) -> None:
    if not bool(_all_finite(x)):
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(x))))
        raise ValueError(f"{what} contain {bad} non-finite value(s) (NaN or inf)")


def check_labels(y: Any, n: int, num_classes: int, *, require_all: bool = True) -> np.ndarray:
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
        check_counts(counts)
    return counts


def check_counts(counts: np.ndarray) -> None:
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        listed = ", ".join(str(c) for c in empty[:10]) + (", ..." if empty.size > 10 else "")
        raise ValueError(
            f"class {int(empty[0])} has no sample (empty classes: {listed}); every class in "
            f"[0, num_classes) needs at least one sample for class means to exist"
        )


def check_features(h: jax.Array, what: str = "features h") -> tuple[int, int]:
    if h.ndim != 2:
        raise ValueError(
            f"{what} must have shape (N, d), got shape {tuple(h.shape)} "
            "(use jax.vmap for a leading run axis)"
        )
    n, d = h.shape
    if n == 0 or d == 0:
        raise ValueError(f"{what} must be non-empty, got shape {tuple(h.shape)}")
    check_finite(h, what)
    return n, d


def check_weights(W: jax.Array, num_classes: int, d: int) -> None:
    if W.ndim != 2 or W.shape != (num_classes, d):
        raise ValueError(
            f"W shape mismatch: expected (num_classes, d) = ({num_classes}, {d}), got {tuple(W.shape)} "
            "(rows are the class weight vectors w_c; logits = h @ W.T)"
        )
    check_finite(W, "weights W")


def check_logits(logits: jax.Array, n: int, num_classes: int) -> None:
    if logits.ndim != 2 or logits.shape != (n, num_classes):
        raise ValueError(
            f"logits shape mismatch: expected (N, num_classes) = ({n}, {num_classes}), got {tuple(logits.shape)}"
        )
    check_finite(logits, "logits")


def prepare(h, y, num_classes, W=None, logits=None, func: str | None = None):
    """Converts inputs and, when all of them are concrete, validates them.

    Returns ``(h, y, C, W, logits)`` with float arrays of >= 32 bits and ``C`` a Python int.
    """
    C = check_num_classes(num_classes, func)
    traced = any(is_tracer(a) for a in (h, y, W, logits) if a is not None)
    h = as_float(h)
    y = jnp.asarray(y)
    W = None if W is None else as_float(W)
    logits = None if logits is None else as_float(logits)
    if not traced:
        n, d = check_features(h)
        check_labels(y, n, C)
        if W is not None:
            check_weights(W, C, d)
        if logits is not None:
            check_logits(logits, n, C)
    return h, y, C, W, logits
