"""Neural Collapse (NC) measures: exact, jit-able, vmappable, per-layer and streaming.

Conventions used by every function
----------------------------------
* ``h``: features, shape ``(N, d)``, any float dtype (NumPy or JAX); computed in float32 unless the
  input is already float64 with ``jax_enable_x64`` on. Integer / half-precision inputs are upcast.
* ``y``: integer labels, shape ``(N,)``, values in ``[0, C)``; every class needs >= 1 sample.
* ``num_classes`` (C): a static Python int >= 2 (it fixes array shapes, so it cannot be traced).
  Every function takes ``(h, y, num_classes, ...)`` in this order, W / logits after ``num_classes``.
* ``W``: classifier weights, shape ``(C, d)``, row ``w_c`` scores class ``c`` (logits = ``h @ W.T``).
* ``logits``: shape ``(N, C)``.
* Class means ``mu_c = (1/N_c) sum_{i: y_i = c} h_i``; global mean ``mu_G = (1/C) sum_c mu_c`` is the
  *unweighted* mean of the class means (Papyan, Han & Donoho 2020, "Prevalence of neural collapse",
  PNAS; their convention, which differs from the sample mean for imbalanced data).
  ``M`` is the ``(C, d)`` matrix of centered class means, rows ``mu_c - mu_G``.

Validation and transformations
------------------------------
Every public function checks its inputs at the Python boundary when they are concrete (NumPy
arrays or committed JAX arrays) and raises ``ValueError`` naming the problem: shape mismatch,
labels outside ``[0, C)`` or not integer, a class with no sample (the class is named), ``C < 2``,
non-finite features / weights / logits, and a wrong ``W`` or ``logits`` shape. The same functions
may be called inside ``jax.jit``, ``jax.vmap`` (e.g. over a leading run axis) or ``lax.scan``;
there the inputs are tracers, the checks cannot run and **inputs are trusted**. What bad input
then gives (measured with :func:`collapse_report` under ``jit``): a class with no sample gives
finite but meaningless numbers (``min_intra = 0`` from the empty class; its row of
:func:`class_means` is arbitrary); a label ``>= C`` makes ``nc1`` NaN while the other keys stay
finite, the row counting for no class; a negative label is dropped silently (every key finite);
NaN / inf features make most keys NaN, but ``cdnv`` (0), ``ncc_accuracy`` and ``nc4`` come back as
finite numbers. :func:`checked` runs the checks inside the transformation instead
(``jax.experimental.checkify``): ``err, out = jax.jit(checked(nc1), static_argnums=2)(h, y, C)``
then ``err.throw()`` raises a ``ValueError`` naming the label, the empty class or the count of
non-finite values (under ``vmap``, ``err.get()`` also names the failing example).
``num_classes`` is checked in all cases because it is static.

Nothing here forms a ``d x d`` matrix; the cost is ``O(N d C)`` time and ``O(N d + C d)`` memory
(``O(C d)`` for :func:`collapse_report_streaming`), so ``d = 4096`` is cheap.

Zero-norm feature rows
----------------------
Cosine similarities of a zero vector are undefined. In :func:`cosine_similarity_matrix` (and the
cosine keys of :func:`collapse_report`) feature rows with ``||h_i|| = 0`` are **skipped**: the
averages run over the pairs of non-zero rows only. A class whose rows are all zero gets a zero
normalized mean, hence ``intra_c = 0`` and ``inter_cc' = 0``. Likewise a centered class mean or a
weight row of zero norm gets cosine 0 with everything in :func:`nc2` / :func:`nc3`. No valid input
produces NaN. All-zero features ``h = 0`` give the degenerate values of these conventions:
cosines 0, ``nc1 = cdnv = 0`` (``Sigma_W = Sigma_B = 0``; a pair of coinciding means with zero
spread counts 0), ``nc2_equinorm = nc2_equiangular = 0``, ``nc2_maxangle = 1/(C-1)``,
``ncc_accuracy = N_0/N`` (all distances tie; ties go to class 0), ``nc4`` the fraction of rows
whose ``argmax`` logit is not class 0, ``nc3 = 1`` and ``nc3_*_cos = 0`` (``nc3 = 0`` if ``W = 0``).

Scale
-----
Every measure except :func:`class_means` is invariant to ``h -> s h`` (``s > 0``), and those that
use ``W`` or ``logits`` to rescaling each of them separately. Float32 evaluation is not: squared
norms overflow for ``|h| >~ 1e19`` and underflow for ``|h| <~ 1e-19`` (NC1 = inf, CDNV = NaN,
false collapse NC1 = CDNV = 0). Each function therefore multiplies ``h`` (and separately ``W``) by
``2^-e``, ``e = floor(log2 max|x|)``, so that ``max|x| in [1, 2)``, for sums, norms and distances;
unit vectors (cosine measures) and the argmax of logits use one such power of two per row instead.
Exponents are computed with ``jnp`` from the data (per example under ``jax.vmap``) and the scaling
works on the bit patterns, so subnormal inputs, which XLA reads as 0, are scaled too. Power-of-two
scaling is exact: at ``s = 2^k`` the results are bit-identical to those at ``s = 1`` over the whole
finite float range (``max|h|`` from ``2^-149`` to ``3.4e38`` in float32) whenever ``s h`` itself
is exact (NumPy rounds entries of ``s h`` that fall into the subnormal range; then, as for any
other ``s``, they agree to float rounding). Limits, the same at every scale: in sums, norms and
distances, entries below ``2^-126 max|h|`` (float32 resolution relative to the largest entry)
count as 0, and so does a class mean that small in the NC2 / NC3 cosines; every non-zero feature
row keeps its direction however small it is relative to the others.
:func:`collapse_report_streaming` keeps one exponent for all batches: the largest seen, applied to
what was accumulated so far when a batch raises it. :func:`class_means` is computed at unit scale
and scaled back exactly (entries below the normal float range come back as 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics import _conventions as _conv
from nc_jax.metrics import _measures as _k
from nc_jax.metrics._checks import (as_float, check_features, check_labels, check_num_classes,
                                     is_tracer, prepare)
from nc_jax.metrics._more_api import (BIAS_KEYS, REPORT_EXTRA, WEIGHT_EXTRA, bias_collapse, bias_report,
                                      class_distances, class_mean_spectrum, etf_error, nc1_quotient,
                                      nc3_dot_var, nc5, ncc_agreement, self_duality_error,
                                      uniformity)
from nc_jax.metrics._accumulator import accumulator
from nc_jax.metrics._streaming import collapse_report_streaming
from nc_jax.metrics._checked import checked

__all__ = [
    "class_means", "cosine_similarity_matrix", "nc1", "nc2", "nc3", "ncc_accuracy", "ncc_predict",
    "ncc_predict_centers", "nc4", "cdnv", "collapse_report", "layerwise", "effective_depth",
    "collapse_report_streaming", "REPORT_KEYS", "WEIGHT_KEYS", "LOGIT_KEYS", "BIAS_KEYS",
    "nc1_quotient", "etf_error", "self_duality_error", "nc3_dot_var", "bias_collapse",
    "class_distances", "class_mean_spectrum", "uniformity", "ncc_agreement", "nc5", "checked", "accumulator",
]

#: Keys of :func:`collapse_report` that need only ``(h, y)``.
REPORT_KEYS = (
    "min_intra",
    "max_inter",
    "mean_intra",
    "mean_inter",
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_maxangle",
    "ncc_accuracy",
    "cdnv",
) + REPORT_EXTRA
#: Extra keys of :func:`collapse_report` when ``W`` is given.
WEIGHT_KEYS = (
    "nc3",
    "nc3_min_cos",
    "nc3_mean_cos",
    "nc2_equinorm_weights",
    "nc2_equiangular_weights",
    "nc2_maxangle_weights",
) + WEIGHT_EXTRA
#: Extra keys of :func:`collapse_report` when ``logits`` are given.
LOGIT_KEYS = ("nc4",)


def _weights(W):
    return None if W is None else _k.prepare_weights(W)


def class_means(h, y, num_classes: int) -> jax.Array:
    """Class means ``mu_c = (1/N_c) sum_{i: y_i = c} h_i``.

    Args:
      h: features (N, d).  y: labels (N,) in [0, C).  num_classes: C (static int >= 2).
    Returns:
      (C, d) array, row c = mu_c.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="class_means")
    h, e = _k.prepare_normalize(h)
    return _k.class_means_jit(h, e, y, num_classes=C)


