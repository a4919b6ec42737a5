"""Per-run NC analysis of trained states: the collapse report, the theorem's quantities,
Proposition 2.2.1 and per-layer metrics, computed inside one jitted program for all runs.

All functions take a single-run `TrainState` (no run axis) and are vmapped / `lax.map`ped over
runs by the callers, so the same code serves one run or a whole sweep.
"""
from __future__ import annotations

from typing import Callable, Dict

import jax
import jax.numpy as jnp

from nc_jax import metrics, theory
from nc_jax.models import MLP
from nc_jax.train import TrainState, cross_entropy, forward


def _last_bn_norms(params, model: MLP):
    """(||gamma||, ||beta||) of the last hidden BN; (nan, nan) when it has no affine parameters."""
    name = f"bn_{model.depth - 2}"
    if model.bn != "affine" or name not in params:
        nan = jnp.float32(jnp.nan)
        return nan, nan
    return jnp.linalg.norm(params[name]["scale"]), jnp.linalg.norm(params[name]["bias"])


def record_fn(model: MLP, num_classes: int) -> Callable:
    """`(state, x, y) -> {name: scalar}` for NC during training: full-set loss/accuracy and the
    collapse report of the last-layer features, BN in eval mode. Runs inside the compiled loop."""

    def record(state: TrainState, x, y) -> Dict[str, jnp.ndarray]:
        logits, feats = forward(state, x, model=model, train=False)
        W = state.params["head"]["kernel"].T
        rep = metrics.collapse_report(feats[-1], y, num_classes, W=W, logits=logits)
        rep["loss"] = cross_entropy(logits, y)
        rep["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == y)
        return rep

    return record


def run_report(state: TrainState, x, y, *, model: MLP, num_classes: int, layers: bool = False,
               delta: float = 0.1) -> Dict[str, jnp.ndarray]:
    """Everything the experiments report for one trained run (whole training set).

    Eval-mode (running BN statistics, what the thesis measures):
      train_loss, train_accuracy, the `metrics.collapse_report` keys of h = h_{L-1} with W and
      logits; alpha = feature_rms(h), beta = weight_scale(W).
    Theorem 2.3.1: the model has biases, which the thesis folds in by appending a constant 1 to
      every feature and the bias to every weight row; so `alpha_aug` = sqrt(alpha^2 + 1),
      `beta_aug` = ||[W b]||_F / sqrt(C), `min_loss` = m(alpha_aug, beta_aug) (a true lower bound
      of the loss), `loss_gap` = epsilon = loss - m, `rate` = exp(C/(C-1) ab)/(ab) sqrt(eps/delta).
    Proposition 2.2.1 (train-mode BN over the whole set): `rms_train` of the last BN output next
      to ||gamma|| and ||beta||; with beta != 0 the identity reads rms^2 = ||gamma||^2 + ||beta||^2
      (up to the BN epsilon), which `prop221_rhs` holds.
    `layers=True` adds per-layer arrays `layer_<key>` (L-1,) of `metrics.layerwise`.
    """
    logits, feats = forward(state, x, model=model, train=False)
    h = feats[-1]
    W = state.params["head"]["kernel"].T
    b = state.params["head"]["bias"]
    out = dict(metrics.collapse_report(h, y, num_classes, W=W, logits=logits))
    loss = cross_entropy(logits, y)
    out["train_loss"] = loss
    out["train_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == y)
    alpha = theory.feature_rms(h)
    beta = theory.weight_scale(W)
    alpha_aug = jnp.sqrt(alpha ** 2 + 1.0)
    beta_aug = theory.weight_scale(jnp.concatenate([W, b[:, None]], axis=1))
    m = theory.min_loss(alpha_aug, beta_aug, num_classes)
    eps = loss - m
    out.update(alpha=alpha, beta=beta, alpha_aug=alpha_aug, beta_aug=beta_aug, min_loss=m,
               loss_gap=eps, rate=theory.rate_term(alpha_aug, beta_aug, num_classes, eps, delta))
    if model.bn != "none":
        _, feats_tr = forward(state, x, model=model, train=True)
        g, bt = _last_bn_norms(state.params, model)
        out.update(rms_train=theory.feature_rms(feats_tr[-1]), gamma_norm=g, beta_norm=bt,
                   prop221_rhs=jnp.sqrt(g ** 2 + bt ** 2))
    if layers:
        lw = metrics.layerwise(feats, y, num_classes)
        out.update({f"layer_{k}": v for k, v in lw.items()})
    return out


def sweep_reports(states: TrainState, x, y, *, model: MLP, num_classes: int, layers: bool = False,
                  batch_size: int = 1) -> Dict[str, jnp.ndarray]:
    """`run_report` for every run of stacked `states` (leading run axis K). Returns {name: (K, ...)}.

    One jitted single-run program, called on `batch_size` runs at a time (vmapped when > 1), so a
    deep, wide sweep never holds every run's full-set activations at once. A host loop over runs
    rather than `lax.map`: `lax.map` around the per-layer report (eigendecompositions inside a
    loop) was seen to deadlock XLA:CPU's thread pool on a 2-core machine (15-layer sweep).
    """
    fn = lambda s: run_report(s, x, y, model=model, num_classes=num_classes, layers=layers)  # noqa: E731
    k = int(jax.tree.leaves(states.step)[0].shape[0])
    step = max(1, min(int(batch_size), k))
    one = jax.jit(jax.vmap(fn))
    parts = []
    for start in range(0, k, step):
        idx = jnp.arange(start, min(start + step, k))
        parts.append(one(jax.tree.map(lambda a: a[idx], states)))
    return {key: jnp.concatenate([p[key] for p in parts]) for key in parts[0]}
