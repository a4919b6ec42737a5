"""Training losses by name (big_vision style, like the model registry): cross-entropy (the
thesis'), MSE, label smoothing, and any loss a user registers.

A loss is a function `loss(logits (B, C), y (B,) int) -> ()`, the mean over the batch. Weight
decay is never part of it (it lives in the optimizer, `nc_jax.training`). `LossConfig.name` picks
a factory `(loss_cfg) -> loss` registered here with `register_loss`; a user function with the
loss signature can also be passed wherever a name is accepted.

This module imports nothing of nc-jax but `nc_jax._naming`, so `nc_jax.config` can validate
`LossConfig.name` against `known_losses()` without an import cycle.
"""
from __future__ import annotations

import types
from typing import Any, Callable, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import optax

from nc_jax._naming import callable_name, named

Loss = Callable[[jax.Array, jax.Array], jax.Array]
#: A registered factory: `(loss_cfg) -> Loss`, `loss_cfg` a `nc_jax.config.LossConfig`.
LossFactory = Callable[[Any], Loss]

#: The default of `LossConfig.smoothing` (defined here so that a loss looked up without a config
#: gets the same number).
DEFAULT_SMOOTHING = 0.1

#: Losses by `LossConfig.name`: name -> factory(LossConfig) -> loss, in registration order.
LOSSES: Dict[str, LossFactory] = {}


def register_loss(name: str):
    """Decorator adding a factory `(loss_cfg) -> fn(logits (B, C), y (B,)) -> scalar` under
    `name`, so that `LossConfig(name=name)`, `run_sweep(..., loss=name)` and `--loss name` use it.
    The name identifies the loss in results and checkpoints. Registering a name again replaces
    its factory (a re-imported module registers the same loss)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_loss: the name must be a non-empty string, got {name!r}")

    def deco(factory: LossFactory) -> LossFactory:
        if not callable(factory):
            raise TypeError(f"register_loss({name!r}): the factory must be callable "
                            f"(loss_cfg) -> loss, got {type(factory).__name__}")
        LOSSES[name] = factory
        return factory
    return deco


def known_losses() -> Tuple[str, ...]:
    """Names `LossConfig.name` accepts: the built-in losses ("ce", "mse", "label_smoothing"), then
    the `register_loss`ed ones in the order they were registered."""
    return tuple(LOSSES)


# The built-in functions carry their registered names, so passing the function itself is the
# same run (and checkpoint identity) as passing its name.
@named("ce")
def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy -log softmax(logits)_y; logits (B, C), y (B,) int (thesis eq. 2.1)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


@named("mse")
def mse(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Squared error to one-hot targets, (1 / 2B) sum_i ||z_i - e_{y_i}||^2 (Han, Papyan & Donoho
    2022, "Neural collapse under MSE loss", eq. 1: the per-sample sum over classes, halved)."""
    target = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(logits - target), axis=-1))


@named("label_smoothing")
def label_smoothing(logits: jax.Array, y: jax.Array,
                    smoothing: float = DEFAULT_SMOOTHING) -> jax.Array:
    """Cross-entropy against smoothed targets t = (1 - s) e_y + s / C (Szegedy et al. 2016;
    PyTorch's `CrossEntropyLoss(label_smoothing=s)`): mean of -sum_c t_c log softmax(z)_c."""
    target = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype),
                                 smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, target))


@register_loss("ce")
def _cross_entropy_factory(cfg) -> Loss:
    return cross_entropy


@register_loss("mse")
def _mse_factory(cfg) -> Loss:
    return mse


@register_loss("label_smoothing")
def _label_smoothing_factory(cfg) -> Loss:
    s = cfg.smoothing

    def loss(logits, y):
        return label_smoothing(logits, y, s)

    return loss


def loss_name(loss: Union[str, Callable]) -> str:
    """A loss' name for results and checkpoint identities: its registered name ("ce", "mse",
    "label_smoothing" for the built-in functions too), or `module.qualname` of a user's function
    (`nc_jax._naming.callable_name`)."""
    return callable_name(loss)


def get_loss(loss: Union[str, Callable, None], cfg: Optional[Any] = None) -> Tuple[Loss, str]:
    """(function, name) of a loss given by a registered name, by a callable `(logits, y) ->
    scalar`, or None (= `cfg.name`). A name is built by its factory from `cfg` (a `LossConfig`:
    label smoothing reads `cfg.smoothing`); without `cfg` the factory gets the defaults
    (smoothing `DEFAULT_SMOOTHING`)."""
    if loss is None:
        if cfg is None:
            raise ValueError("get_loss: give a loss (a name or a callable) or a LossConfig")
        loss = cfg.name
    if callable(loss):
        return loss, loss_name(loss)
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known losses: {list(known_losses())} (add one "
                         f"with nc_jax.losses.register_loss) or a callable (logits, y) -> scalar")
    if cfg is None:
        cfg = types.SimpleNamespace(name=loss, smoothing=DEFAULT_SMOOTHING)
    fn = LOSSES[loss](cfg)
    if not callable(fn):
        raise TypeError(f"the factory of loss {loss!r} must return a function (logits, y) -> "
                        f"scalar, got {type(fn).__name__}")
    return fn, loss