def cosine_similarity_matrix(h, y, num_classes: int, center: bool = False) -> jax.Array:
    """Average intra-/inter-class cosine similarities (thesis Sec. 2.2, "Neural Collapse Measures").

    ``G[c, c] = intra_c  = (1/N_c^2)      sum_{i, j in c}            cos(h_i, h_j)``,
    ``G[c, c'] = inter_cc' = (1/(N_c N_c')) sum_{i in c, j in c'}    cos(h_i, h_j)``,
    averages over ALL ordered pairs (i = j included). By Lemma 2.4.4 of the thesis these equal
    ``<u_c, u_c'>`` with ``u_c`` the mean of the unit vectors ``h_i / ||h_i||`` of class c, which is
    how they are computed: ``O(N d + C^2 d)``, never pairwise. Zero-norm rows are skipped (the averages
    run over non-zero rows; ``N_c`` counts non-zero rows only; an all-zero class gives a zero row and
    column). Values are clipped to [-1, 1] against rounding.

    Args:
      h: features (N, d).  y: labels (N,).  num_classes: C (static int).
      center: if True, subtract the global mean ``mu_G`` (unweighted mean of class means) first.
    Returns:
      (C, C) symmetric array G.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="cosine_similarity_matrix")
    if center:
        return _k.cosine_centered_jit(_k.prepare_scale(h), y, num_classes=C)
    return _k.cosine_jit(_k.prepare_unit_rows(h), y, num_classes=C)


def nc1(h, y, num_classes: int, *, global_mean: str = "class", per_class: bool = True) -> jax.Array:
    """NC1 (variability collapse): ``tr(Sigma_W Sigma_B^+) / C`` (Papyan et al. 2020, Fig. 6).

    ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``,
    ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T = M^T M / C``.
    ``Sigma_B^+`` is the pseudo-inverse restricted to the top ``C-1`` eigen-directions of ``Sigma_B``
    (its rank is at most C-1; a 1e-15-cutoff pinv in float32 inverts rounding noise). With the
    thin SVD ``M = U S V^T`` (C x d, no d x d matrix) and ``k = min(C-1, d)``:

    ``NC1 = (1/N) sum_{j<k} (1/s_j^2) sum_i <v_j, h_i - mu_{y_i}>^2``.

    Directions whose singular value is zero to rounding (``s_j <= C eps max(s_0, max_c ||mu_c||)``,
    eps the float epsilon; only when the class means span fewer than C-1 dimensions) are dropped,
    i.e. the pseudo-inverse of the true rank is used. Class means are accumulated relative to the
    first sample of each class, so an exactly collapsed class contributes exactly 0.
    The result is 0 for perfectly collapsed classes, invariant to scaling, rotation and relabeling.
    ``global_mean="sample"``: ``mu_G`` = mean of all samples (tding1's ``validate_NC.py``);
    ``per_class=False``: ``tr(Sigma_W Sigma_B^+)``, no ``1/C`` (Papyan et al.'s notebook).

    Args:  h (N, d), y (N,), num_classes C.
    Returns: scalar.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="nc1")
    if (global_mean, per_class) != ("class", True):
        return _conv.nc1(h, y, C, global_mean, per_class)
    return _k.nc1_jit(_k.prepare_scale(h), y, num_classes=C)


def nc2(h, y, num_classes: int, W=None, *, ddof=1, global_mean="class") -> dict[str, jax.Array]:
    """NC2 (convergence to a simplex ETF), as in Papyan et al. 2020 (Figs. 2-4).

    With ``m_c = mu_c - mu_G`` (rows of M):

    * ``equinorm   = std_c ||m_c|| / mean_c ||m_c||``
    * ``equiangular = std_{c < c'} cos(m_c, m_c')``
    * ``maxangle   = mean_{c != c'} |cos(m_c, m_c') + 1/(C-1)|``

    ``std`` is the unbiased (ddof=1) standard deviation, as ``torch.std`` in Papyan et al.'s code;
    equiangularity takes each unordered pair once (options: ``ddof``, ``global_mean``). Zero-norm
    vectors have cosine 0 with everything, ``equinorm = 0`` if all norms are 0. ETF: all three 0.

    Args:
      h (N, d), y (N,), num_classes C.
      W: optional (C, d) classifier weights; then the same three measures of its rows ``w_c``
        (uncentered, as in Papyan et al.) are added as ``equinorm_weights``, ``equiangular_weights``,
        ``maxangle_weights``.
    Returns:
      dict of scalars.
    """
    h, y, C, W, _ = prepare(h, y, num_classes, W=W, func="nc2")
    if (ddof, global_mean) != (1, "class"):
        return _conv.nc2(h, y, C, W, global_mean, ddof)
    return _k.nc2_jit(_k.prepare_scale(h), y, num_classes=C, W=_weights(W))


def nc3(h, y, num_classes: int, W, *, center_cos=False, global_mean="class") -> dict[str, jax.Array]:
    """NC3 (self-duality of classifier and class means).

    * ``nc3 = || W/||W||_F - M/||M||_F ||_F^2`` (Papyan et al. 2020, Fig. 5; M rows ``mu_c - mu_G``);
    * ``cos[c] = cos(w_c, mu_c)`` with the uncentered class mean (thesis Sec. 2.2, NC3 item:
      ``cos(w_c, h~_c) = 1``), ``min_cos = min_c cos[c]``, ``mean_cos = mean_c cos[c]``;
      ``center_cos=True``: ``cos(w_c, mu_c - mu_G)`` (rhubarbwu's ``similarities(cos=True)``).

    Args:  h (N, d), y (N,), num_classes C, W (C, d).
    Returns: dict with scalars ``nc3``, ``min_cos``, ``mean_cos`` and the (C,) array ``cos``.
    """
    h, y, C, W, _ = prepare(h, y, num_classes, W=W, func="nc3")
    if W is None:
        raise ValueError("nc3 needs the classifier weights W of shape (num_classes, d)")
    if (center_cos, global_mean) != (False, "class"):
        return _conv.nc3(h, y, C, W, global_mean, center_cos)
    return _k.nc3_jit(_k.prepare_scale(h), y, num_classes=C, W=_weights(W))


def ncc_predict(h, y, num_classes: int) -> jax.Array:
    """Nearest-class-center predictions ``argmin_c ||h_i - mu_c||`` (Euclidean; ties -> lowest c).

    The class means are those of ``(h, y)``. Returns (N,) int array.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="ncc_predict")
    return _k.ncc_predict_jit(_k.prepare_scale(h), y, num_classes=C)


def ncc_predict_centers(h, centers) -> jax.Array:
    """Nearest of given class centers: ``argmin_c ||h_i - mu_c||`` for h (N, d) and centers
    ``mu`` (C, d), e.g. the training set's class means applied to held-out features (Galanti et
    al. 2022's NCC error on new samples). Ties -> lowest c. Returns (N,) int array.
    """
    h = jnp.asarray(h)
    centers = jnp.asarray(centers)
    if h.ndim != 2 or centers.ndim != 2 or h.shape[1] != centers.shape[1]:
        raise ValueError(f"ncc_predict_centers: h must be (N, d) and centers (C, d) with the same "
                         f"d; got {h.shape} and {centers.shape}")
    return _k.ncc_to_centers_jit(h.astype(jnp.float32), centers.astype(jnp.float32))


def ncc_accuracy(h, y, num_classes: int) -> jax.Array:
    """Accuracy of the nearest-class-mean rule on ``(h, y)`` (Papyan et al. NC4; Galanti et al. 2022).

    ``(1/N) sum_i [argmin_c ||h_i - mu_c|| == y_i]``; ``1 - ncc_accuracy`` is the NCC error
    ``err_S(h_i)`` of Definition 3.2.2 (effective depth). Returns a scalar in [0, 1].
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="ncc_accuracy")
    return jnp.mean(_k.ncc_predict_jit(_k.prepare_scale(h), y, num_classes=C) == y)


