"""Public NC measures beyond Papyan et al.'s four, re-exported by :mod:`nc_jax.metrics` (whose
conventions hold here: ``(h, y, num_classes, ...)``, ``mu_G`` the unweighted mean of the class
means unless ``global_mean="sample"``, ``M`` the centred class means ``mu_c - mu_G``, inputs
validated when concrete and trusted under ``jit`` / ``vmap``, exact power-of-two rescaling).

Sources: Zhu et al. 2021, "A geometric analysis of neural collapse with unconstrained features"
(simplex-ETF and self-duality errors); Tirer, Huang & Niles-Weed 2023 (trace quotient); Liu et
al. 2023, "Generalizing and decoupling neural collapse via hyperspherical uniformity gap"
(kernel energies); Galanti et al. 2022 (CDNV); Ammar et al. 2024, "NECO" (NC5); the
rhubarbwu/neural-collapse library (measure names in ``docs/metrics.md``).
"""

from __future__ import annotations

import jax
import numpy as np

from nc_jax.metrics import _measures as _k
from nc_jax.metrics import _more
from nc_jax.metrics._checks import as_float, check_features, check_finite, is_tracer, prepare
from nc_jax.metrics._conventions import AVERAGES, GLOBAL_MEANS, check_choice, check_ddof

#: Extra keys of :func:`~nc_jax.metrics.collapse_report` that need only ``(h, y)``.
REPORT_EXTRA = ("nc1_quotient", "etf_error", "uniformity_log_mean", "uniformity_log_var")
#: Extra keys of :func:`~nc_jax.metrics.collapse_report` when ``W`` is given.
WEIGHT_EXTRA = ("etf_error_weights", "self_duality_error", "nc3_dot_var")
#: Keys of :func:`~nc_jax.metrics.collapse_report` when ``W`` and the bias ``b`` are given.
BIAS_KEYS = ("bias_collapse",)
KERNELS = ("log", "riesz", "distance")


def prepare_bias(b, num_classes):
    """``b`` as a float array, checked when concrete: shape ``(C,)``, finite."""
    b = as_float(b)
    if not is_tracer(b):
        if b.shape != (num_classes,):
            raise ValueError(f"b shape mismatch: expected (num_classes,) = ({num_classes},), got "
                             f"{tuple(b.shape)} (one bias per class: logits = h @ W.T + b)")
        check_finite(b, "bias b")
    return b


def _with_weights(h, y, num_classes, W, func):
    h, y, C, W, _ = prepare(h, y, num_classes, W=W, func=func)
    if W is None:
        raise ValueError(f"{func} needs the classifier weights W of shape (num_classes, d)")
    return h, y, C, W


def nc1_quotient(h, y, num_classes: int, *, global_mean: str = "class") -> jax.Array:
    """``tr(Sigma_W) / tr(Sigma_B)`` (Tirer, Huang & Niles-Weed 2023; rhubarbwu's
    ``covariance_ratio(..., metric="quotient")``), with ``Sigma_W``, ``Sigma_B`` as in
    :func:`~nc_jax.metrics.nc1`: ``tr(Sigma_W) = (1/N) sum_i ||h_i - mu_{y_i}||^2``,
    ``tr(Sigma_B) = ||M||_F^2 / C``. No pseudo-inverse. ``+inf`` if all class means coincide but
    the features spread, 0 if both traces are 0. Returns a scalar."""
    h, y, C, _, _ = prepare(h, y, num_classes, func="nc1_quotient")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    return _more.quotient_jit(_k.prepare_scale(h), y, num_classes=C, global_mean_kind=kind)


def etf_error(h, y, num_classes: int, W=None, *, global_mean: str = "class") -> dict[str, jax.Array]:
    """Distance of the normalised Gram matrix to the simplex ETF (Zhu et al. 2021, NC2):

    ``etf_error = || G/||G||_F - (I - 11^T/C)/sqrt(C-1) ||_F`` with ``G = M M^T`` (C x C); with
    ``W`` also ``etf_error_weights``, the same for ``G = W W^T`` (uncentred rows ``w_c``).
    0 for a simplex ETF of any scale, at most 2; a zero Gram counts as the zero matrix (error 1).
    Returns a dict of scalars.
    """
    h, y, C, W, _ = prepare(h, y, num_classes, W=W, func="etf_error")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    Wu = None if W is None else _k.prepare_scale(W)
    out = _more.etf_errors_jit(_k.prepare_scale(h), y, Wu, num_classes=C, global_mean_kind=kind,
                               with_w=W is not None)
    out.pop("self_duality_error", None)
    return out


