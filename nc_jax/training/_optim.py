"""The optimizer by name (SGD, Adam, AdamW), its learning-rate schedule, and weight decay in the
optax chain.

Weight decay is an optax transform, never a term of the loss:

- SGD, coupled (default): chain(add_decayed_weights(wd), trace(momentum), scale(-lr_t)), i.e.
  g <- g + wd * p;  m <- mu * m + g;  p <- p - lr_t * m.  This is exactly
  `torch.optim.SGD(lr, momentum, weight_decay=wd)` and the gradient of the thesis' L2 term
  lambda/2 (||W||_F^2 + ||gamma||^2) (Section 2.2).
- SGD, decoupled (SGDW, Loshchilov & Hutter): m <- mu * m + g;  p <- p - lr_t * (m + wd * p).
- Adam: chain(add_decayed_weights(wd), scale_by_adam, scale(-lr_t)) (L2 before the scaling,
  `torch.optim.Adam(weight_decay=wd)`); AdamW: chain(scale_by_adam, add_decayed_weights(wd),
  scale(-lr_t)) (`optax.adamw`: the decay is multiplied by lr_t, not by the Adam scaling).

With decay groups the weight decay is a vector, one entry per group of `OptimConfig.
weight_decay_groups`, and each parameter is decayed by its group's entry.

The learning rate and the weight decay are `optax.inject_hyperparams` state arrays, so one
compiled program serves a whole grid: each vmapped run carries its own values in its optimizer
state (see `set_hyperparams`); the schedule multiplies the run's learning rate by a factor of
the step count.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from nc_jax.config import OptimConfig


def decay_mask_fn(kind: str) -> Optional[Callable]:
    """Which parameters are decayed: "all" (PyTorch's default, used by the thesis) or "kernels"
    (Dense kernels only; biases and BN gamma/beta excluded)."""
    if kind == "all":
        return None
    if kind == "kernels":
        def mask(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
        return mask
    raise ValueError(f"decay_mask must be 'all' or 'kernels', got {kind!r}")


def step_schedule(base_lr, boundaries: Sequence[int], factor: float) -> Callable:
    """lr_t = base_lr * factor ** #{b in boundaries : t >= b}  (t counts optimizer steps)."""
    boundaries = tuple(int(b) for b in boundaries)

    def schedule(count):
        n_decays = sum((count >= b).astype(jnp.float32) for b in boundaries) if boundaries else 0.0
        return base_lr * jnp.power(jnp.float32(factor), n_decays)

    return schedule


def lr_factor(schedule: str, total_steps: int, warmup_steps: int = 0,
              boundaries: Sequence[int] = (), factor: float = 0.1) -> Callable:
    """count -> the multiplier of the run's learning rate at optimizer step `count`.

    "step": factor ** #{b in boundaries : count >= b}; "cosine": 0.5 (1 + cos(pi t / T)) over the
    T = total_steps - warmup_steps steps after the warm-up, reaching 0 at the end; "constant": 1.
    A warm-up multiplies by count / warmup_steps for count < warmup_steps (0 at the first step,
    as `optax.warmup_cosine_decay_schedule`)."""
    if schedule == "cosine":
        if warmup_steps:
            return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps, total_steps)
        return optax.cosine_decay_schedule(1.0, total_steps)
    if schedule == "step":
        main = step_schedule(1.0, boundaries, factor)
    elif schedule == "constant":
        main = optax.constant_schedule(1.0)
    else:
        raise ValueError(f"schedule must be one of step, cosine, constant, got {schedule!r}")
    if not warmup_steps:
        return main

    def warmed(count):
        ramp = jnp.minimum(jnp.asarray(count, jnp.float32) / warmup_steps, 1.0)
        return ramp * main(count)

    return warmed


