"""Kernels of the NC measures beyond Papyan et al.'s four (formulas and sources in
:mod:`nc_jax.metrics._more_api`, which holds the public functions): trace quotient, simplex-ETF
errors, self-duality error, the spread of ``<w_c, mu_c>``, hyperspherical-uniformity kernel
statistics, CDNV with any distance power, bias collapse, class-averaged NCC agreement and the
ID/OOD orthogonality NC5.

Like :mod:`nc_jax.metrics._measures`, everything takes features at unit scale (``max|h| in [1, 2)``,
one exact power of two) and is traced code only; :func:`report_extra` adds the scale-invariant
ones to :func:`nc_jax.metrics.collapse_report` from the statistics the report already has, so the
streaming report gets them too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics._scale import ldexp, max_exponent
from nc_jax.metrics._stats import (
    divide_rows,
    fro_normalize,
    geometry_of,
    means_from,
    mm,
    ncc_scores,
    normalize_rows,
    offdiag_mask,
    row_norms,
    segsum,
    shifted_sums,
)

static_C = functools.partial(jax.jit, static_argnames=("num_classes",))


def global_mean(means, counts, kind):
    """``mu_G``: ``"class"`` the unweighted mean of the class means (Papyan et al. 2020), or
    ``"sample"`` the mean of all samples ``sum_c N_c mu_c / N`` (e.g. tding1/Neural-Collapse)."""
    if kind == "class":
        return jnp.mean(means, axis=0)
    w = counts.astype(means.dtype)
    return mm(w[None, :], means)[0] / jnp.sum(w)


def _max_scaled(X):
    # A Frobenius-normalised product is invariant to the scale of each factor: dividing by max|X|
    # keeps the Gram entries far from under- and overflow (X is at unit scale, entries normal or 0).
    a = jnp.max(jnp.abs(X))
    return X / jnp.where(a > 0, a, 1)


def etf_target(C, dtype):
    """The normalised simplex-ETF Gram ``(I - 11^T/C) / sqrt(C-1)`` (Frobenius norm 1)."""
    return ((jnp.eye(C) - jnp.ones((C, C)) / C) / np.sqrt(C - 1)).astype(dtype)


def etf_error_from(A, B):
    """``|| B A^T / ||B A^T||_F - (I - 11^T/C)/sqrt(C-1) ||_F`` for A, B (C, d); a zero product
    counts as the zero matrix (error 1)."""
    G = mm(_max_scaled(B), _max_scaled(A).T)
    diff = fro_normalize(G) - etf_target(A.shape[0], G.dtype)
    return row_norms(diff.reshape(1, -1))[0]


def quotient_from(within_sq, n, M, C):
    """``tr(Sigma_W) / tr(Sigma_B)`` with ``tr(Sigma_W) = sum_c within_sq_c / N``,
    ``tr(Sigma_B) = ||M||_F^2 / C``; ``+inf`` if ``Sigma_B = 0 != Sigma_W``, 0 if both are 0."""
    tr_w = jnp.sum(within_sq) / n
    a = jnp.max(jnp.abs(M))
    a = jnp.where(a > 0, a, 1)
    tr_b = jnp.sum(jnp.square(M / a)) / C  # tr(Sigma_B) / a^2
    ok = tr_b > 0
    return jnp.where(ok, ((tr_w / a) / a) / jnp.where(ok, tr_b, 1), jnp.where(tr_w > 0, jnp.inf, 0.0))


def dots_from(W, V, normalized):
    """``p_c = <w_c, v_c>`` of W, V (C, d) at unit scale; ``normalized``: ``C p_c / (||W||_F ||V||_F)``."""
    if normalized:
        return W.shape[0] * jnp.sum(fro_normalize(W) * fro_normalize(V), axis=1)
    return jnp.sum(W * V, axis=1)


def variance(x, ddof):
    n = x.shape[0]
    return jnp.sum(jnp.square(x - jnp.mean(x))) / max(n - ddof, 1)


def pair_distances(V):
    """``(C, C)`` distances between the unit rows of V (zero rows stay 0), from their Gram matrix."""
    U, nonzero = divide_rows(V)
    sq = nonzero.astype(U.dtype)
    return jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * mm(U, U.T), 0.0))


def kernel_values(dist, kernel, s):
    """Kernel of the distances: ``"distance"`` ``||u - u'||``; ``"log"`` ``log(1/||u - u'||)``;
    ``"riesz"`` ``sign(s) ||u - u'||^-s`` (Liu et al. 2023, the hyperspherical energies)."""
    if kernel == "distance":
        return dist
    if kernel == "log":
        return -jnp.log(dist)
    if kernel == "riesz":
        return np.sign(s) * jnp.power(dist, -s) if s != 0 else jnp.ones_like(dist)
    raise ValueError(f"unknown kernel {kernel!r}")