def nc4(h, y, num_classes: int, logits, *, average: str = "sample") -> jax.Array:
    """NC4 (convergence to NCC): fraction of samples with ``argmax_c logits_ic != argmin_c ||h_i - mu_c||``.

    (Papyan et al. 2020, Fig. 7, "proportion mismatch from NCC".) Ties of ``argmax`` go to the lowest
    class, as ``jnp.argmax``. ``average="class"``: each class's mismatch rate, averaged over classes.

    Args:  h (N, d), y (N,), num_classes C, logits (N, C).
    Returns: scalar in [0, 1].
    """
    h, y, C, _, logits = prepare(h, y, num_classes, logits=logits, func="nc4")
    if logits is None:
        raise ValueError("nc4 needs logits of shape (N, num_classes)")
    if average != "sample":
        return _conv.nc4(h, y, C, logits, average)
    return _k.nc4_jit(_k.prepare_scale(h), y, num_classes=C, logits=_k.prepare_logits(logits))


def cdnv(h, y, num_classes: int, *, power: float = 2) -> jax.Array:
    """Class-distance normalized variance (Galanti, Gyorgy & Hutter 2022, "On the role of neural
    collapse in transfer learning", ICLR), averaged over ordered pairs of distinct classes:

    ``CDNV = mean_{c != c'} (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2)``,
    ``Var_c = (1/N_c) sum_{i in c} ||h_i - mu_c||^2``.

    (Squared distance in the denominator, as in Galanti et al.; some later papers use the 4th
    power: ``power``, scale-invariant only at 2.) A pair with coinciding means contributes +inf, or
    0 if both variances are 0 too. Returns a scalar.
    """
    h, y, C, _, _ = prepare(h, y, num_classes, func="cdnv")
    if not (isinstance(power, (int, float)) and not isinstance(power, bool) and power == 2):
        return _conv.cdnv(h, y, C, power)
    return _k.cdnv_jit(_k.prepare_scale(h), y, num_classes=C)


