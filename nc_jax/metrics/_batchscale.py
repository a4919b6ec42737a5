"""Exact power-of-two scaling of a batch of features, fast when the batch allows it.

The bit-pattern arithmetic of :mod:`nc_jax.metrics._scale` is exact over the whole float range,
subnormals included, but costs several integer operations per entry. For a batch without subnormal
entries (XLA reads those as 0 in arithmetic) a float row maximum and a multiplication by normal
powers of two give the same bits; these helpers choose per batch (``lax.cond``), so the
accumulator's results do not depend on which path ran.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nc_jax.metrics._scale import EMPTY_EXP, ldexp, row_exponents


def batch_row_exponents(h):
    """:func:`~nc_jax.metrics._scale.row_exponents`, from a float ``max|h|`` per row when every row
    has a normal maximum (then ``frexp`` of it is exact); the bit-pattern version otherwise (a
    row whose maximum is 0 to XLA may be all zero or all subnormal)."""
    amax = jnp.max(jnp.abs(h), axis=-1, keepdims=True)
    return jax.lax.cond(jnp.all(amax > 0), lambda: jnp.frexp(amax)[1] - 1,
                        lambda: row_exponents(h))


def batch_scaler(h, exps, e):
    """``scale(x, k) = x 2^k`` (``k`` an int array broadcasting against ``x``), exactly as
    :func:`~nc_jax.metrics._scale.ldexp`, for rows of ``h`` (row exponents ``exps``, common
    exponent ``e``). Multiplying by two normal powers of two gives the same bits (normal inputs
    scale exactly; results below the normal range flush to 0 either way) at a fraction of the cost
    of the bit-pattern arithmetic, unless a subnormal entry, which XLA reads as 0, is scaled up:
    only then (some exponent < 0 and a subnormal entry present) the bit arithmetic is kept."""
    itype = jnp.int32 if h.dtype == jnp.float32 else jnp.int64

    def has_subnormal():
        mag = jax.lax.bitcast_convert_type(h, itype) & jnp.iinfo(itype).max
        return jnp.any((mag > 0) & (mag < (1 << jnp.finfo(h.dtype).nmant)))

    up = (jnp.min(exps) < 0) | (e < 0)
    fast = ~jax.lax.cond(up, has_subnormal, lambda: jnp.bool_(False))

    def scale(x, k):
        def mul():
            # each factor a normal float; non-zero data never need more (float32: |k| <= 149)
            lim = 2 * (jnp.finfo(x.dtype).maxexp - 1)
            k2 = jnp.clip(k, -lim, lim).astype(jnp.int32)
            a = k2 // 2
            one = jnp.ones((), x.dtype)
            return x * jnp.ldexp(one, a).astype(x.dtype) * jnp.ldexp(one, k2 - a).astype(x.dtype)

        return jax.lax.cond(fast, mul, lambda: ldexp(x, k))

    return scale


def batch_units(scale, x, exps):
    """:func:`~nc_jax.metrics._stats.normalize_rows` of ``x`` with row exponents ``exps``."""
    nonzero = exps != EMPTY_EXP
    v = scale(x, -exps)
    nrm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    return v / jnp.where(nonzero, nrm, 1)
