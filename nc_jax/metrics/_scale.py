"""Exact power-of-two rescaling of float arrays, for the scale-invariant NC measures.

Every NC measure is invariant to ``h -> s h`` (and ``W -> s W``, ``logits -> s logits``), but their
float32 evaluation is not: squared norms overflow for ``|h| >~ 1e19`` and underflow for
``|h| <~ 1e-19``. The metrics therefore bring each array to ``max|x| in [1, 2)`` by a
data-dependent power of two ``2^-e`` (:func:`normalize`), and rows whose direction is all that
matters (unit vectors, argmax) by one power of two per row (:func:`unit_rows`). Power-of-two
scaling only changes exponents, so it is exact: the scaled arrays, hence the measures, are the
same bits at ``s = 2^k`` as at ``s = 1``.

Plain ``x * 2.0**k`` is not enough: XLA on CPU (and GPU) runs with flush-to-zero /
denormals-are-zero, so subnormal inputs (``|x| < 2^-126 ~ 1.2e-38`` in float32) would read as 0,
and so would a factor ``2^k`` below ``2^-126``. Here exponents are read from, and added to, the bit
patterns with integer operations instead, so the whole finite float range, subnormals included,
scales exactly. Results that land below the normal range are flushed to 0, as XLA arithmetic does.

Everything is ``jnp`` (exponents are traced int32 arrays), so it works under ``jit`` / ``vmap`` (one
exponent per mapped example) / ``scan``. Float32 and float64 (with x64) inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

#: Exponent reported for an all-zero array: far below any float's, so that ``max`` with the exponent
#: of real data picks the data's, and ``ldexp(0, -EMPTY_EXP) = 0`` without int32 overflow.
EMPTY_EXP = -(1 << 20)


def _layout(dtype):
    fi = jnp.finfo(dtype)
    itype = {32: jnp.int32, 64: jnp.int64}[fi.bits]
    return itype, fi.nmant, fi.maxexp - 1, fi.minexp, fi.maxexp  # float32: int32, 23, 127, -126, 128


def row_exponents(x) -> jax.Array:
    """``floor(log2(max_j |x[..., j]|))`` per row, shape ``(..., 1)`` int32, exact also for
    subnormal rows; ``EMPTY_EXP`` for all-zero rows.

    For non-negative floats the bit patterns as integers are ordered like the values, so the
    maximum is taken on a monotone integer key: below ``2^s`` the magnitude bits themselves, above
    it ``2^s + (bits >> s)`` with ``s = nbits - 1 - nmant``. Both fit the float mantissa, so the
    key is exact as a float and one float ``max`` finds the row maximum (a float ``max`` of the
    values would read subnormals as 0 under XLA's DAZ; an integer ``max`` is slow on CPU).
    """
    itype, nmant, bias, minexp, _ = _layout(x.dtype)
    s = jnp.iinfo(itype).bits - 1 - nmant  # float32: 8
    mag = lax.bitcast_convert_type(x, itype) & jnp.iinfo(itype).max
    key = jnp.where(mag >> s > 0, (mag >> s) + (1 << s), mag).astype(x.dtype)
    top = jnp.max(key, axis=-1, keepdims=True, initial=0).astype(itype)
    big = top > (1 << s)
    part = jnp.where(big, top - (1 << s), top)  # (max bits) >> s if big, else the max bits
    biased = jnp.where(big, part >> (nmant - s), 0)  # exponent field of the row maximum
    # subnormal maximum: value = bits * 2^(minexp - nmant), floor(log2 bits) read off a float
    lead = (lax.bitcast_convert_type(part.astype(x.dtype), itype) >> nmant) - bias + jnp.where(big, s, 0)
    e = jnp.where(biased > 0, biased - bias, lead + (minexp - nmant))
    return jnp.where(top == 0, EMPTY_EXP, e).astype(jnp.int32)


def max_exponent(x) -> jax.Array:
    """``floor(log2(max|x|))`` over all of ``x`` as an int32 scalar (exact, subnormals included);
    ``EMPTY_EXP`` if ``x`` is all zero."""
    return jnp.max(row_exponents(x.reshape(1, -1) if x.ndim < 2 else x))


def ldexp(x, k) -> jax.Array:
    """``x * 2^k`` elementwise for an int scalar ``k`` (traced or not); exact wherever the result is
    a normal float, +-0 where it falls below the normal range, +-inf on overflow; inf / NaN stay.

    Pure integer work on the bit pattern (add ``k`` to the exponent field), so subnormal inputs,
    which ``jnp.ldexp`` and multiplication read as 0 under XLA's DAZ, are scaled too: their
    mantissa is first shifted up to the implicit-bit position (a normal float with exponent < 1).
    """
    itype, nmant, _, _, maxexp = _layout(x.dtype)
    nbits = jnp.iinfo(itype).bits
    expmax = 2 * maxexp - 1  # all-ones exponent field: inf / NaN
    mant_mask = (1 << nmant) - 1
    bits = lax.bitcast_convert_type(x, itype)
    mag = bits & jnp.iinfo(itype).max
    sign = bits ^ mag
    E, m = mag >> nmant, mag & mant_mask
    is_sub = E == 0
    shift = lax.clz(m) - (nbits - 1 - nmant)  # >= 1 for a subnormal: moves its top bit to bit nmant
    E = jnp.where(is_sub, 1 - shift, E) + jnp.asarray(k).astype(itype)
    m = jnp.where(is_sub, (m << jnp.where(is_sub, shift, 0)) & mant_mask, m)
    out = jnp.where(E >= expmax, sign | (expmax << nmant), sign | (E << nmant) | m)
    out = jnp.where(E <= 0, sign, out)  # below the normal range: flushed, as XLA arithmetic does
    out = jnp.where((mag == 0) | (mag >> nmant == expmax), bits, out)  # +-0, inf and NaN stay
    return lax.bitcast_convert_type(out, x.dtype)


def normalize(x) -> tuple[jax.Array, jax.Array]:
    """``(x * 2^-e, e)`` with ``e = max_exponent(x)``: the scaled array has ``max|.| in [1, 2)``
    (all zero stays all zero). Exact except for entries below ``2^-126 max|x|`` (float32), which
    become 0: they are below float32 resolution relative to the largest entry anyway."""
    e = max_exponent(x)
    return ldexp(x, -e), e


def unit_scale(x) -> jax.Array:
    """The array of :func:`normalize`, for measures that are invariant to the scale of ``x``."""
    return normalize(x)[0]


def unit_rows(x) -> jax.Array:
    """Each row of ``x`` times its own power of two, so that its ``max|.|`` is in ``[1, 2)``
    (all-zero rows stay zero), exactly; for per-row scale-invariant uses (directions, argmax)."""
    return ldexp(x, -row_exponents(x))