def self_duality_error(h, y, num_classes: int, W, *, global_mean: str = "class") -> jax.Array:
    """Self-duality as an ETF pair (Zhu et al. 2021, their NC3; rhubarbwu's
    ``self_duality_error``; tding1's ``compute_W_H_relation`` with ``global_mean="sample"``):

    ``|| W M^T / ||W M^T||_F - (I - 11^T/C)/sqrt(C-1) ||_F``.

    0 when ``w_c = a (mu_c - mu_G)`` (a > 0) and the centred means form a simplex ETF; compare
    :func:`~nc_jax.metrics.nc3`'s ``nc3 = ||W/||W||_F - M/||M||_F||_F^2`` (Papyan et al.), which
    needs no ETF. Returns a scalar.
    """
    h, y, C, W = _with_weights(h, y, num_classes, W, "self_duality_error")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    out = _more.etf_errors_jit(_k.prepare_scale(h), y, _k.prepare_scale(W), num_classes=C,
                               global_mean_kind=kind, with_w=True)
    return out["self_duality_error"]


def nc3_dot_var(h, y, num_classes: int, W, *, center: bool = True, normalized: bool = True,
                ddof: int = 1, global_mean: str = "class") -> jax.Array:
    """Variance over classes of the classifier-mean products ``p_c = <w_c, v_c>``, ``v_c = mu_c -
    mu_G`` (``center=False``: ``v_c = mu_c``); equal ``p_c`` is what self-duality with equinorm
    means gives (rhubarbwu's ``similarities(W, M, mG).var()``, "uniform duality").

    ``normalized=True`` (default, scale-invariant): ``p_c -> C p_c / (||W||_F ||V||_F)``, whose
    mean is the cosine of W and V as vectors; ``normalized=False``: the raw products, which scale
    with ``h`` and ``W`` (the variance overflows to inf beyond float range). ``ddof``: 1 as
    ``torch.var``. Returns a scalar.
    """
    h, y, C, W = _with_weights(h, y, num_classes, W, "nc3_dot_var")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    hu, eh = _k.prepare_normalize(h)
    Wu, ew = _k.prepare_normalize(W)
    return _more.dot_var_jit(hu, eh, y, Wu, ew, num_classes=C, center=bool(center),
                             normalized=bool(normalized), ddof=check_ddof(ddof),
                             global_mean_kind=kind)


def bias_collapse(h, y, num_classes: int, W, b, *, global_mean: str = "class") -> jax.Array:
    """Bias collapse ``||W mu_G + b||_2``: 0 when the bias cancels the classifier's response to the
    global mean, so that the logits ``W (h - mu_G)`` see only the centred features, as in the
    collapsed geometry of Papyan et al. 2020 (rhubarbwu's measures centre by ``mu_G`` likewise).
    Not scale-invariant: it is in units of the logits. W (C, d), b (C,). Returns a scalar."""
    h, y, C, W = _with_weights(h, y, num_classes, W, "bias_collapse")
    b = prepare_bias(b, C)
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    hu, eh = _k.prepare_normalize(h)
    Wu, ew = _k.prepare_normalize(W)
    return _more.bias_collapse_jit(hu, eh, y, Wu, ew, b, num_classes=C, global_mean_kind=kind)


def class_distances(h, y, num_classes: int, *, global_mean: str = "class") -> jax.Array:
    """Per-class distances ``||mu_c - mu_G||`` (C,) (rhubarbwu's ``mean_norms``); their
    coefficient of variation (ddof=1) is :func:`~nc_jax.metrics.nc2`'s ``equinorm``. Computed at
    unit scale and scaled back exactly."""
    h, y, C, _, _ = prepare(h, y, num_classes, func="class_distances")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    hu, e = _k.prepare_normalize(h)
    return _more.class_distances_jit(hu, e, y, num_classes=C, global_mean_kind=kind)


def class_mean_spectrum(h, y, num_classes: int, *, center: bool = True,
                        global_mean: str = "class") -> dict[str, jax.Array]:
    """The singular spectrum of the class-mean matrix: how many well-separated directions the
    classes span. With ``center=True`` the matrix is ``M`` (rows ``mu_c - mu_G``), else the raw
    class means (rows ``mu_c``, what uncentred cosines see).

    Returns ``spectrum`` (C,): the singular values ``s_1 >= s_2 >= ...`` divided by ``s_1``
    (min(C, d) of them, then zeros), and ``effective_rank``: ``exp(-sum_i p_i log p_i)`` with
    ``p_i = s_i / sum_j s_j`` (Roy & Vetterli 2007, "The effective rank"). A simplex ETF has
    ``C - 1`` equal singular values and a zero one (rows of ``M`` sum to 0): spectrum
    ``(1, ..., 1, 0)``, effective rank ``C - 1``; means on fewer directions give a lower rank.
    Both are invariant to ``h -> s h``."""
    h, y, C, _, _ = prepare(h, y, num_classes, func="class_mean_spectrum")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    spectrum, erank = _more.spectrum_jit(_k.prepare_scale(h), y, num_classes=C,
                                         global_mean_kind=kind, center=bool(center))
    return {"spectrum": spectrum, "effective_rank": erank}


