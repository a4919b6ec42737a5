"""The model registry (models by name, big_vision style) and the classifier rule.

`ModelConfig.name` picks a factory `(model_cfg, num_classes) -> flax Module` registered here; the
built-in models register when `nc_jax.models` is imported, a user's with `register_model`.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp


def head_classifier(params) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """The default classifier rule: the Dense layer named `head` at the top of `params`.

    Returns (W (C, d), b (C,) or None): rows w_c of the layer-peeled model, logits = h W^T + b.
    Flax stores a Dense kernel as (d, C), hence the transpose.
    """
    if "head" not in params or "kernel" not in params["head"]:
        raise KeyError(
            "no Dense layer named 'head' at the top level of the parameters (found "
            f"{sorted(params)}); name the classifier layer 'head' or pass classifier=fn with "
            "fn(params) -> (W (C, d), b (C,) or None)")
    head = params["head"]
    return head["kernel"].T, head.get("bias")


#: The name checkpoints and results use for the default classifier rule.
head_classifier.nc_jax_name = "head"


def last_layer_weights(params) -> jnp.ndarray:
    """Classifier matrix W (C, width) of the layer-peeled model (rows w_c)."""
    return head_classifier(params)[0]


#: Models by `ModelConfig.name`: name -> factory(ModelConfig, num_classes) -> Module.
MODELS: dict = {}


def register_model(name: str):
    """Decorator adding a factory `(model_cfg, num_classes) -> flax Module` under `name`."""
    def deco(factory: Callable):
        MODELS[name] = factory
        return factory
    return deco


def known_models() -> Tuple[str, ...]:
    """Names `ModelConfig.name` accepts: the built-in models plus any `register_model`ed."""
    return tuple(sorted(MODELS))


def make_model(cfg, num_classes: int) -> nn.Module:
    """The model a `ModelConfig` names ("mlp", "cnn", "resnet", ...), with `num_classes` outputs."""
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; known models: {list(known_models())}")
    return MODELS[cfg.name](cfg, num_classes)
