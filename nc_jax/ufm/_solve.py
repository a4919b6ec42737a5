"""The norm-constrained layer-peeled model of Theorem 2.3.1, solved exactly in float32.

Model (thesis Sec. 2.2-2.3; "unconstrained features model", UFM): C classes, ``n`` samples per class
(balanced, ``N = C n``), free features ``h`` (N, d) and a bias-free classifier ``W`` (C, d),

    minimize   L(h, W) = (1/N) sum_i -log softmax(W h_i)_{y_i}
    subject to (1/N) sum_i ||h_i||^2 = alpha^2   (Thm. 2.3.1 assumption 1; RMS norm, Prop. 2.2.1)
               ||W||_F^2            = C beta^2   (assumption 2)

or the same with ``<=`` (``constraint="inequality"``). For ``d >= C-1`` the minimum is
``m(alpha, beta) = log(1 + (C-1) exp(-C/(C-1) alpha beta))`` (:func:`nc_jax.analysis.theory.min_loss`),
attained by a simplex ETF: ``h_i = alpha u_{y_i}``, ``w_c = beta u_c`` with unit ``u_c`` and
``<u_c, u_c'> = -1/(C-1)``. The inequality problem has the same minimum, on the boundary: a point
with RMS ``a <= alpha`` and weight scale ``b <= beta`` has loss ``>= m(a, b) >= m(alpha, beta)``
(``m`` decreases strictly in ``alpha beta``), so the optimum uses the whole budget.

Only the product ``alpha beta`` matters (``h -> s h``, ``W -> W / s`` keeps the logits), so the solver
works in normalized variables ``U = h / alpha`` (RMS 1) and ``V = W / beta`` (``||V||_F^2 = C``),
logits ``alpha beta U V^T``, and minimizes ``log L`` instead of ``L``: near the optimum
``L ~ (C-1) e^{-C/(C-1) alpha beta}`` is exponentially small, and ``log L`` makes the gradient scale
free (``grad log L = grad L / L``). The loss is evaluated as ``log log(1 + sum_{c != y} e^{z_c})``
with ``z_c = l_c - l_y`` (never ``l_y - logsumexp(l)``, which rounds to 0 once ``L < 1e-7 l_y``), so
``L`` keeps float32 *relative* precision down to ``L ~ 1e-38`` and ``log L`` far beyond.

Method: Riemannian gradient descent on the product of the two spheres ``||U||_F = sqrt(N)``,
``||V||_F = sqrt(C)`` (tangent projection, retraction by rescaling; ``"inequality"``: Euclidean step,
then radial projection onto the balls), so every iterate satisfies the constraints exactly (to
rounding). Step sizes are alternating Barzilai-Borwein (BB1/BB2) in a block-diagonal metric that
scales the U block by N and the V block by C (each sample's gradient carries a 1/N), each move
limited to ``max_move`` of the block radius. ``alpha beta`` is ramped geometrically from
``min(alpha beta, 2)`` to its value over the first ``ramp_steps`` steps (continuation): from a random
start at large ``alpha beta`` the landscape is steep and BB needs many more steps. Fixed step count
(``lax.scan``), so ``jax.vmap`` over ``alpha``, ``beta`` and ``key`` and a whole grid compiles once.

Precision of the defaults (1000 steps, checked in ``tests/ufm/test_ufm.py`` and ``docs/ufm.md``):
``|L/m - 1| <= 1e-6 (5 + alpha beta)`` (the logits carry float32 rounding ``~ alpha beta eps``),
intra-class cosine ``1 - 2e-6``, inter-class ``-1/(C-1) +- 1e-5`` for ``alpha beta >= 1``,
``C <= 100``. At ``alpha beta << 1`` the ETF is selected only at order ``(alpha beta)^2`` (to first
order the loss is the bilinear ``-alpha beta <U, V>``, which does not see the geometry of V), so
the inter-class cosines are pinned only to ~1e-3 at ``alpha beta = 0.1``, C = 100 in float32.

``d < C - 1``: no simplex ETF fits, ``m`` is *not* attained and the solver returns the best
configuration it finds (``rel_gap > 0``; for ``d = 2`` the regular C-gon with self-dual ``W``,
checked in the tests). :func:`etf_attainable` tells which case applies.

:func:`solve_regularized` is the weight-decay UFM of Zhu et al. (2021, "A geometric analysis of
neural collapse with unconstrained features"): ``L + lambda_W/2 ||W||_F^2 + lambda_H/2 (1/N)||h||_F^2``
without constraints; :func:`regularized_optimum` gives its closed-form optimum (derived in docs/ufm.md).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


_HI = jax.lax.Precision.HIGHEST


class UFMSolution(NamedTuple):
    """Result of :func:`solve`. ``loss``: mean cross-entropy L at the solution; ``h`` (N, d) with
    RMS norm alpha; ``y`` (N,) int32, ``y_i = i // n``; ``W`` (C, d) with ``||W||_F = beta sqrt(C)``;
    ``min_loss`` = m(alpha, beta); ``rel_gap`` = (L - m) / m (exact in float32 even when L, m
    underflow); ``grad_norm``: norm of the final Riemannian gradient of log L in the solver's metric
    (U block scaled by N, V block by C; module docstring), a convergence diagnostic."""
    loss: jax.Array
    h: jax.Array
    y: jax.Array
    W: jax.Array
    min_loss: jax.Array
    rel_gap: jax.Array
    grad_norm: jax.Array


# ----------------------------------------------------------------------------- validation
def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_int(name, v, lo):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be a Python int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _check_positive(name, v):
    if _is_tracer(v):
        return  # traced (jit / vmap): trusted, as in nc_jax.metrics
    a = np.asarray(v)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real number, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {v}")
    if not np.all(a > 0):
        raise ValueError(f"{name} must be > 0, got {v}")


def _check_key(key):
    dt = getattr(key, "dtype", None)
    if dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key):
        return
    if dt is not None and dt == jnp.uint32 and getattr(key, "shape", ())[-1:] == (2,):
        return  # legacy raw key
    raise ValueError(f"key must be a jax.random key (jax.random.key(seed)), got {type(key).__name__}")


def _check_options(steps, ramp_steps, constraint, max_move):
    _check_int("steps", steps, 1)
    _check_int("ramp_steps", ramp_steps, 0)
    if constraint not in ("equality", "inequality"):
        raise ValueError(f"constraint must be 'equality' or 'inequality', got {constraint!r}")
    if not (isinstance(max_move, (int, float)) and 0 < max_move <= 1):
        raise ValueError(f"max_move must be a float in (0, 1], got {max_move!r}")


def etf_attainable(num_classes: int, dim: int) -> bool:
    """True iff a simplex ETF of C vectors fits in R^d (d >= C - 1), i.e. iff m(alpha, beta) is attained."""
    return _check_int("dim", dim, 1) >= _check_int("num_classes", num_classes, 2) - 1


# ----------------------------------------------------------------------------- loss
def _log_softplus(t):
    """log(log(1 + e^t)), accurate for every t (the series branch keeps relative precision at t << 0)."""
    small = t < -9.0
    ts = jnp.where(small, t, -10.0)   # safe inputs: the unused branch must not give inf/NaN gradients
    tb = jnp.where(small, 0.0, t)
    return jnp.where(small, ts + jnp.log1p(-0.5 * jnp.exp(ts)), jnp.log(jnp.logaddexp(0.0, tb)))


def log_min_loss(alpha_beta, num_classes) -> jax.Array:
    """log m = log log(1 + (C-1) exp(-C/(C-1) alpha beta)) (thesis Thm. 2.3.1), finite for any alpha beta.
    ``num_classes`` may be traced (a float or int array), unlike :func:`nc_jax.analysis.theory.min_loss`."""
    C = jnp.asarray(num_classes, jnp.float32)
    return _log_softplus(jnp.log(C - 1.0) - C / (C - 1.0) * jnp.asarray(alpha_beta, jnp.float32))


def log_mean_cross_entropy(U, V, alpha_beta, y, sample_mask=None, class_mask=None) -> jax.Array:
    """log of the mean cross-entropy of logits ``alpha_beta U V^T``: U (N, d), V (C, d), y (N,) int.

    Per sample ``log L_i = log log(1 + sum_{c != y_i} exp(z_ic))``, ``z_ic = l_ic - l_{i y_i}``;
    ``log L = logsumexp_i(log L_i) - log N``. Masks (bool (N,), (C,)) drop padded samples / classes.
    """
    logits = alpha_beta * jnp.matmul(U, V.T, precision=_HI)
    z = logits - jnp.take_along_axis(logits, y[:, None], axis=1)
    drop = jax.nn.one_hot(y, V.shape[0], dtype=bool)
    if class_mask is not None:
        drop = drop | ~class_mask[None, :]
    ll = _log_softplus(jax.nn.logsumexp(jnp.where(drop, -jnp.inf, z), axis=1))
    if sample_mask is None:
        return jax.nn.logsumexp(ll) - jnp.log(float(U.shape[0]))
    return jax.nn.logsumexp(jnp.where(sample_mask, ll, -jnp.inf)) - jnp.log(jnp.sum(sample_mask))


# ----------------------------------------------------------------------------- optimizer
def _dot(a, b):
    return sum(jnp.vdot(x, z) for x, z in zip(a, b))


def descend(objective, x0, radii, scales, steps: int, *, constraint="equality", max_move=0.3, t0=0.3,
            record=None):
    """Minimize ``objective(x, k)`` (x a tuple of arrays, k the step index) over the product of spheres
    ``||x_j||_F = radii[j]`` (``"equality"``) or balls ``<=`` (``"inequality"``) by (Riemannian)
    gradient descent with alternating Barzilai-Borwein steps in the metric ``diag(1/scales)``.

    Returns ``(x, grad_norm, trace)``: ``grad_norm`` is the scaled norm of the final (Riemannian)
    gradient; ``trace`` stacks ``record(x)`` over the iterates (None without ``record``). Used by
    :func:`solve` and by the adversarial searches of :mod:`nc_jax.ufm.tightness`.
    """
    vg = jax.grad(objective)
    eq = constraint == "equality"

    def rgrad(x, k):
        out = []
        for gi, xi, r in zip(vg(x, k), x, radii):
            c = jnp.vdot(gi, xi) / jnp.maximum(jnp.vdot(xi, xi), 1e-30)
            if not eq:  # on a ball's boundary only the outward part (c < 0) is blocked; inside, none
                c = jnp.where(jnp.vdot(xi, xi) >= r * r * (1 - 1e-6), jnp.minimum(c, 0.0), 0.0)
            out.append(gi - c * xi)
        return tuple(out)

    def project(x):
        out = []
        for xi, r in zip(x, radii):
            nrm = jnp.sqrt(jnp.vdot(xi, xi))
            out.append(xi * (r / nrm if eq else jnp.minimum(1.0, r / jnp.maximum(nrm, 1e-30))))
        return tuple(out)

    def step(carry, k):
        x, g, t = carry
        d = tuple(s * gi for s, gi in zip(scales, g))
        # cap the move of each block at max_move * radius (BB steps can be huge early on)
        cap = jnp.min(jnp.stack([r / (t * jnp.sqrt(jnp.vdot(di, di)) + 1e-30) for di, r in zip(d, radii)]))
        xn = project(tuple(xi - jnp.minimum(1.0, max_move * cap) * t * di for xi, di in zip(x, d)))
        gn = rgrad(xn, k + 1)
        s = tuple(a - b for a, b in zip(xn, x))
        yv = tuple(a - b for a, b in zip(gn, g))
        sy = _dot(s, yv)
        bb1 = _dot(s, tuple(si / c for si, c in zip(s, scales))) / sy
        bb2 = sy / _dot(yv, tuple(yi * c for yi, c in zip(yv, scales)))
        tn = jnp.where(k % 2 == 0, bb1, bb2)
        tn = jnp.clip(jnp.where((sy > 0) & jnp.isfinite(tn), tn, 2.0 * t), 1e-10, 1e10)
        return (xn, gn, tn), (None if record is None else record(xn))

    x = project(x0)
    g = rgrad(x, 0)
    (x, g, _), trace = jax.lax.scan(step, (x, g, jnp.asarray(t0, jnp.float32)), jnp.arange(steps))
    return x, jnp.sqrt(_dot(g, tuple(s * gi for s, gi in zip(scales, g)))), trace


# ----------------------------------------------------------------------------- the solver
def _solve_padded(alpha, beta, C, d, n, key, *, shape, steps, ramp_steps, constraint, max_move):
    """Solve one problem of true size (C, d, n) inside padded arrays of static ``shape`` =
    (C_max, d_max, n_max); padded rows / columns are zero and stay zero (their gradients vanish)."""
    Cm, dm, nm = shape
    y = jnp.repeat(jnp.arange(Cm, dtype=jnp.int32), nm)
    cmask = jnp.arange(Cm) < C
    smask = cmask[y] & (jnp.tile(jnp.arange(nm), Cm) < n)
    dmask = jnp.arange(dm) < d
    N = jnp.sum(smask).astype(jnp.float32)
    Cf = jnp.asarray(C, jnp.float32)
    ab = jnp.asarray(alpha, jnp.float32) * jnp.asarray(beta, jnp.float32)
    ku, kv = jax.random.split(key)
    U = jax.random.normal(ku, (Cm * nm, dm)) * (smask[:, None] & dmask[None, :])
    V = jax.random.normal(kv, (Cm, dm)) * (cmask[:, None] & dmask[None, :])
    radii = (jnp.sqrt(N), jnp.sqrt(Cf))
    if constraint == "inequality":  # start inside the balls: the solver must find the boundary itself
        U, V = (0.5 * r * a / jnp.sqrt(jnp.vdot(a, a)) for a, r in ((U, radii[0]), (V, radii[1])))
    a0 = jnp.minimum(ab, 2.0)

    def ab_at(k):
        frac = jnp.clip(k / max(ramp_steps, 1), 0.0, 1.0) if ramp_steps else 1.0
        return jnp.exp(jnp.log(a0) + frac * (jnp.log(ab) - jnp.log(a0)))

    obj = lambda x, k: log_mean_cross_entropy(x[0], x[1], ab_at(k), y, smask, cmask)
    (U, V), gnorm, _ = descend(obj, (U, V), radii, (N, Cf), steps, constraint=constraint, max_move=max_move)
    log_l = log_mean_cross_entropy(U, V, ab, y, smask, cmask)
    log_m = log_min_loss(ab, Cf)
    h, W = U * jnp.asarray(alpha, jnp.float32), V * jnp.asarray(beta, jnp.float32)
    return UFMSolution(jnp.exp(log_l), h, y, W, jnp.exp(log_m), jnp.expm1(log_l - log_m), gnorm), (smask, cmask)


_solve_jit = jax.jit(_solve_padded, static_argnames=("shape", "steps", "ramp_steps", "constraint", "max_move"))


def solve(alpha, beta, *, num_classes: int, dim: int, n_per_class: int, key, steps: int = 1000,
          ramp_steps: int = 250, constraint: str = "equality", max_move: float = 0.3) -> UFMSolution:
    """Minimize the mean cross-entropy of the layer-peeled model at feature RMS ``alpha`` and weight
    scale ``beta`` (thesis Thm. 2.3.1; see the module docstring for the method and its precision).

    Args:
      alpha, beta: positive scalars; may be traced, so ``jax.vmap(lambda a, b: solve(a, b, ...))``
        solves a whole grid in one compiled call.
      num_classes (C >= 2), dim (d >= 1), n_per_class (n >= 1): static Python ints; N = C n.
      key: ``jax.random.key``; the random start (Gaussian U, V projected onto the constraint set).
      steps, ramp_steps: descent steps and the length of the ``alpha beta`` continuation.
      constraint: ``"equality"`` (RMS = alpha, ||W||_F = beta sqrt(C)) or ``"inequality"`` (<=; the
        start is then at half the radii and the solution lands on the boundary).
      max_move: largest move per step, as a fraction of each block's radius.
    Returns:
      :class:`UFMSolution` ``(loss, h (N, d), y (N,), W (C, d), min_loss, rel_gap, grad_norm)``.
    Raises:
      ValueError: alpha or beta <= 0 / NaN / inf (when concrete), C < 2, n < 1, d < 1, bad options.
    """
    C = _check_int("num_classes", num_classes, 2)
    d = _check_int("dim", dim, 1)
    n = _check_int("n_per_class", n_per_class, 1)
    for name, v in (("alpha", alpha), ("beta", beta)):
        _check_positive(name, v)
        if not _is_tracer(v) and np.ndim(v) != 0:
            raise ValueError(f"{name} must be a scalar (use jax.vmap or solve_grid for many), got shape "
                             f"{np.shape(v)}")
    _check_key(key)
    _check_options(steps, ramp_steps, constraint, max_move)
    sol, _ = _solve_jit(alpha, beta, C, d, n, key, shape=(C, d, n), steps=steps, ramp_steps=ramp_steps,
                        constraint=constraint, max_move=float(max_move))
    return sol


def geometry(h, W, y, sample_mask=None, class_mask=None) -> dict:
    """Collapse measures of a (possibly padded) UFM solution, as in the thesis (Sec. 2.2, Lemma 2.4.4).

    With ``u_c = mean_{i in c} h_i / ||h_i||``: ``intra_c = ||u_c||^2``, ``inter_cc' = <u_c, u_c'>``;
    ``self_dual_min_cos = min_c cos(w_c, mu_c)`` (NC3, ``mu_c`` the class mean);
    ``feature_rms = sqrt(mean_i ||h_i||^2)`` (alpha), ``weight_scale = ||W||_F / sqrt(C)`` (beta).
    h (N, d), W (C, d), y (N,); masks as in :func:`log_mean_cross_entropy`. Returns a dict of scalars
    ``min_intra, mean_intra, max_inter, min_inter, mean_inter, self_dual_min_cos, feature_rms, weight_scale``.
    """
    Cm = W.shape[0]
    sm = jnp.ones(h.shape[0], bool) if sample_mask is None else sample_mask
    cm = jnp.ones(Cm, bool) if class_mask is None else class_mask
    oh = jax.nn.one_hot(y, Cm) * sm[:, None]
    cnt = jnp.maximum(oh.sum(0), 1.0)[:, None]
    hn = h / jnp.maximum(jnp.linalg.norm(h, axis=1, keepdims=True), 1e-30)
    u = jnp.matmul(oh.T, hn, precision=_HI) / cnt
    mu = jnp.matmul(oh.T, h, precision=_HI) / cnt
    G = jnp.matmul(u, u.T, precision=_HI)
    pair = cm[:, None] & cm[None, :] & ~jnp.eye(Cm, dtype=bool)
    nc = jnp.sum(cm)
    cos3 = jnp.sum(mu * W, 1) / jnp.maximum(jnp.linalg.norm(mu, axis=1) * jnp.linalg.norm(W, axis=1), 1e-30)
    return dict(min_intra=jnp.min(jnp.where(cm, jnp.diag(G), jnp.inf)),
                mean_intra=jnp.sum(jnp.where(cm, jnp.diag(G), 0.0)) / nc,
                max_inter=jnp.max(jnp.where(pair, G, -jnp.inf)),
                min_inter=jnp.min(jnp.where(pair, G, jnp.inf)),
                mean_inter=jnp.sum(jnp.where(pair, G, 0.0)) / (nc * (nc - 1)),
                self_dual_min_cos=jnp.min(jnp.where(cm, cos3, jnp.inf)),
                feature_rms=jnp.sqrt(jnp.sum(h * h) / jnp.sum(sm)), weight_scale=jnp.sqrt(jnp.sum(W * W) / nc))


def solve_grid(alpha, beta, num_classes, dim, n_per_class, seed, *, key, steps: int = 1000,
               ramp_steps: int = 250, constraint: str = "equality", max_move: float = 0.3,
               return_arrays: bool = False) -> dict:
    """Solve P problems of different sizes ``(alpha_p, beta_p, C_p, d_p, n_p, seed_p)`` in ONE compiled,
    vmapped call: every problem is padded to ``(max C, max d, max n)`` and masked (see
    :func:`_solve_padded`). All six arguments broadcast to a common 1-D length P; problem p starts from
    ``jax.random.fold_in(key, seed_p)`` (so its start differs from :func:`solve` with the same key).

    Returns a dict of (P,) arrays: ``loss, min_loss, rel_gap, grad_norm`` and the :func:`geometry` keys;
    with ``return_arrays`` also the padded ``h`` (P, C_max n_max, d_max), ``W``, ``y``, ``sample_mask``,
    ``class_mask``.
    """
    args = [np.atleast_1d(np.asarray(a)) for a in (alpha, beta, num_classes, dim, n_per_class, seed)]
    try:
        args = np.broadcast_arrays(*args)
    except ValueError as e:
        raise ValueError(f"alpha, beta, num_classes, dim, n_per_class, seed must broadcast: {e}") from None
    a, b, C, d, n, s = args
    for name, v in (("alpha", a), ("beta", b)):
        _check_positive(name, v)
    for name, v, lo in (("num_classes", C, 2), ("dim", d, 1), ("n_per_class", n, 1), ("seed", s, 0)):
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"{name} must be integers (a 1-D array or a scalar), got dtype {v.dtype}")
        if np.any(v < lo):
            raise ValueError(f"{name} must be >= {lo}, got min {v.min()}")
    _check_key(key)
    _check_options(steps, ramp_steps, constraint, max_move)
    shape = (int(C.max()), int(d.max()), int(n.max()))
    out = _grid_jit(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(C), jnp.asarray(d),
                    jnp.asarray(n), jnp.asarray(s), key, shape=shape, steps=steps, ramp_steps=ramp_steps,
                    constraint=constraint, max_move=float(max_move), return_arrays=bool(return_arrays))
    return out


@partial(jax.jit, static_argnames=("shape", "steps", "ramp_steps", "constraint", "max_move", "return_arrays"))
def _grid_jit(a, b, C, d, n, s, key, *, shape, steps, ramp_steps, constraint, max_move, return_arrays):
    def one(a, b, C, d, n, s):
        sol, (sm, cm) = _solve_padded(a, b, C, d, n, jax.random.fold_in(key, s), shape=shape, steps=steps,
                                      ramp_steps=ramp_steps, constraint=constraint, max_move=max_move)
        out = dict(loss=sol.loss, min_loss=sol.min_loss, rel_gap=sol.rel_gap, grad_norm=sol.grad_norm,
                   **geometry(sol.h, sol.W, sol.y, sm, cm))
        if return_arrays:
            out.update(h=sol.h, W=sol.W, y=sol.y, sample_mask=sm, class_mask=cm)
        return out
    return jax.vmap(one)(a, b, C, d, n, s)

