"""Training losses by name: a registry (`register_loss`, `known_losses`, like the model registry)
with the built-in cross-entropy ("ce", the thesis'), MSE ("mse") and label smoothing
("label_smoothing"), and `get_loss`, which turns a name or a callable into the function a `Task`
trains with.

    @nc_jax.losses.register_loss("mine")
    def mine(loss_cfg):                     # a nc_jax.config.LossConfig
        return lambda logits, y: ...        # logits (B, C), y (B,) int -> scalar

    cfg = SweepConfig(loss=LossConfig(name="mine"))      # or `nc-sweep --import mod --loss mine`

The package imports nothing of nc-jax but `nc_jax._naming`, so the configs can validate names.
"""
from nc_jax.losses._registry import (DEFAULT_SMOOTHING, LOSSES, Loss, LossFactory, cross_entropy,
                                     get_loss, known_losses, label_smoothing, loss_name, mse,
                                     register_loss)

__all__ = [
    "DEFAULT_SMOOTHING", "LOSSES", "Loss", "LossFactory", "cross_entropy", "get_loss",
    "known_losses", "label_smoothing", "loss_name", "mse", "register_loss",
]