def collapse_report(h, y, num_classes: int, W=None, logits=None, b=None) -> dict[str, jax.Array]:
    """All NC measures in one jitted call; a flat dict of scalars (vmappable over a run axis).

    Keys (see the individual functions for formulas and sources):

    * ``min_intra``, ``mean_intra``: min / mean over c of ``intra_c`` (thesis, Sec. 2.2; uncentered
      features, zero rows skipped); ``max_inter``, ``mean_inter``: max / mean over c != c' of
      ``inter_cc'`` (see :func:`cosine_similarity_matrix`);
    * ``nc1``: :func:`nc1`;
    * ``nc2_equinorm``, ``nc2_equiangular``, ``nc2_maxangle``: :func:`nc2` of the centered means;
    * ``ncc_accuracy``: :func:`ncc_accuracy`;  ``cdnv``: :func:`cdnv`;
    * with ``W`` (C, d): ``nc3``, ``nc3_min_cos``, ``nc3_mean_cos`` (:func:`nc3`) and
      ``nc2_equinorm_weights``, ``nc2_equiangular_weights``, ``nc2_maxangle_weights``;
    * with ``logits`` (N, C): ``nc4`` (:func:`nc4`); keys ``REPORT_EXTRA``, ``WEIGHT_EXTRA`` (see docs);
      with ``W`` and the bias ``b`` (C,): ``bias_collapse`` (:func:`bias_collapse`, not scale-invariant).

    Inputs are validated when concrete; under ``jax.jit`` / ``jax.vmap`` / ``lax.scan`` they are
    trusted (see the module docstring). Every key is the same at any scale of ``h``, ``W`` and
    ``logits`` (exact power-of-two rescaling, see "Scale"). Example, over a leading run axis::

        jax.vmap(lambda h, y: collapse_report(h, y, 10))(h_runs, y_runs)
    """
    h, y, C, W, logits = prepare(h, y, num_classes, W=W, logits=logits, func="collapse_report")
    logits = None if logits is None else _k.prepare_logits(logits)
    out = _k.report_jit(*_k.prepare_features(h), y, num_classes=C, W=_weights(W), logits=logits)
    return out if b is None else {**out, **bias_report(h, y, C, W, b)}


