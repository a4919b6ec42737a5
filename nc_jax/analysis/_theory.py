"""Quantities of the thesis' main theorem (Theorem 2.3.1) and Proposition 2.2.1.

Layer-peeled setting (thesis Sec. 2.2): last-layer features ``h`` (N, d) right after a BatchNorm
without bias, classifier ``W`` (C, d) without bias, logits ``h W^T``, average cross-entropy ``L``.

* ``alpha`` = :func:`feature_rms` = sqrt((1/N) sum_i ||h_i||^2). By Proposition 2.2.1 it equals
  ``||gamma||_2`` for features straight out of BN(scale gamma, bias 0) in train mode (up to the BN
  epsilon: exactly ``sqrt(sum_k gamma_k^2 var_k / (var_k + eps))``).
* ``beta`` = :func:`weight_scale` = ``||W||_F / sqrt(C)``.
* ``m`` = :func:`min_loss` = ``log(1 + (C-1) exp(-C/(C-1) alpha beta))``, the smallest average
  cross-entropy any balanced data set (N samples per class) can reach under the norm constraints;
  attained by features and weights on a simplex ETF.
* ``epsilon`` = :func:`loss_gap` = ``L - m``.
* Theorem 2.3.1 (C >= 3): for at least a 1-delta fraction of classes
  ``intra_c >= 1 - O(rate)``, and for at least a 1-delta fraction of pairs
  ``inter_cc' <= -1/(C-1) + O(e^{O(alpha beta)}/(alpha beta) (epsilon/delta)^(1/6))``, with
  ``rate`` = :func:`rate_term` = ``exp(C/(C-1) alpha beta)/(alpha beta) * sqrt(epsilon/delta)``.

All functions are pure ``jnp`` code: jit-able, vmappable, and accept NumPy inputs and Python floats.
``num_classes`` is a static Python int.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nc_jax.metrics._checks import check_num_classes



def _f(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32 else x.astype(jnp.float32)


def feature_rms(h) -> jax.Array:
    """alpha = sqrt((1/N) sum_i ||h_i||^2), the quadratic mean of the feature norms.

    h: (N, d) (leading batch axes allowed: (..., N, d) -> (...)). Thesis Prop. 2.2.1 / Thm. 2.3.1
    assumption 1.
    """
    h = _f(h)
    if not isinstance(h, jax.core.Tracer) and h.ndim < 2:
        raise ValueError(f"h must have shape (N, d), got shape {h.shape}")
    return jnp.sqrt(jnp.mean(jnp.sum(h * h, axis=-1), axis=-1))


def weight_scale(W) -> jax.Array:
    """beta = ||W||_F / sqrt(C) for W of shape (C, d) (thesis Thm. 2.3.1 assumption 2; Eq. 2.1)."""
    W = _f(W)
    if not isinstance(W, jax.core.Tracer) and W.ndim < 2:
        raise ValueError(f"W must have shape (C, d), got shape {W.shape}")
    C = W.shape[-2]
    return jnp.sqrt(jnp.sum(W * W, axis=(-2, -1)) / C)


def min_loss(alpha, beta, num_classes: int) -> jax.Array:
    """m = log(1 + (C-1) exp(-C/(C-1) alpha beta)) (thesis Theorem 2.3.1).

    The minimum average cross-entropy over features with quadratic-mean norm <= alpha and weights
    with ||W||_F <= sqrt(C) beta (balanced classes). Computed as ``log1p`` for accuracy at large
    alpha beta.
    """
    C = check_num_classes(num_classes)
    ab = _f(alpha) * _f(beta)
    return jnp.log1p((C - 1) * jnp.exp(-C / (C - 1) * ab))


def loss_gap(loss, alpha, beta, num_classes: int) -> jax.Array:
    """epsilon = loss - m(alpha, beta, C): distance of the average cross-entropy to its minimum
    (thesis Theorem 2.3.1 assumption 3). Non-negative for balanced data up to rounding."""
    return _f(loss) - min_loss(alpha, beta, num_classes)


def rate_term(alpha, beta, num_classes: int, epsilon, delta) -> jax.Array:
    """exp(C/(C-1) alpha beta) / (alpha beta) * sqrt(epsilon / delta).

    The scale of the intra-class bound of Theorem 2.3.1: ``intra_c >= 1 - O(rate_term)`` for at least
    a 1-delta fraction of the classes (the thesis' remark: the ``e^{O(alpha beta)}`` factor is about
    ``e^{C/(C-1) alpha beta}``). Negative ``epsilon`` (rounding) is clipped to 0.
    """
    C = check_num_classes(num_classes)
    ab = _f(alpha) * _f(beta)
    eps = jnp.maximum(_f(epsilon), 0.0)
    return jnp.exp(C / (C - 1) * ab) / ab * jnp.sqrt(eps / _f(delta))


def inter_rate_term(alpha, beta, num_classes: int, epsilon, delta) -> jax.Array:
    """exp(C/(C-1) alpha beta) / (alpha beta) * (epsilon / delta)^(1/6).

    The scale of the inter-class bound of Theorem 2.3.1: ``inter_cc' <= -1/(C-1) + O(this)`` for
    at least a 1-delta fraction of the class pairs, with the ``e^{O(alpha beta)}`` factor read as
    in :func:`rate_term`. Negative ``epsilon`` (rounding) is clipped to 0.
    """
    C = check_num_classes(num_classes)
    ab = _f(alpha) * _f(beta)
    eps = jnp.maximum(_f(epsilon), 0.0)
    return jnp.exp(C / (C - 1) * ab) / ab * (eps / _f(delta)) ** (1.0 / 6.0)


def cross_entropy(W, h, y) -> jax.Array:
    """Average cross-entropy of the bias-free logits ``h W^T`` (thesis Sec. 2.2):
    ``(1/N) sum_i -log softmax(W h_i)_{y_i}``. W (C, d), h (N, d), y (N,) int. Returns a scalar."""
    W, h = _f(W), _f(h)
    logits = jnp.matmul(h, W.T, precision=jax.lax.Precision.HIGHEST)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(y)[:, None], axis=-1))
