"""The peers' conventions as options of :func:`nc_jax.metrics.nc1`, ``nc2``, ``nc3``, ``nc4`` and
``cdnv`` (the options are documented there and in ``docs/metrics.md``): the global mean
(``"class"``: mean of the class means, the default; ``"sample"``: mean of all samples), the ddof of
the NC2 standard deviations, NC1 with or without the ``1/C``, centred or uncentred NC3 cosines,
NC4 averaged over samples or classes.

The defaults never come here: the public functions call today's programs for them, so their
numbers stay bit-identical. Options are static (Python values), one compiled program per choice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics._measures import nc1_jit as nc1_default_jit
from nc_jax.metrics._measures import (_std, nc1_from, prepare_logits, prepare_normalize, prepare_scale,
                                     prepare_weights)
from nc_jax.metrics._more import agreement_from, cdnv_power_jit, global_mean, ncc_predictions
from nc_jax.metrics._stats import (
    Geometry,
    cosine_gram,
    divide_rows,
    fro_normalize,
    geometry,
    means_from,
    mm,
    offdiag_mask,
    row_norms,
    safe_div,
    shifted_sums,
)

GLOBAL_MEANS = ("class", "sample")
AVERAGES = ("sample", "class")


def check_choice(value, allowed, name):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_ddof(ddof):
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative Python int; got {ddof!r}")
    return int(ddof)


def geometry_with(h, y, C, kind) -> tuple[jax.Array, Geometry]:
    """``(N_c, Geometry)`` with the global mean of ``kind``. The sample mean is a convex
    combination of the class means, so ``M`` keeps rank <= C-1 and NC1 keeps the top C-1
    directions of its SVD, with the rounding floor of :func:`nc_jax.metrics._stats.geometry`."""
    counts, ref, sums = shifted_sums(h, y, C)
    if kind == "class":
        return counts, geometry(counts, ref, sums, C)
    means = means_from(counts, ref, sums)
    mu_g = global_mean(means, counts, kind)
    M = means - mu_g
    _, s, vt = jnp.linalg.svd(M, full_matrices=False)
    k = min(C - 1, M.shape[1])
    s, vt = s[:k], vt[:k]
    keep = s > jnp.maximum(s[0], jnp.max(row_norms(means))) * (C * jnp.finfo(M.dtype).eps)
    return counts, Geometry(means, mu_g, M, vt, jnp.where(keep, 1.0 / jnp.where(keep, s, 1), 0))


def nc2_rows(V, C, ddof):
    """Equinorm, equiangularity, max-angle of the rows of V (C, d), standard deviations with ``ddof``."""
    U = divide_rows(V)[0]
    norms = row_norms(V)
    G = cosine_gram(U)
    off = offdiag_mask(C)
    return {
        "equinorm": safe_div(_std(norms, ddof), jnp.mean(norms)),
        "equiangular": _std(G[np.triu_indices(C, k=1)], ddof),
        "maxangle": jnp.sum(jnp.where(off, jnp.abs(G + 1.0 / (C - 1)), 0)) / (C * (C - 1)),
    }


def _static(*names):
    return functools.partial(jax.jit, static_argnames=("num_classes", *names))


@_static("kind")
def nc1_jit(h, y, num_classes, kind):
    _, geom = geometry_with(h, y, num_classes, kind)
    q = mm(h - jnp.take(geom.means, y, axis=0), geom.basis.T)
    return nc1_from(jnp.sum(q * q, axis=0), geom.inv_sv, h.shape[0])


@_static("kind", "ddof")
def nc2_jit(h, y, num_classes, kind, ddof, W=None):
    """``W``: W at unit scale (rows uncentred, as in Papyan et al.), or None."""
    _, geom = geometry_with(h, y, num_classes, kind)
    out = nc2_rows(geom.centered, num_classes, ddof)
    if W is not None:
        out.update({f"{k}_weights": v for k, v in nc2_rows(W, num_classes, ddof).items()})
    return out


@_static("kind", "center_cos")
def nc3_jit(h, y, W, num_classes, kind, center_cos):
    """``W``: ``(W at unit scale, unit rows of W)``."""
    _, geom = geometry_with(h, y, num_classes, kind)
    diff = fro_normalize(W[0]) - fro_normalize(geom.centered)
    V = geom.centered if center_cos else geom.means
    cos = jnp.clip(jnp.sum(W[1] * divide_rows(V)[0], axis=1), -1.0, 1.0)
    return {"nc3": jnp.sum(diff * diff), "cos": cos, "min_cos": jnp.min(cos), "mean_cos": jnp.mean(cos)}


@_static("average")
def nc4_jit(h, y, logits, num_classes, average):
    """Mismatch of ``argmax(logits)`` (``logits`` as ``unit_rows``) and the NCC prediction."""
    return agreement_from(jnp.argmax(logits, axis=1), ncc_predictions(h, y, num_classes), y,
                          num_classes, average, agree=False)


# ----------------------------------------------------------------------------------------------
# Entry points of the public functions for non-default options (inputs from ``prepare``)
# ----------------------------------------------------------------------------------------------


def nc1(h, y, C, global_mean, per_class):
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    if kind == "class":  # today's program: per_class=False is exactly C times nc1's number
        out = nc1_default_jit(prepare_scale(h), y, num_classes=C)
    else:
        out = nc1_jit(prepare_scale(h), y, num_classes=C, kind=kind)
    return out if per_class else out * C


def nc2(h, y, C, W, global_mean, ddof):
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    Wu = None if W is None else prepare_scale(W)
    return nc2_jit(prepare_scale(h), y, num_classes=C, kind=kind, ddof=check_ddof(ddof), W=Wu)


def nc3(h, y, C, W, global_mean, center_cos):
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    return nc3_jit(prepare_scale(h), y, prepare_weights(W), num_classes=C, kind=kind,
                   center_cos=bool(center_cos))


def nc4(h, y, C, logits, average):
    check_choice(average, AVERAGES, "average")
    return nc4_jit(prepare_scale(h), y, prepare_logits(logits), num_classes=C, average=average)


def cdnv(h, y, C, power):
    if isinstance(power, (bool, np.bool_)) or not isinstance(power, (int, float, np.integer, np.floating)) \
            or not np.isfinite(power) or power <= 0:
        raise ValueError(f"power must be a positive finite number; got {power!r}")
    return cdnv_power_jit(*prepare_normalize(h), y, num_classes=C, power=float(power))
