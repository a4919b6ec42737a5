"""SGD with momentum, a learning-rate step schedule, and weight decay in the optax chain.

Weight decay is an optax transform, never a term of the loss:

- coupled (default): chain(add_decayed_weights(wd), trace(momentum), scale(-lr_t)), i.e.
  g <- g + wd * p;  m <- mu * m + g;  p <- p - lr_t * m.  This is exactly
  `torch.optim.SGD(lr, momentum, weight_decay=wd)` and the gradient of the thesis' L2 term
  lambda/2 (||W||_F^2 + ||gamma||^2) (Section 2.2).
- decoupled (SGDW, Loshchilov & Hutter): m <- mu * m + g;  p <- p - lr_t * (m + wd * p).

The learning rate and the weight decay are `optax.inject_hyperparams` state arrays, so one
compiled program serves a whole grid: each vmapped run carries its own values in its optimizer
state (see `set_hyperparams`).
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


# mask is a callable: it must be static, or inject_hyperparams would call it as a schedule and
# the decay would silently vanish.
@functools.partial(optax.inject_hyperparams,
                   static_args=("momentum", "mode", "mask", "boundaries", "factor"))
def sgd_weight_decay(learning_rate, weight_decay, momentum: float = 0.9, mode: str = "coupled",
                     mask: Optional[Callable] = None, boundaries: Sequence[int] = (),
                     factor: float = 0.1) -> optax.GradientTransformation:
    """SGD + momentum + step LR schedule + weight decay (coupled or decoupled)."""
    lr = step_schedule(learning_rate, boundaries, factor)
    momentum_tx = optax.trace(decay=momentum) if momentum else optax.identity()
    decay = optax.add_decayed_weights(weight_decay, mask)
    if mode == "coupled":
        return optax.chain(decay, momentum_tx, optax.scale_by_learning_rate(lr))
    if mode == "decoupled":
        return optax.chain(momentum_tx, decay, optax.scale_by_learning_rate(lr))
    raise ValueError(f"weight_decay_mode must be 'coupled' or 'decoupled', got {mode!r}")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """ceil(n / batch_size): full batches plus the partial one (drop_last=False)."""
    return -(-n // batch_size)


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimizer of a config; LR decays at `cfg.decay_epochs` (converted to steps).

    Built once, outside any vmap; per-run lr / wd go into the state with `set_hyperparams`.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return sgd_weight_decay(
        learning_rate=cfg.lr, weight_decay=0.0, momentum=cfg.momentum,
        mode=cfg.weight_decay_mode, mask=decay_mask_fn(cfg.decay_mask),
        boundaries=tuple(e * steps_per_epoch for e in cfg.decay_epochs),
        factor=cfg.lr_decay_factor)


def set_hyperparams(opt_state, *, learning_rate=None, weight_decay=None):
    """Return `opt_state` with its injected learning rate / weight decay replaced (traceable)."""
    hp = dict(opt_state.hyperparams)
    if learning_rate is not None:
        hp["learning_rate"] = jnp.asarray(learning_rate, hp["learning_rate"].dtype)
    if weight_decay is not None:
        hp["weight_decay"] = jnp.asarray(weight_decay, hp["weight_decay"].dtype)
    return opt_state._replace(hyperparams=hp)