def layerwise(features: Sequence[Any], y, num_classes: int) -> dict[str, jax.Array]:
    """:func:`collapse_report` (``REPORT_KEYS``, no W / logits terms) of every layer, stacked.

    Args:
      features: sequence of L arrays ``(N, d_l)``; ``d_l`` may differ between layers.
      y: labels (N,), shared by all layers.  num_classes: C.
    Returns:
      dict key -> (L,) array (index l = layer l of ``features``). ``1 - out["ncc_accuracy"]``
      feeds :func:`effective_depth`.
    """
    if not isinstance(features, (tuple, list)) or len(features) == 0:
        raise ValueError("features must be a non-empty tuple or list of (N, d_l) arrays, one per layer")
    C = check_num_classes(num_classes, "layerwise")
    traced = any(is_tracer(a) for a in (*features, y))
    feats = tuple(as_float(f) for f in features)
    y = jnp.asarray(y)
    if not traced:
        n = None
        for l, f in enumerate(feats):
            n_l, _ = check_features(f, what=f"features of layer {l}")
            if n is not None and n_l != n:
                raise ValueError(f"shape mismatch: layer {l} has {n_l} rows but layer 0 has {n}")
            n = n_l
        check_labels(y, n, C)
    return _k.layerwise_jit(tuple(_k.prepare_features(f) for f in feats), y, num_classes=C)