def kernel_stats_from(V, kernel, s):
    """``{"mean", "var"}`` over unordered pairs ``c < c'`` (variance with ddof=0) of the kernel of
    the unit rows of V; ``+inf`` for both if a kernel value is infinite (coinciding directions)."""
    C = V.shape[0]
    k = kernel_values(pair_distances(V), kernel, s)[np.triu_indices(C, k=1)]
    mean = jnp.mean(k)
    finite = jnp.isfinite(mean)
    var = jnp.where(finite, variance(jnp.where(finite, k, 0.0), 0), jnp.inf)
    return {"mean": mean, "var": var}


def report_extra(geom, within_sq, n, C, W=None):
    """The scale-invariant extra keys of :func:`nc_jax.metrics.collapse_report` (names in
    ``nc_jax.metrics._more_api.REPORT_EXTRA`` / ``WEIGHT_EXTRA``), from the report's statistics;
    ``W``: ``(W at unit scale, unit rows of W)``."""
    M = geom.centered
    log = kernel_stats_from(M, "log", 0)
    out = {
        "nc1_quotient": quotient_from(within_sq, n, M, C),
        "etf_error": etf_error_from(M, M),
        "uniformity_log_mean": log["mean"],
        "uniformity_log_var": log["var"],
    }
    if W is not None:
        Wu = W[0]
        out["etf_error_weights"] = etf_error_from(Wu, Wu)
        out["self_duality_error"] = etf_error_from(M, Wu)
        out["nc3_dot_var"] = variance(dots_from(Wu, M, True), 1)
    return out


# ----------------------------------------------------------------------------------------------
# Programs of the public functions (inputs prepared as in nc_jax.metrics._measures)
# ----------------------------------------------------------------------------------------------


def means_and_center(h, y, C, kind):
    """``(N_c, mu_c, mu_G)`` at the scale of ``h``."""
    counts, ref, sums = shifted_sums(h, y, C)
    means = means_from(counts, ref, sums)
    return counts, means, global_mean(means, counts, kind)


@functools.partial(jax.jit, static_argnames=("num_classes", "global_mean_kind", "with_w"))
def etf_errors_jit(h, y, W, num_classes, global_mean_kind, with_w):
    _, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    M = means - mu_g
    out = {"etf_error": etf_error_from(M, M)}
    if with_w:
        out["etf_error_weights"] = etf_error_from(W, W)
        out["self_duality_error"] = etf_error_from(M, W)
    return out


def spectrum_from(A):
    """``(s / s_1, erank)`` of the (C, d) matrix ``A``: its singular values s_1 >= s_2 >= ...
    divided by the largest (length min(C, d), padded with zeros to C), and the entropy effective
    rank ``exp(-sum_i p_i log p_i)``, ``p_i = s_i / sum_j s_j`` (Roy & Vetterli 2007). Both are
    invariant to the scale of ``A``; ``A = 0`` gives zeros."""
    C = A.shape[0]
    s = jnp.linalg.svd(_max_scaled(A), compute_uv=False)
    total = jnp.sum(s)
    p = s / jnp.where(total > 0, total, 1)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0))
    erank = jnp.where(total > 0, jnp.exp(ent), 0)
    return jnp.pad(s / jnp.where(s[0] > 0, s[0], 1), (0, C - s.shape[0])), erank


@functools.partial(jax.jit, static_argnames=("num_classes", "global_mean_kind", "center"))
def spectrum_jit(h, y, num_classes, global_mean_kind, center):
    _, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    return spectrum_from(means - mu_g if center else means)


@functools.partial(jax.jit, static_argnames=("num_classes", "global_mean_kind"))
def quotient_jit(h, y, num_classes, global_mean_kind):
    counts, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    r = h - jnp.take(means, y, axis=0)
    return quotient_from(jnp.sum(r * r), h.shape[0], means - mu_g, num_classes)


@functools.partial(jax.jit, static_argnames=("num_classes", "global_mean_kind"))
def class_distances_jit(h, e, y, num_classes, global_mean_kind):
    _, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    return ldexp(row_norms(means - mu_g), e)  # norms are scale-equivariant: back to the input's scale


@functools.partial(jax.jit, static_argnames=("num_classes", "kernel", "s", "global_mean_kind"))
def kernel_stats_jit(h, y, num_classes, kernel, s, global_mean_kind):
    _, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    return kernel_stats_from(means - mu_g, kernel, s)


@functools.partial(jax.jit, static_argnames=("num_classes", "center", "normalized", "ddof",
                                             "global_mean_kind"))
def dot_var_jit(h, eh, y, W, ew, num_classes, center, normalized, ddof, global_mean_kind):
    _, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    v = variance(dots_from(W, means - mu_g if center else means, normalized), ddof)
    # raw products scale with 2^(eh + ew), their variance with the square of that
    return v if normalized else ldexp(v, 2 * (eh + ew))