def uniformity(h, y, num_classes: int, *, kernel: str = "log", s=None,
               global_mean: str = "class") -> dict[str, jax.Array]:
    """Hyperspherical-uniformity statistics of the normalised centred means ``u_c = m_c/||m_c||``
    (Liu et al. 2023; rhubarbwu's ``kernel_stats``): mean and variance (ddof=0) over the unordered
    pairs ``c < c'`` of ``K(||u_c - u_c'||)`` with

    * ``kernel="log"``: ``K(r) = log(1/r)`` (logarithmic energy);
    * ``kernel="riesz"``: ``K(r) = sign(s) r^-s``, ``s = d - 2`` by default (Riesz s-energy; for
      large d the power under- or overflows float32);
    * ``kernel="distance"``: ``K(r) = r``.

    A simplex ETF minimises both energies and gives variance 0. A zero centred mean counts as the
    zero vector (distance 1 to every unit vector); coinciding directions give ``+inf`` (mean and
    variance). Distances come from the Gram matrix of the ``u_c`` (resolution about
    ``sqrt(eps)``). Returns ``{"mean", "var"}``.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="uniformity")
    check_choice(kernel, KERNELS, "kernel")
    kind = check_choice(global_mean, GLOBAL_MEANS, "global_mean")
    if s is None:
        s = h.shape[1] - 2
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, float, np.integer, np.floating)) \
            or not np.isfinite(s):
        raise ValueError(f"s must be a finite Python number; got {s!r}")
    return _more.kernel_stats_jit(_k.prepare_scale(h), y, num_classes=C, kernel=kernel,
                                  s=float(s), global_mean_kind=kind)


def ncc_agreement(h, y, num_classes: int, W, b=None, *, average: str = "sample") -> jax.Array:
    """Agreement of the linear classifier ``argmax_c (h_i W^T + b)_c`` (``b=None``: no bias, as
    rhubarbwu's ``DecAccumulator``) with the nearest class mean ``argmin_c ||h_i - mu_c||``:
    ``average="sample"``: ``(1/N) sum_i [agree_i]`` (= 1 - :func:`~nc_jax.metrics.nc4` of those
    logits; rhubarbwu's ``clf_ncc_agreement(weighted=True)``); ``average="class"``:
    ``(1/C) sum_c (1/N_c) sum_{i in c} [agree_i]`` (``weighted=False``). Ties go to the lowest
    class. Returns a scalar in [0, 1]."""
    h, y, C, W = _with_weights(h, y, num_classes, W, "ncc_agreement")
    b = None if b is None else prepare_bias(b, C)
    check_choice(average, AVERAGES, "average")
    hu, eh = _k.prepare_normalize(h)
    Wu, ew = _k.prepare_normalize(W)
    return _more.agreement_weights_jit(hu, eh, y, Wu, ew, b, num_classes=C, average=average)


def nc5(h, y, num_classes: int, h_ood, *, per_sample: bool = False) -> jax.Array:
    """NC5, ID/OOD orthogonality (Ammar et al. 2024, "NECO: neural collapse based
    out-of-distribution detection", ICLR, arXiv 2310.06823), in the form of rhubarbwu's
    ``orthogonality_deviation``, which cites it:

    ``NC5 = (1/C) sum_c |<mu_c, mu_OOD>| / (||mu_c|| ||mu_OOD||)``, ``mu_c`` the (uncentred) class
    means of the in-distribution ``(h, y)``, ``mu_OOD`` the mean of the OOD features ``h_ood``
    (M', d). ``per_sample=True``: ``(1/(M' C)) sum_{i, c} |cos(h_ood_i, mu_c)|`` instead. 0 when
    the OOD data is orthogonal to every class mean. Zero vectors have cosine 0. Returns a scalar.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="nc5")
    h_ood = as_float(h_ood)
    if not is_tracer(h_ood) and not is_tracer(h):
        check_features(h_ood, what="OOD features h_ood")
        if h_ood.shape[1] != h.shape[1]:
            raise ValueError(f"shape mismatch: h_ood has d={h_ood.shape[1]} columns but h has "
                             f"d={h.shape[1]}")
    return _more.nc5_jit(_k.prepare_scale(h), y, h_ood.astype(h.dtype), num_classes=C,
                         per_sample=bool(per_sample))


def bias_report(h, y, C, W, b):
    """``{"bias_collapse": ...}`` for :func:`~nc_jax.metrics.collapse_report` (inputs prepared)."""
    if W is None:
        raise ValueError("collapse_report: the bias b needs the classifier weights W")
    hu, eh = _k.prepare_normalize(h)
    Wu, ew = _k.prepare_normalize(W)
    return {"bias_collapse": _more.bias_collapse_jit(hu, eh, y, Wu, ew, prepare_bias(b, C),
                                                     num_classes=C, global_mean_kind="class")}
