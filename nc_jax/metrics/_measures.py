"""NC measures from the sufficient statistics of :mod:`nc_jax.metrics._stats`, and the jitted
programs behind the public functions of :mod:`nc_jax.metrics` (formulas and sources are documented
there).

Scale (see :mod:`nc_jax.metrics._scale`): sums, norms and distances use ``h`` brought to
``max|h| in [1, 2)`` by one exact power of two, ``W`` likewise by its own; directions (unit rows of
``h`` and ``W``, argmax of logits) use one exact power of two per row, taken from the unscaled rows,
so rows far smaller than the largest one keep their direction. The ``prepare_*`` programs do this
and the measure programs take their outputs: one small compiled program per input shape serves all
measures (compiling the same rescaling into each would double the compile time of the tests).
Under an outer ``jit`` / ``vmap`` all of it is traced into the caller's program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics._more import report_extra
from nc_jax.metrics._scale import (ldexp, max_exponent, normalize, row_exponents, unit_rows,
                                   unit_scale)
from nc_jax.metrics._stats import (
    Geometry,
    Stats1,
    Stats2,
    cosine_gram,
    divide_rows,
    fro_normalize,
    geometry,
    geometry_of,
    means_from,
    mm,
    ncc_scores,
    normalize_rows,
    offdiag_mask,
    row_norms,
    safe_div,
    segsum,
    shifted_sums,
    stats1,
    stats2,
)

# ----------------------------------------------------------------------------------------------
# Measures from statistics
# ----------------------------------------------------------------------------------------------


def cos_matrix_from(unit_sums, unit_counts):
    """(C, C) average cosines from per-class sums of unit vectors (C, d) and their counts (C,)."""
    ubar = unit_sums / jnp.maximum(unit_counts, 1).astype(unit_sums.dtype)[:, None]
    # Lemma 2.4.4: the average of cos over all ordered pairs (i, j) of two classes equals the inner
    # product of the classes' mean unit vectors.
    return jnp.clip(mm(ubar, ubar.T), -1.0, 1.0)


def cos_summary(G, C):
    off = offdiag_mask(C)
    intra = jnp.diag(G)
    return {
        "min_intra": jnp.min(intra),
        "max_inter": jnp.max(jnp.where(off, G, -jnp.inf)),
        "mean_intra": jnp.mean(intra),
        "mean_inter": jnp.sum(jnp.where(off, G, 0)) / (C * (C - 1)),
    }


def nc1_from(proj_sq, inv_sv, n):
    # tr(Sigma_W Sigma_B^+)/C = (1/N) sum_j sum_i <v_j, h_i - mu_{y_i}>^2 / s_j^2 ; dividing twice by
    # s_j (instead of by s_j^2) postpones overflow for tiny kept singular values.
    return jnp.sum((proj_sq * inv_sv) * inv_sv) / n


def _std(x, ddof):
    n = x.shape[0]
    mean = jnp.mean(x)
    return jnp.sqrt(jnp.sum((x - mean) ** 2) / max(n - ddof, 1))


def nc2_from(V, U, C):
    """Equinorm, equiangularity and max-angle of the rows of V (C, d) at unit scale; U: its unit rows."""
    norms = row_norms(V)
    equinorm = safe_div(_std(norms, 1), jnp.mean(norms))
    G = cosine_gram(U)
    iu = np.triu_indices(C, k=1)
    pair_cos = G[iu]  # each unordered pair c < c' once
    off = offdiag_mask(C)
    return {
        "equinorm": equinorm,
        "equiangular": _std(pair_cos, 1),
        "maxangle": jnp.sum(jnp.where(off, jnp.abs(G + 1.0 / (C - 1)), 0)) / (C * (C - 1)),
    }


def nc3_from(W, Wn, means, M):
    """NC3 of weights W (C, d) at unit scale with unit rows Wn, against class means (C, d) and
    centered means M (computed at unit scale)."""
    diff = fro_normalize(W) - fro_normalize(M)
    Hn, _ = divide_rows(means)
    cos = jnp.clip(jnp.sum(Wn * Hn, axis=1), -1.0, 1.0)
    return {"nc3": jnp.sum(diff * diff), "cos": cos, "min_cos": jnp.min(cos), "mean_cos": jnp.mean(cos)}


def cdnv_from(within_sq, counts, M, C):
    var = within_sq / jnp.maximum(counts, 1).astype(within_sq.dtype)
    sq = jnp.sum(M * M, axis=1)
    dist2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * mm(M, M.T), 0.0)
    num = var[:, None] + var[None, :]
    # Coinciding means: the ratio is +inf unless both classes also have zero variance (0/0 := 0).
    ratio = jnp.where(dist2 > 0, num / (2.0 * jnp.where(dist2 > 0, dist2, 1)), jnp.where(num > 0, jnp.inf, 0.0))
    off = offdiag_mask(C)
    return jnp.sum(jnp.where(off, ratio, 0)) / (C * (C - 1))


def report_from(s1: Stats1, geom: Geometry, s2: Stats2, C, W=None, has_logits=False):
    """The flat report dict (see :func:`nc_jax.metrics.collapse_report`) from both passes;
    ``W``: ``(W at unit scale, unit rows of W)`` from :func:`weights_at_unit_scale`, or None."""
    n = jnp.sum(s1.counts).astype(geom.means.dtype)
    out = cos_summary(cos_matrix_from(s1.unit_sums, s1.unit_counts), C)
    out["nc1"] = nc1_from(s2.proj_sq, geom.inv_sv, n)
    for key, val in nc2_from(geom.centered, divide_rows(geom.centered)[0], C).items():
        out[f"nc2_{key}"] = val
    out["ncc_accuracy"] = s2.ncc_correct.astype(n.dtype) / n
    out["cdnv"] = cdnv_from(s2.within_sq, s1.counts, geom.centered, C)
    if W is not None:
        r3 = nc3_from(*W, geom.means, geom.centered)
        out["nc3"], out["nc3_min_cos"], out["nc3_mean_cos"] = r3["nc3"], r3["min_cos"], r3["mean_cos"]
        for key, val in nc2_from(*W, C).items():
            out[f"nc2_{key}_weights"] = val
    if has_logits:
        out["nc4"] = s2.nc4_mismatch.astype(n.dtype) / n
    out.update(report_extra(geom, s2.within_sq, n, C, W))
    return out


def report_impl(h, units, y, num_classes, W=None, logits=None):
    """Report of ``h`` at unit scale with ``units = normalize_rows(unscaled h)``; ``W`` prepared by
    :func:`weights_at_unit_scale`, ``logits`` by ``unit_rows``."""
    C = num_classes
    s1 = stats1(h, y, C, units)
    geom = geometry(s1.counts, s1.ref, s1.shifted_sums, C)
    s2 = stats2(h, y, geom, C, logits)
    return report_from(s1, geom, s2, C, W, logits is not None)


# ----------------------------------------------------------------------------------------------
# Input preparation (shared per input shape) and the programs of the public functions
# ----------------------------------------------------------------------------------------------


def features_at_unit_scale(h):
    """``(h 2^-e, normalize_rows(h))``, ``e = floor(log2 max|h|)``: the row exponents serve both
    the unit rows and ``e``, in one pass over ``h``."""
    exps = row_exponents(h)
    return ldexp(h, -jnp.max(exps)), normalize_rows(h, exps)


def weights_at_unit_scale(W):
    """``(W 2^-e, unit rows of W)`` for W (C, d) at any scale: one exponent for norms (the std of
    the norms of 1e38-sized rows would overflow), one per row for directions."""
    exps = row_exponents(W)
    return ldexp(W, -jnp.max(exps)), normalize_rows(W, exps)[0]


prepare_features = jax.jit(features_at_unit_scale)
prepare_weights = jax.jit(weights_at_unit_scale)
prepare_unit_rows = jax.jit(normalize_rows)  # (unit rows, non-zero mask)
prepare_logits = jax.jit(unit_rows)  # argmax is per-row invariant: one exponent per row
prepare_scale = jax.jit(unit_scale)
prepare_normalize = jax.jit(normalize)  # (h 2^-e, e), for the scale-equivariant class means

static_C = functools.partial(jax.jit, static_argnames=("num_classes",))

report_jit = static_C(report_impl)


@static_C
def layerwise_jit(prepared, y, num_classes):
    """``prepared``: one ``prepare_features`` output per layer."""
    reports = [report_impl(h, units, y, num_classes) for h, units in prepared]
    return {k: jnp.stack([r[k] for r in reports]) for k in reports[0]}


@static_C
def class_means_jit(h, e, y, num_classes):
    # Means are scale-equivariant, not invariant: computed at unit scale (the shifted sums of
    # 1e38-sized features would overflow), then scaled back exactly by the exponent e of h.
    return ldexp(means_from(*shifted_sums(h, y, num_classes)), e)


def _cosines(units, y, C):
    u, nonzero = units
    return cos_matrix_from(segsum(u, y, C), segsum(nonzero.astype(jnp.int32), y, C))


@static_C
def cosine_jit(units, y, num_classes):
    return _cosines(units, y, num_classes)


@static_C
def cosine_centered_jit(h, y, num_classes):
    # Centered at unit scale: the rows h - mu_G are normal floats or 0, so divide_rows suffices.
    hc = h - jnp.mean(means_from(*shifted_sums(h, y, num_classes)), axis=0)
    return _cosines(divide_rows(hc), y, num_classes)


@static_C
def nc1_jit(h, y, num_classes):
    _, geom = geometry_of(h, y, num_classes)
    q = mm(h - jnp.take(geom.means, y, axis=0), geom.basis.T)
    return nc1_from(jnp.sum(q * q, axis=0), geom.inv_sv, h.shape[0])


@static_C
def nc2_jit(h, y, num_classes, W=None):
    _, geom = geometry_of(h, y, num_classes)
    out = nc2_from(geom.centered, divide_rows(geom.centered)[0], num_classes)
    if W is not None:
        out.update({f"{k}_weights": v for k, v in nc2_from(*W, num_classes).items()})
    return out


@static_C
def nc3_jit(h, y, num_classes, W):
    _, geom = geometry_of(h, y, num_classes)
    return nc3_from(*W, geom.means, geom.centered)


@static_C
def ncc_predict_jit(h, y, num_classes):
    _, geom = geometry_of(h, y, num_classes)
    return jnp.argmin(ncc_scores(h, geom.global_mean, geom.centered), axis=1)


@jax.jit
def ncc_to_centers_jit(h, centers):
    """Nearest of the given centers (C, d) for each row of h (N, d), both brought to one exact
    power-of-two scale first, so squared distances neither over- nor underflow."""
    e = jnp.maximum(max_exponent(h), max_exponent(centers))
    h, centers = ldexp(h, -e), ldexp(centers, -e)
    mu_g = jnp.mean(centers, axis=0)
    return jnp.argmin(ncc_scores(h, mu_g, centers - mu_g), axis=1)


@static_C
def nc4_jit(h, y, num_classes, logits):
    pred = ncc_predict_jit(h, y, num_classes=num_classes)
    return jnp.mean(jnp.argmax(logits, axis=1) != pred)


@static_C
def cdnv_jit(h, y, num_classes):
    counts, geom = geometry_of(h, y, num_classes)
    r = h - jnp.take(geom.means, y, axis=0)
    return cdnv_from(segsum(jnp.sum(r * r, axis=1), y, num_classes), counts, geom.centered, num_classes)
