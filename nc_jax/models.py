"""Flax linen models: the MLP of Definition 3.2.1 with three BatchNorm variants.

Everything is a pure function of the `params` and `batch_stats` pytrees, so a single-run model
can be `vmap`ped over a run axis and `scan`ned over minibatches.
"""
from __future__ import annotations

from typing import Tuple

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

    @nn.compact
    def __call__(self, x):
        kernel_init, bias_init_for = torch_linear_init()
        fan_in = x.shape[-1]
        kernel = self.param("kernel", kernel_init, (fan_in, self.features), jnp.float32)
        bias = self.param("bias", bias_init_for(fan_in), (self.features,), jnp.float32)
        return x @ kernel + bias


class BatchNorm1d(nn.Module):
    """BatchNorm over the batch axis, numerically equal to PyTorch's BatchNorm1d.

    Train mode: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta with the biased batch
    variance var_B = mean((x - mean_B)^2) (two-pass, never E[x^2] - E[x]^2, which cancels
    catastrophically in the collapsed regime). Running statistics follow PyTorch:
    running = (1 - m) * running + m * batch, m = `momentum` (PyTorch convention, 0.1), and the
    running variance is updated with the *unbiased* batch variance var_B * n / (n - 1).
    Eval mode normalizes with the running statistics.

    `affine=False` is the thesis' non-affine BN (gamma = 1, beta = 0 fixed, no parameters).
    Statistics are per call: there is no cross-device or cross-run `axis_name`, so runs that are
    vmapped together never share BN statistics.
    """

    affine: bool = True
    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool):
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        if train:
            n = x.shape[0]
            mean = jnp.mean(x, axis=0)
            var = jnp.mean(jnp.square(x - mean), axis=0)
            if not self.is_initializing():
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = (1.0 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1.0 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.affine:
            scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
            bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
            y = y * scale + bias
        return y


class MLP(nn.Module):
    """MLP of Definition 3.2.1: phi_l(h) = BN(ReLU(W_l h + b_l)) for l < L, phi_L = W_L h + b_L.

    `depth` counts Dense layers (thesis: 6 for Figure 3.1, 15 for Figure 3.3). `bn` is "affine"
    (trainable gamma, beta), "plain" (no parameters) or "none" (no BN).

    Call: `logits = model.apply(vars, x, train)` with x (B, d_in) -> logits (B, C); with
    `return_features=True` it returns `(logits, (h_1, ..., h_{L-1}))`, each h_l (B, width), the
    post-BN output of hidden block l (the features the thesis measures; h_{L-1} is the
    last-layer feature h of the layer-peeled model).
    """

    depth: int
    width: int
    num_classes: int
    bn: str = "affine"
    bn_momentum: float = 0.1

    def setup(self):
        if self.bn not in BN_VARIANTS:
            raise ValueError(f"bn must be one of {BN_VARIANTS}, got {self.bn!r}")
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2 (at least one hidden block), got {self.depth}")

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        h = x
        features = []
        for layer in range(self.depth - 1):
            h = TorchDense(self.width, name=f"dense_{layer}")(h)
            h = nn.relu(h)
            if self.bn != "none":
                h = BatchNorm1d(affine=self.bn == "affine", momentum=self.bn_momentum,
                                name=f"bn_{layer}")(h, train)
            features.append(h)
        logits = TorchDense(self.num_classes, name="head")(h)
        if return_features:
            return logits, tuple(features)
        return logits


def last_layer_weights(params) -> jnp.ndarray:
    """Classifier matrix W (C, width) of the layer-peeled model (rows w_c)."""
    return params["head"]["kernel"].T


def bn_scale(params, layer: int) -> jnp.ndarray:
    """gamma of hidden block `layer` (0-based) of an affine-BN MLP."""
    return params[f"bn_{layer}"]["scale"]


def hidden_feature_shapes(model: MLP) -> Tuple[int, ...]:
    return tuple(model.width for _ in range(model.depth - 1))