def add_group_decayed_weights(weight_decay, groups: Callable,
                              mask: Optional[Callable] = None) -> optax.GradientTransformation:
    """g <- g + wd[group(p)] * p for every parameter p: `weight_decay` (G,), `groups(params)` a
    pytree of ints in [0, G) like params (static), `mask(params)` optional booleans (False: no
    decay)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params):
        if params is None:
            raise ValueError("add_group_decayed_weights needs the parameters")
        wd = jnp.asarray(weight_decay)
        gid = groups(params)
        keep = mask(params) if mask is not None else jax.tree.map(lambda _: True, params)
        updates = jax.tree.map(lambda g, p, i, k: g + wd[i] * p if k else g,
                               updates, params, gid, keep)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


# mask, groups and schedule are callables: they must be static, or inject_hyperparams would call
# them as schedules and the decay would silently vanish.
@functools.partial(optax.inject_hyperparams,
                   static_args=("name", "momentum", "mode", "mask", "groups", "schedule", "b1",
                                "b2", "eps"))
def named_optimizer(learning_rate, weight_decay, name: str = "sgd", momentum: float = 0.9,
                    mode: str = "coupled", mask: Optional[Callable] = None,
                    groups: Optional[Callable] = None, schedule: Optional[Callable] = None,
                    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                    ) -> optax.GradientTransformation:
    """SGD / Adam / AdamW with weight decay (a scalar, or (G,) with `groups`) and the learning
    rate `learning_rate * schedule(count)` (see the module docstring for each chain)."""
    factor = schedule if schedule is not None else (lambda count: 1.0)
    lr = lambda count: learning_rate * factor(count)  # noqa: E731
    decay = (add_group_decayed_weights(weight_decay, groups, mask) if groups is not None
             else optax.add_decayed_weights(weight_decay, mask))
    scale = optax.scale_by_learning_rate(lr)
    if name == "sgd":
        momentum_tx = optax.trace(decay=momentum) if momentum else optax.identity()
        if mode == "coupled":
            return optax.chain(decay, momentum_tx, scale)
        if mode == "decoupled":
            return optax.chain(momentum_tx, decay, scale)
        raise ValueError(f"weight_decay_mode must be 'coupled' or 'decoupled', got {mode!r}")
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    if name == "adam":
        return optax.chain(decay, adam, scale)
    if name == "adamw":
        return optax.chain(adam, decay, scale)
    raise ValueError(f"optimizer name must be sgd, adam or adamw, got {name!r}")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """ceil(n / batch_size): full batches plus the partial one (drop_last=False)."""
    return -(-n // batch_size)


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int,
                   groups: Optional[Callable] = None) -> optax.GradientTransformation:
    """The optimizer of a config; the schedule's steps are epochs times `steps_per_epoch`.

    Built once, outside any vmap; per-run lr / wd go into the state with `set_hyperparams`.
    With `cfg.decay_groups`, `groups(params)` gives each parameter's group index (into
    `cfg.weight_decay_groups`) and the injected weight decay is a (G,) vector.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if cfg.decay_groups and groups is None:
        raise ValueError("optim.decay_groups needs the model's parameter groups (groups=...)")
    n_groups = len(cfg.weight_decay_groups)
    return named_optimizer(
        learning_rate=cfg.lr,
        weight_decay=jnp.zeros((n_groups,), jnp.float32) if cfg.decay_groups else 0.0,
        name=cfg.name, momentum=cfg.momentum, mode=cfg.weight_decay_mode,
        mask=decay_mask_fn(cfg.decay_mask), groups=groups if cfg.decay_groups else None,
        schedule=lr_factor(cfg.schedule, cfg.epochs * steps_per_epoch,
                           cfg.warmup_epochs * steps_per_epoch,
                           tuple(e * steps_per_epoch for e in cfg.decay_epochs),
                           cfg.lr_decay_factor),
        b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)



def set_hyperparams(opt_state, *, learning_rate=None, weight_decay=None):
    """Return `opt_state` with its injected learning rate / weight decay replaced (traceable);
    None leaves one as it is. A value for a hyperparameter the state does not inject is an
    error naming what it has."""
    hp = dict(getattr(opt_state, "hyperparams", None) or {})
    for name, value in (("learning_rate", learning_rate), ("weight_decay", weight_decay)):
        if value is None:
            continue
        if name not in hp:
            raise ValueError(f"the optimizer injects no {name!r} (its hyperparameters: "
                             f"{sorted(hp)}); wrap it in optax.inject_hyperparams or do not "
                             f"pass per-run {name.replace('_', ' ')}s")
        v = jnp.asarray(value, hp[name].dtype)
        if v.shape != jnp.shape(hp[name]):
            raise ValueError(f"{name} has shape {v.shape}, the optimizer's {jnp.shape(hp[name])}")
        hp[name] = v
    return opt_state._replace(hyperparams=hp)