def _common_exponent_sum(a, ea, b):
    """``a 2^ea + b`` (a, b (C,), ea an int scalar) as ``(value 2^-m, m)`` without over- or
    underflow of the terms: both are brought to the larger of their exponents first."""
    m = jnp.maximum(ea + max_exponent(a), max_exponent(b))
    return ldexp(a, ea - m) + ldexp(b, -m), m


@functools.partial(jax.jit, static_argnames=("num_classes", "global_mean_kind"))
def bias_collapse_jit(h, eh, y, W, ew, b, num_classes, global_mean_kind):
    _, means, mu_g = means_and_center(h, y, num_classes, global_mean_kind)
    v, m = _common_exponent_sum(mm(W, mu_g[:, None])[:, 0], eh + ew, b)
    return ldexp(row_norms(v[None, :])[0], m)


def network_predictions(h, eh, W, ew, b):
    """``argmax_c (h W^T + b)_c`` per row; without ``b`` each row of ``h`` keeps its own scale."""
    if b is None:
        return jnp.argmax(mm(normalize_rows(h)[0], W.T), axis=1)
    scores = mm(h, W.T)
    m = jnp.maximum(eh + ew + max_exponent(scores), max_exponent(b))
    return jnp.argmax(ldexp(scores, eh + ew - m) + ldexp(b, -m)[None, :], axis=1)


def agreement_from(net, ncc, y, C, average, agree=True):
    """Agreement ``[net_i == ncc_i]`` (``agree=False``: mismatch ``[net_i != ncc_i]``), averaged over
    samples or (``average="class"``) over each class first, then over classes."""
    hit = ((net == ncc) if agree else (net != ncc)).astype(jnp.float32)
    if average == "sample":
        return jnp.mean(hit)
    counts = segsum(jnp.ones_like(hit), y, C)
    return jnp.mean(segsum(hit, y, C) / jnp.maximum(counts, 1))


def ncc_predictions(h, y, C):
    _, geom = geometry_of(h, y, C)
    return jnp.argmin(ncc_scores(h, geom.global_mean, geom.centered), axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes", "average"))
def agreement_logits_jit(h, y, logits, num_classes, average):
    """``logits`` as ``unit_rows(logits)`` (argmax is per-row invariant)."""
    return agreement_from(jnp.argmax(logits, axis=1), ncc_predictions(h, y, num_classes), y,
                          num_classes, average)


@functools.partial(jax.jit, static_argnames=("num_classes", "average"))
def agreement_weights_jit(h, eh, y, W, ew, b, num_classes, average):
    net = network_predictions(h, eh, W, ew, b)
    return agreement_from(net, ncc_predictions(h, y, num_classes), y, num_classes, average)


@functools.partial(jax.jit, static_argnames=("num_classes", "power"))
def cdnv_power_jit(h, e, y, num_classes, power):
    """CDNV with ``||mu_c - mu_c'||^power``: computed at unit scale, where the ratio equals the raw
    one times ``2^(e (power - 2))`` (variances scale with ``2^(2e)``, distances with ``2^e``)."""
    C = num_classes
    counts, ref, sums = shifted_sums(h, y, C)
    means = means_from(counts, ref, sums)
    r = h - jnp.take(means, y, axis=0)
    var = segsum(jnp.sum(r * r, axis=1), y, C) / jnp.maximum(counts, 1).astype(h.dtype)
    M = means - jnp.mean(means, axis=0)
    sq = jnp.sum(M * M, axis=1)
    dist2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * mm(M, M.T), 0.0)
    num = var[:, None] + var[None, :]
    pos = dist2 > 0
    den = 2.0 * jnp.power(jnp.where(pos, dist2, 1.0), power / 2)
    ratio = jnp.where(pos, num / den, jnp.where(num > 0, jnp.inf, 0.0))
    mean = jnp.sum(jnp.where(offdiag_mask(C), ratio, 0)) / (C * (C - 1))
    if float(power).is_integer():  # an exact power of two
        return ldexp(mean, (2 - int(power)) * e)
    return mean * jnp.exp2((2.0 - power) * e.astype(h.dtype))


@functools.partial(jax.jit, static_argnames=("num_classes", "per_sample"))
def nc5_jit(h, y, h_ood, num_classes, per_sample):
    """``h`` at unit scale, ``h_ood`` as given (cosines need only directions)."""
    _, means, _ = means_and_center(h, y, num_classes, "class")
    U = divide_rows(means)[0]
    if per_sample:  # each OOD row keeps its direction however small it is
        return jnp.mean(jnp.abs(jnp.clip(mm(normalize_rows(h_ood)[0], U.T), -1.0, 1.0)))
    g = jnp.mean(ldexp(h_ood, -max_exponent(h_ood)), axis=0)
    g = divide_rows(g[None, :])[0][0]
    return jnp.mean(jnp.abs(jnp.clip(mm(U, g[:, None])[:, 0], -1.0, 1.0)))
