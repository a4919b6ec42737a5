"""Checked mode: the value checks of the NC metrics inside `jax.jit` / `jax.vmap` / `lax.scan`,
with `jax.experimental.checkify`.

The boundary checks (`_checks.prepare`) need concrete arrays; under a transformation the inputs
are tracers and are trusted. `checked(fn)` is `checkify.checkify` of `fn` with those checks
added as `checkify.check`s on the traced values, so that they run inside the compiled program and
come back as a functional error value: the usual checkify pattern ::

    f = checked(collapse_report)                 # f(h, y, C, ...) -> (err, out)
    err, out = jax.jit(f, static_argnums=2)(h, y, 10)
    err.throw()                                  # ValueError subclass naming the problem
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from nc_jax.metrics._checks import check_num_classes


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "__jax_array__")


def _names(fn: Callable, n_args: int) -> list:
    """Parameter names of `fn` for the positional arguments after (h, y, num_classes)."""
    try:
        params = list(inspect.signature(fn).parameters)[3:]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"argument {i + 4}" for i in range(n_args)]


def _label(name: str) -> str:
    return {"W": "weights W", "logits": "logits"}.get(name, name)


def _check_finite(x: jax.Array, what: str) -> None:
    if jnp.issubdtype(x.dtype, jnp.inexact):
        bad = jnp.sum(~jnp.isfinite(x))
        checkify.check(bad == 0, f"{what} contain {{n}} non-finite value(s) (NaN or inf)", n=bad)


def _check_features(h: jax.Array, what: str) -> int:
    """Static shape checks (shapes are known under tracing) and the traced finiteness check."""
    if h.ndim != 2 or 0 in h.shape:
        raise ValueError(f"{what} must have shape (N, d) with N, d >= 1, got shape "
                         f"{tuple(h.shape)} (use jax.vmap for a leading run axis)")
    _check_finite(h, what)
    return h.shape[0]


def check_labels_traced(y: jax.Array, n: int, num_classes: int) -> None:
    """`checkify.check`s that every label lies in ``[0, C)`` and every class has a sample."""
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels y must have shape (N,) = ({n},), got shape {tuple(y.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"labels y must be integers, got dtype {y.dtype}")
    outside = (y < 0) | (y >= num_classes)
    i = jnp.argmax(outside)
    checkify.check(~jnp.any(outside),
                   f"labels outside [0, {num_classes}) (num_classes={num_classes}): y[{{i}}] = "
                   f"{{v}}", i=i, v=y[i])
    counts = jnp.zeros(num_classes, jnp.int32).at[y].add(1, mode="drop")
    checkify.check(jnp.all(counts > 0),
                   f"class {{c}} has no sample; every class in [0, {num_classes}) needs at least "
                   f"one for class means to exist", c=jnp.argmin(counts > 0))


def checked(fn: Callable, *, errors=frozenset()) -> Callable:
    """Checked mode of an NC metric: ``checkify.checkify(fn)`` with the metric's input checks.

    Args:
      fn: a function ``fn(h, y, num_classes, *args, **kwargs)``: any metric of
        :mod:`nc_jax.metrics` (for :func:`layerwise`, ``h`` is the tuple of per-layer features)
        or a function of yours with that signature.
      errors: further checkify error sets (e.g. ``checkify.float_checks``); the input checks
        (``checkify.user_checks``) are always on.
    Returns:
      ``f(h, y, num_classes, *args, **kwargs) -> (err, out)``, a pure function that can be
      jitted (``num_classes`` static, e.g. ``static_argnums=2`` or a closure), vmapped and
      scanned. ``err.throw()`` raises ``checkify.JaxRuntimeError`` (a ``ValueError``) naming
      the first failed check: a label outside ``[0, C)`` (its index and value), a class with no
      sample (the class), non-finite features, ``W`` or ``logits`` (the count).
      ``err.get()`` is that message (under ``vmap`` prefixed with the mapped index of the
      failing example, "at mapped index 2: ...") or None when all passed.
      Shape, dtype and ``num_classes`` errors are static and raise ``ValueError`` at trace time.
      Array arguments after ``num_classes`` (``W``, ``logits``) are traced and checked finite;
      other arguments (``center=True``; hashable) are passed through as static values.
    """
    error_set = checkify.user_checks | frozenset(errors)
    name = getattr(fn, "__name__", "fn")

    def run(h, y, num_classes, *args, **kwargs):
        C = check_num_classes(num_classes, name)
        pos = tuple(i for i, a in enumerate(args) if _is_array(a))
        static_args = tuple(None if i in pos else a for i, a in enumerate(args))
        static_kwargs = tuple(sorted((k, v) for k, v in kwargs.items() if not _is_array(v)))
        dyn_kwargs = {k: jnp.asarray(v) for k, v in kwargs.items() if _is_array(v)}
        h = tuple(jnp.asarray(f) for f in h) if isinstance(h, (tuple, list)) else jnp.asarray(h)
        spec = (fn, C, static_args, static_kwargs, pos, error_set)
        return _checked_call(h, jnp.asarray(y), tuple(jnp.asarray(args[i]) for i in pos),
                             dyn_kwargs, spec=spec)

    run.__name__ = f"checked_{name}"
    run.__doc__ = f"Checked mode of {name}: returns (err, out); see nc_jax.metrics.checked."
    return run


@functools.partial(jax.jit, static_argnames=("spec",))
def _checked_call(h, y, dyn_args, dyn_kwargs, *, spec):
    # always traced (a jit of its own): eagerly, checkify would run the metric on concrete
    # arrays whose boundary checks then meet its traced predicates
    fn, C, static_args, static_kwargs, pos, error_set = spec
    names = _names(fn, len(static_args))

    def body(h, y, dyn_args, dyn_kwargs):
        layers = isinstance(h, tuple)
        n = ([_check_features(f, f"features of layer {l}") for l, f in enumerate(h)] if layers
             else [_check_features(h, "features h")])
        if len(set(n)) != 1:
            raise ValueError(f"shape mismatch: the layers have {n} rows")
        check_labels_traced(y, n[0], C)
        full = list(static_args)
        for i, a in zip(pos, dyn_args):
            _check_finite(a, _label(names[i]))
            full[i] = a
        for k, v in dyn_kwargs.items():
            _check_finite(v, _label(k))
        return fn(h, y, C, *full, **dict(static_kwargs), **dyn_kwargs)

    return checkify.checkify(body, errors=error_set)(h, y, dyn_args, dyn_kwargs)
