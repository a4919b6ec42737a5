"""Flax linen models: the MLP of Definition 3.2.1 with three BatchNorm variants.

Everything is a pure function of the `params` and `batch_stats` pytrees, so a single-run model
can be `vmap`ped over a run axis and `scan`ned over minibatches.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nc_jax.config import BN_VARIANTS


def torch_linear_init():
    """PyTorch nn.Linear's default init: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The thesis trained PyTorch models; matching the initialization keeps the starting scale of
    features (and so the path to collapse) comparable. kaiming_uniform(a=sqrt(5)) equals
    variance_scaling(1/3, fan_in, uniform).
    """
    kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

    def bias_init_for(fan_in: int):
        bound = 1.0 / jnp.sqrt(fan_in)

        def init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        return init

    return kernel_init, bias_init_for


class TorchDense(nn.Module):
    """Dense layer with PyTorch's default initialization (kernel stored as (in, out))."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kernel_init, bias_init_for = torch_linear_init()
        fan_in = x.shape[-1]
        kernel = self.param("kernel", kernel_init, (fan_in, self.features), jnp.float32)
        if not self.use_bias:
            return x @ kernel
        bias = self.param("bias", bias_init_for(fan_in), (self.features,), jnp.float32)
        return x @ kernel + bias


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last (features / channels), numerically equal to
    PyTorch's BatchNorm1d on (B, d) inputs and BatchNorm2d on (B, H, W, C) inputs.

    Train mode: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta, mean and the biased
    variance var_B = mean((x - mean_B)^2) taken over the n = B (x H x W) values of each channel
    (two-pass, never E[x^2] - E[x]^2, which cancels catastrophically in the collapsed regime).
    Running statistics follow PyTorch: running = (1 - m) * running + m * batch, m = `momentum`
    (PyTorch convention, 0.1), and the running variance is updated with the *unbiased* batch
    variance var_B * n / (n - 1). Eval mode normalizes with the running statistics.

    `affine=False` is the thesis' non-affine BN (gamma = 1, beta = 0 fixed, no parameters);
    `affine="scale"` keeps gamma and drops beta (the theorem's BN, whose outputs have RMS norm
    exactly ||gamma||, Proposition 2.2.1). Statistics are per call: there is no cross-device or
    cross-run `axis_name`, so runs that are vmapped together never share BN statistics.
    """

    affine: bool | str = True
    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool):
        features = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        if train:
            n = math.prod(x.shape[:-1])
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            if not self.is_initializing():
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = (1.0 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1.0 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.affine:
            y = y * self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        if self.affine is True:
            y = y + self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return y


#: Backwards-compatible name: the (B, d) case of `BatchNorm`.
BatchNorm1d = BatchNorm


def bn_layer(variant: str, momentum: float = 0.1, name: Optional[str] = None):
    """The BN module of a variant name ("affine", "plain", "scale"), or None for "none"."""
    if variant == "none":
        return None
    affine = {"affine": True, "plain": False, "scale": "scale"}[variant]
    return BatchNorm(affine=affine, momentum=momentum, name=name)


class MLP(nn.Module):
    """MLP of Definition 3.2.1: phi_l(h) = BN(ReLU(W_l h + b_l)) for l < L, phi_L = W_L h + b_L.

    `depth` counts Dense layers (thesis: 6 for Figure 3.1, 15 for Figure 3.3). `bn` is "affine"
    (trainable gamma, beta), "plain" (no parameters) or "none" (no BN). `peeled=True` is the
    network Theorem 2.3.1 is about exactly: the last BN keeps its scale gamma but no shift
    (so ||h||_RMS = ||gamma||, Proposition 2.2.1) and the classifier has no bias (logits = W h).

    Call: `logits = model.apply(vars, x, train)` with x (B, ...) flattened to (B, d_in) -> logits
    (B, C); with `return_features=True` it returns `(logits, (h_1, ..., h_{L-1}))`, each h_l
    (B, width), the post-BN output of hidden block l (the features the thesis measures; h_{L-1}
    is the last-layer feature h of the layer-peeled model).
    """

    depth: int
    width: int
    num_classes: int
    bn: str = "affine"
    bn_momentum: float = 0.1
    peeled: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        if self.bn not in BN_VARIANTS:
            raise ValueError(f"bn must be one of {BN_VARIANTS}, got {self.bn!r}")
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2 (at least one hidden block), got {self.depth}")
        h = x.reshape(x.shape[0], -1)
        features = []
        for layer in range(self.depth - 1):
            h = nn.relu(TorchDense(self.width, name=f"dense_{layer}")(h))
            last = layer == self.depth - 2
            variant = "scale" if (self.peeled and last and self.bn == "affine") else self.bn
            bn = bn_layer(variant, self.bn_momentum, name=f"bn_{layer}")
            if bn is not None:
                h = bn(h, train)
            features.append(h)
        logits = TorchDense(self.num_classes, use_bias=not self.peeled, name="head")(h)
        if return_features:
            return logits, tuple(features)
        return logits


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


def last_layer_weights(params) -> jnp.ndarray:
    """Classifier matrix W (C, width) of the layer-peeled model (rows w_c)."""
    return head_classifier(params)[0]


#: Built-in models by `ModelConfig.name`: name -> factory(ModelConfig, num_classes) -> Module.
MODELS: dict = {}


def register_model(name: str):
    """Decorator adding a factory `(model_cfg, num_classes) -> flax Module` under `name`."""
    def deco(factory: Callable):
        MODELS[name] = factory
        return factory
    return deco


@register_model("mlp")
def _mlp(cfg, num_classes: int) -> MLP:
    return MLP(depth=cfg.depth, width=cfg.width, num_classes=num_classes, bn=cfg.bn)


def known_models() -> Tuple[str, ...]:
    """Names `ModelConfig.name` accepts: the built-in models plus any `register_model`ed."""
    import nc_jax.convnets  # noqa: F401  (registers "cnn" and "resnet")
    return tuple(sorted(MODELS))


@register_model("mlp_peeled")
def _mlp_peeled(cfg, num_classes: int) -> MLP:
    return MLP(depth=cfg.depth, width=cfg.width, num_classes=num_classes, bn=cfg.bn, peeled=True)


def make_model(cfg, num_classes: int) -> nn.Module:
    """The model a `ModelConfig` names ("mlp", "cnn", "resnet"), with `num_classes` outputs."""
    if cfg.name not in known_models():
        raise ValueError(f"unknown model {cfg.name!r}; known models: {list(known_models())}")
    return MODELS[cfg.name](cfg, num_classes)
