"""The regularized layer-peeled model (Zhu et al. 2021, "A geometric analysis of neural collapse
with unconstrained features"): weight decay on the free features and the classifier instead of
the hard norm constraints of `nc_jax.ufm`, with its closed-form optimum, to connect the UFM to
trained networks' weight decay."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.ufm._solve import _check_int, _check_key, _check_positive, descend, log_mean_cross_entropy


def regularized_optimum(lambda_w, lambda_h, num_classes: int) -> dict:
    """Closed-form minimum of ``L + lambda_W/2 ||W||_F^2 + lambda_H/2 (1/N) ||h||_F^2`` (d >= C-1).

    For fixed (alpha, beta) the best L is m(alpha beta) (Thm. 2.3.1), and at fixed t = alpha beta the
    penalty ``lambda_W C beta^2/2 + lambda_H alpha^2/2`` is smallest, ``s t`` with ``s = sqrt(C lambda_W
    lambda_H)``, at ``lambda_H alpha^2 = C lambda_W beta^2``. Minimizing the convex ``m(t) + s t``:
    ``q = e^{-C/(C-1) t} = s / (C - (C-1) s)``, i.e. ``t* = -(C-1)/C log q`` if ``s < 1``, else ``t* = 0``
    (the zero solution). Returns float64 NumPy scalars ``alpha_beta, alpha, beta, objective``.
    """
    C = _check_int("num_classes", num_classes, 2)
    _check_positive("lambda_w", lambda_w)
    _check_positive("lambda_h", lambda_h)
    lw, lh = float(lambda_w), float(lambda_h)
    s = np.sqrt(C * lw * lh)
    t = -(C - 1) / C * np.log(s / (C - (C - 1) * s)) if s < 1 else 0.0
    alpha, beta = np.sqrt(t) * (C * lw / lh) ** 0.25, np.sqrt(t) * (lh / (C * lw)) ** 0.25
    obj = np.log1p((C - 1) * np.exp(-C / (C - 1) * t)) + s * t
    return dict(alpha_beta=t, alpha=alpha, beta=beta, objective=obj)


def solve_regularized(lambda_w, lambda_h, *, num_classes: int, dim: int, n_per_class: int, key,
                      steps: int = 2000) -> dict:
    """Minimize ``L(h, W) + lambda_W/2 ||W||_F^2 + lambda_H/2 (1/N) ||h||_F^2`` over free h (N, d), W (C, d)
    (regularized UFM, Zhu et al. 2021) by gradient descent with BB steps (no constraint: the radii are
    infinite). Returns a dict ``objective, loss, alpha, beta, h, y, W`` (alpha = feature RMS,
    beta = ||W||_F / sqrt(C)); compare with :func:`regularized_optimum`. lambda_w, lambda_h may be traced.
    """
    C = _check_int("num_classes", num_classes, 2)
    d = _check_int("dim", dim, 1)
    n = _check_int("n_per_class", n_per_class, 1)
    _check_positive("lambda_w", lambda_w)
    _check_positive("lambda_h", lambda_h)
    _check_key(key)
    _check_int("steps", steps, 1)
    return _reg_jit(jnp.float32(lambda_w), jnp.float32(lambda_h), key, C=C, d=d, n=n, steps=steps)


@partial(jax.jit, static_argnames=("C", "d", "n", "steps"))
def _reg_jit(lw, lh, key, *, C, d, n, steps):
    N = C * n
    y = jnp.repeat(jnp.arange(C, dtype=jnp.int32), n)
    ku, kv = jax.random.split(key)
    x0 = (jax.random.normal(ku, (N, d)) / jnp.sqrt(d), jax.random.normal(kv, (C, d)) / jnp.sqrt(d))

    def obj(x, k=None):
        return (jnp.exp(log_mean_cross_entropy(x[0], x[1], 1.0, y)) + 0.5 * lw * jnp.sum(x[1] ** 2)
                + 0.5 * lh * jnp.sum(x[0] ** 2) / N)

    (h, W), _, _ = descend(obj, x0, (jnp.inf, jnp.inf), (float(N), float(C)), steps, constraint="inequality",
                        max_move=0.3, t0=0.1)
    return dict(objective=obj((h, W)), loss=jnp.exp(log_mean_cross_entropy(h, W, 1.0, y)),
                alpha=jnp.sqrt(jnp.sum(h * h) / N), beta=jnp.sqrt(jnp.sum(W * W) / C), h=h, y=y, W=W)
