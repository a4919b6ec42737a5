"""How tight is Theorem 2.3.1? Worst cases of the layer-peeled model against the theorem's guarantee.

Theorem 2.3.1 says: if ``L <= m(alpha, beta) + eps`` then, for a 1-delta fraction of classes,
``intra_c >= 1 - O(e^{O(alpha beta)}/(alpha beta) sqrt(eps/delta))`` and, for a 1-delta fraction of
class pairs, ``inter_cc' <= -1/(C-1) + O(e^{O(alpha beta)}/(alpha beta) (eps/delta)^{1/6})``.
The truth is the *frontier* of the model of :mod:`nc_jax.ufm`:

    F_intra(eps) = max {1 - intra_0          : RMS(h) = alpha, ||W||_F = beta sqrt(C), L <= m + eps}
    F_inter(eps) = max {inter_01 + 1/(C-1)    : same constraints}

(class 0 / the pair (0, 1) stand for any class / pair by symmetry). :func:`frontier` finds feasible
points on it: starting from the ETF optimum (plus ``noise``), it minimizes
``target + mu * relu(log(L/m) / log(1 + r) - 1)^2`` on the constraint manifold (:func:`nc_jax.ufm.descend`)
for a ladder of relative gaps ``r = eps / m``, each level warm-started from the previous one. Every
returned point is feasible at its *achieved* gap (reported, not the requested one), so the running
maximum over levels is a lower estimate of ``F``: the true frontier is at least as bad, and the
theorem's looseness measured against it is, if anything, overstated by the search's misses.

The theorem's guarantee is evaluated with every hidden constant set to 1 and ``e^{O(alpha beta)} =
e^{C/(C-1) alpha beta}`` (the thesis' remark after the theorem; the reading most favourable to the
theorem, and the one :func:`nc_jax.analysis.theory.rate_term` uses): ``B_intra = e^{k ab}/ab sqrt(eps/delta)``,
``B_inter = e^{k ab}/ab (eps/delta)^{1/6}`` with ``k = C/(C-1)``. The statement covers *every* class
(pair) only for ``delta < 1/C`` (``< 1/(C(C-1))``); we use those limits, the smallest bounds that still
cover the worst class (pair). :func:`proof_intra_bound` keeps the explicit constants of the proof
(Sec. 2.4). All bound functions work in log10 (float64 NumPy): ``e^{k ab}`` overflows float32 at ab ~ 80.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.ufm import _solve as ufm

__all__ = ["log10_intra_bound", "log10_inter_bound", "log10_eps_for", "proof_intra_bound",
           "frontier", "descent_path", "envelope", "crossing_eps", "loglog_slope", "augmented_run"]

LN10 = np.log(10.0)


def _k(C):
    return C / (C - 1.0)


def log10_intra_bound(alpha_beta, num_classes, eps, delta=None):
    """log10 of ``e^{C/(C-1) ab}/ab sqrt(eps/delta)`` (bound on 1 - intra_c); delta defaults to 1/C."""
    ab, eps = np.asarray(alpha_beta, float), np.asarray(eps, float)
    delta = 1.0 / num_classes if delta is None else delta
    return _k(num_classes) * ab / LN10 - np.log10(ab) + 0.5 * np.log10(eps / delta)


def log10_inter_bound(alpha_beta, num_classes, eps, delta=None):
    """log10 of ``e^{C/(C-1) ab}/ab (eps/delta)^{1/6}`` (bound on inter + 1/(C-1)); delta defaults to
    1/(C(C-1)), the largest value for which the statement covers every pair."""
    ab, eps = np.asarray(alpha_beta, float), np.asarray(eps, float)
    delta = 1.0 / (num_classes * (num_classes - 1)) if delta is None else delta
    return _k(num_classes) * ab / LN10 - np.log10(ab) + np.log10(eps / delta) / 6.0


def log10_eps_for(tau, alpha_beta, num_classes, which, delta=None):
    """log10 of the largest eps at which the (constant-1) theorem still guarantees a deviation <= tau:
    intra ``eps = delta (tau ab e^{-k ab})^2``, inter ``eps = delta (tau ab e^{-k ab})^6``."""
    ab = np.asarray(alpha_beta, float)
    p = {"intra": 2, "inter": 6}[which]
    if delta is None:
        delta = 1.0 / num_classes if which == "intra" else 1.0 / (num_classes * (num_classes - 1))
    return np.log10(delta) + p * (np.log10(tau) + np.log10(ab) - _k(num_classes) * ab / LN10)


def proof_intra_bound(alpha_beta, num_classes, eps, delta=None):
    """The proof's explicit intra bound (Sec. 2.4, the step before "Plug in lambda = exp(-O(ab))"):
    ``1 - intra_c <= 8 (C-1)/(C ab) sqrt(2 eps (1-delta)/(delta lam))`` with
    ``lam = min_{|x| <= C ab} (C-1) e^x / (1 + (C-1) e^x)^2``, the strong convexity of
    ``log(1 + (C-1) e^x)`` on the range the proof uses (~ e^{-C ab}/(C-1)). Returns log10."""
    ab, eps, C = np.asarray(alpha_beta, float), np.asarray(eps, float), num_classes
    delta = 1.0 / C if delta is None else delta
    # log lam at both ends of [-C ab, C ab] (the second derivative is unimodal, so the min is at an end)
    x = np.stack([-C * ab, C * ab])
    log_lam = np.min(np.log(C - 1) + x - 2 * np.logaddexp(0.0, np.log(C - 1) + x), axis=0)
    return (np.log10(8 * (C - 1) / (C * ab)) + 0.5 * np.log10(2 * eps * (1 - delta) / delta)
            - 0.5 * log_lam / LN10)


def _class_gram(U, y, C):
    """G[c, c'] = <u_c, u_c'>, u_c = mean of h_i/||h_i|| over class c (Lemma 2.4.4): intra on the diagonal."""
    un = U / jnp.sqrt(jnp.sum(U * U, axis=1, keepdims=True) + 1e-30)
    u = jax.ops.segment_sum(un, y, num_segments=C) / (U.shape[0] // C)
    return u @ u.T


def _stats(U, V, ab, y, C):
    G = _class_gram(U, y, C)
    off = ~jnp.eye(C, dtype=bool)
    return dict(log_loss=ufm.log_mean_cross_entropy(U, V, ab, y), intra0=G[0, 0], inter01=G[0, 1],
                min_intra=jnp.min(jnp.diag(G)), max_inter=jnp.max(jnp.where(off, G, -jnp.inf)))


@partial(jax.jit, static_argnames=("C", "d", "n", "steps", "solve_steps"))
def _frontier_one(ab, rel_gaps, key, is_intra, *, C, d, n, steps, mu, noise, solve_steps, max_move):
    k0, k1, k2 = jax.random.split(key, 3)
    sol = ufm.solve(1.0, ab, num_classes=C, dim=d, n_per_class=n, key=k0, steps=solve_steps)
    y, log_m = sol.y, ufm.log_min_loss(ab, C)
    # break the symmetry of the exact optimum (intra_0 is stationary there); relative size `noise`
    U = sol.h + noise * jax.random.normal(k1, sol.h.shape) / np.sqrt(d)
    V = sol.W / ab + noise * jax.random.normal(k2, sol.W.shape) / np.sqrt(d)

    def level(carry, r):
        x, k = carry
        rho = jnp.log1p(r)
        # re-break the symmetry at every level: if the penalty pulled the point back onto the exact
        # optimum, the target's gradient (stationary there) would keep it stuck
        ka, kb = jax.random.split(jax.random.fold_in(k2, k))
        amp = noise * jnp.minimum(1.0, jnp.sqrt(r)) / np.sqrt(d)
        x = (x[0] + amp * jax.random.normal(ka, x[0].shape), x[1] + amp * jax.random.normal(kb, x[1].shape))

        def obj(x, k):
            G = _class_gram(x[0], y, C)
            viol = jnp.maximum((ufm.log_mean_cross_entropy(x[0], x[1], ab, y) - log_m) / rho - 1.0, 0.0)
            # a traced switch, so intra and inter problems share one compiled program
            return jnp.where(is_intra, G[0, 0], -G[0, 1]) + mu * viol ** 2

        # near the optimum a move of angle t costs r ~ ab t^2: cap each step at ~sqrt(rho / ab) so the
        # penalty (stiff at small rho) is entered gently instead of being overshot by orders of magnitude
        x, _, _ = ufm.descend(obj, x, (np.sqrt(C * n), np.sqrt(C)), (float(C * n), float(C)), steps,
                              t0=1e-3, max_move=jnp.minimum(max_move, 0.3 * jnp.sqrt(rho / (1.0 + ab))))
        st = _stats(x[0], x[1], ab, y, C)
        return (x, k + 1), dict(st, rel_gap=jnp.expm1(st["log_loss"] - log_m), log_min_loss=log_m)

    _, out = jax.lax.scan(level, ((U, V), 0), rel_gaps)
    return out


def frontier(alpha_beta, rel_gaps, *, num_classes: int, dim: int, n_per_class: int, key, target,
             steps: int = 400, mu: float = 1e3, noise: float = 1e-3, solve_steps: int = 1000,
             max_move: float = 0.02) -> dict:
    """Worst-case points of the layer-peeled model at loss gaps ``eps = r m`` (module docstring).

    Args:
      alpha_beta: (P,) products alpha beta (only the product matters); rel_gaps: (P, L) increasing
        ladders of requested r = eps/m per problem; key: one jax.random key (problem p uses fold_in(key, p)).
      target: ``"intra"`` (minimize intra_0) or ``"inter"`` (maximize inter_01), or a length-P sequence
        of them (one compiled program for all).
      steps: descent steps per level; mu: penalty weight; noise: relative perturbation of the start.
    Returns:
      dict of (P, L) NumPy arrays: ``rel_gap`` (achieved r), ``eps`` (= m r, float64), ``intra0``,
      ``inter01``, ``min_intra``, ``max_inter``, ``log_loss``, ``log_min_loss``.
    """
    ab = np.atleast_1d(np.asarray(alpha_beta, np.float32))
    tg = [target] * ab.size if isinstance(target, str) else list(target)
    if len(tg) != ab.size or any(t not in ("intra", "inter") for t in tg):
        raise ValueError(f"target must be 'intra' or 'inter' (or P of them), got {target!r}")
    rg = np.asarray(rel_gaps, np.float32)
    if rg.ndim == 1:
        rg = np.broadcast_to(rg, (ab.size, rg.size))
    if rg.shape[0] != ab.size or not np.all(rg > 0) or not np.all(np.isfinite(ab)) or not np.all(ab > 0):
        raise ValueError("alpha_beta must be positive (P,), rel_gaps positive (P, L)")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(ab.size))
    f = jax.vmap(partial(_frontier_one, C=ufm._check_int("num_classes", num_classes, 2),
                         d=ufm._check_int("dim", dim, 1), n=ufm._check_int("n_per_class", n_per_class, 1),
                         steps=steps, mu=mu, noise=noise, solve_steps=solve_steps,
                         max_move=max_move))
    is_intra = jnp.asarray([t == "intra" for t in tg])
    out = {k: np.asarray(v, np.float64) for k, v in f(jnp.asarray(ab), jnp.asarray(rg), keys, is_intra).items()}
    out["eps"] = np.exp(out["log_min_loss"]) * out["rel_gap"]
    return out


@partial(jax.jit, static_argnames=("C", "d", "n", "steps"))
def descent_path(alpha_beta, key, *, C, d, n, steps=300):
    """Typical (not worst-case) near-optimal points: the iterates of plain Riemannian descent on log L
    from a random start (no continuation), i.e. "stop the solver at a given eps". Returns a dict of
    (steps,) arrays ``rel_gap, min_intra, max_inter`` (class-wise worst over all classes / pairs)."""
    y = jnp.repeat(jnp.arange(C, dtype=jnp.int32), n)
    ku, kv = jax.random.split(key)
    x0 = (jax.random.normal(ku, (C * n, d)), jax.random.normal(kv, (C, d)))
    log_m = ufm.log_min_loss(alpha_beta, C)
    rec = lambda x: _stats(x[0], x[1], alpha_beta, y, C)
    _, _, tr = ufm.descend(lambda x, k: ufm.log_mean_cross_entropy(x[0], x[1], alpha_beta, y), x0,
                           (np.sqrt(C * n), np.sqrt(C)), (float(C * n), float(C)), steps, record=rec)
    return dict(rel_gap=jnp.expm1(tr["log_loss"] - log_m), min_intra=tr["min_intra"], max_inter=tr["max_inter"])


def envelope(eps, badness):
    """Running maximum of ``badness`` over points sorted by ``eps``: the estimate of the frontier
    ``F(e) = max{badness_j : eps_j <= e}`` (every point is feasible at its own eps). 1-D inputs;
    returns (sorted eps, envelope)."""
    eps, badness = np.asarray(eps, float).ravel(), np.asarray(badness, float).ravel()
    o = np.argsort(eps)
    return eps[o], np.maximum.accumulate(badness[o])


def crossing_eps(eps, env, tau):
    """Smallest eps at which the envelope reaches ``tau`` (log-log interpolation between the two points
    around the crossing). NaN if it never does, or if it is already above ``tau`` at the first point
    (the crossing lies below the searched range: unresolved, not guessed)."""
    eps, env = np.asarray(eps, float), np.asarray(env, float)
    hit = np.nonzero(env >= tau)[0]
    if hit.size == 0 or hit[0] == 0:
        return float("nan")
    j = hit[0]
    if env[j - 1] <= 0:
        return float(eps[j])
    w = (np.log(tau) - np.log(env[j - 1])) / (np.log(env[j]) - np.log(env[j - 1]))
    return float(np.exp(np.log(eps[j - 1]) + w * (np.log(eps[j]) - np.log(eps[j - 1]))))


def loglog_slope(x, y):
    """Least-squares slope of log y against log x over the positive pairs (NaN if fewer than 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")


def augmented_run(run: dict, num_classes: int):
    """A trained run of the committed results as a point of the layer-peeled model, or None.

    The head has a bias, folded in as the thesis does (a constant 1 appended to h, b appended to W):
    ``alpha_aug = sqrt(alpha^2 + 1)``, ``beta_aug = ||[W b]||_F / sqrt(C)``; then ``eps = train_loss -
    m(alpha_aug, beta_aug)`` (float64). The cosines are those of h itself (as committed), not of [h, 1].
    """
    if run.get("diverged") or run.get("min_intra") is None or run.get("alpha_aug") is None:
        return None
    ab = float(run["alpha_aug"]) * float(run["beta_aug"])
    C = num_classes
    log_m = float(np.log(np.log1p((C - 1) * np.exp(-_k(C) * ab)))) if ab < 700 else np.nan
    eps = float(run["train_loss"]) - float(np.exp(log_m))
    return dict(alpha_beta=ab, eps=eps, rel_gap=eps / np.exp(log_m), min_loss=float(np.exp(log_m)),
                one_minus_intra=1.0 - float(run["min_intra"]),
                inter_dev=float(run["max_inter"]) + 1.0 / (C - 1), converged=bool(run.get("converged")),
                group=run.get("group"), weight_decay=run.get("weight_decay"), seed=run.get("seed"))
