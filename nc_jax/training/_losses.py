"""Training losses by name: cross-entropy (the thesis'), MSE and label smoothing.

A loss is a function `loss(logits (B, C), y (B,) int) -> ()`, the mean over the batch. Weight
decay is never part of it (it lives in the optimizer, `nc_jax.training`). A user function with
this signature can be passed wherever a name is accepted.
"""
from __future__ import annotations

import functools
from typing import Callable, Tuple, Union

import jax
import jax.numpy as jnp
import optax

from nc_jax.config import LOSSES, LossConfig
from nc_jax.training._names import callable_name

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy -log softmax(logits)_y; logits (B, C), y (B,) int (thesis eq. 2.1)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def mse(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Squared error to one-hot targets, (1 / 2B) sum_i ||z_i - e_{y_i}||^2 (Han, Papyan & Donoho
    2022, "Neural collapse under MSE loss", eq. 1: the per-sample sum over classes, halved)."""
    target = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(logits - target), axis=-1))


def label_smoothing(logits: jax.Array, y: jax.Array, smoothing: float = 0.1) -> jax.Array:
    """Cross-entropy against smoothed targets t = (1 - s) e_y + s / C (Szegedy et al. 2016;
    PyTorch's `CrossEntropyLoss(label_smoothing=s)`): mean of -sum_c t_c log softmax(z)_c."""
    target = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype),
                                 smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, target))


def loss_name(loss: Union[str, Callable]) -> str:
    """A loss' name for results and checkpoint identities: its name, or `module.qualname` of a
    user's function (`callable_name`)."""
    return callable_name(loss)


def get_loss(loss: Union[str, Callable, None], cfg: LossConfig = LossConfig()) -> Tuple[Loss, str]:
    """(function, name) of a loss given by name ("ce", "mse", "label_smoothing"), by a callable
    `(logits, y) -> scalar`, or None (= `cfg.name`, with `cfg.smoothing` for label smoothing)."""
    if loss is None:
        loss = cfg.name
    if callable(loss):
        return loss, loss_name(loss)
    if loss == "ce":
        return cross_entropy, "ce"
    if loss == "mse":
        return mse, "mse"
    if loss == "label_smoothing":
        return functools.partial(label_smoothing, smoothing=cfg.smoothing), "label_smoothing"
    raise ValueError(f"unknown loss {loss!r}; known losses: {list(LOSSES)} or a callable "
                     f"(logits, y) -> scalar")