def effective_depth(ncc_errors, eps) -> jax.Array:
    """epsilon-effective depth (thesis Definition 3.2.2, after Galanti et al. 2022).

    The minimal 1-based layer index ``i`` in ``[1, L]`` with ``ncc_errors[..., i-1] <= eps``, and ``L``
    if there is none.

    Args:
      ncc_errors: (..., L) NCC errors per layer (``1 - ncc_accuracy``), e.g. ``1 - layerwise(...)[
        "ncc_accuracy"]``; leading axes (runs) are batched, so it is vmappable as is.
      eps: threshold, scalar or broadcastable to ``ncc_errors.shape[:-1]``.
    Returns:
      int32 array of shape ``ncc_errors.shape[:-1]``.
    """
    if not is_tracer(ncc_errors):
        shape = np.shape(ncc_errors)
        if len(shape) == 0 or shape[-1] == 0:
            raise ValueError(f"ncc_errors must have shape (..., L) with L >= 1, got shape {shape}")
        # a NaN compares False everywhere: the depth would silently read as L
        if np.isnan(np.asarray(ncc_errors, np.float64)).any():
            raise ValueError("ncc_errors contains NaN (a diverged run?); effective depth is "
                             "undefined there")
    if not is_tracer(eps) and np.isnan(np.asarray(eps, np.float64)).any():
        raise ValueError(f"eps must be a number, got {eps!r}")
    e = jnp.asarray(ncc_errors)
    L = e.shape[-1]
    hit = e <= jnp.asarray(eps)[..., None]
    first = jnp.argmax(hit, axis=-1).astype(jnp.int32) + 1
    return jnp.where(jnp.any(hit, axis=-1), first, jnp.int32(L))
