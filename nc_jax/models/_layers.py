"""Layers shared by the models: PyTorch-initialised Dense, a BatchNorm equal to PyTorch's, the
BN variants by name, and a 2-D convolution whose gradients stay on XLA:CPU's fast path.

The convolution: the stock transposed convolutions of `conv_general_dilated`'s VJP keep layouts
(f01b_i01o / b01f_01oi) that XLA:CPU rewrites to its fast kernels only outside a loop; inside the
training loop's scan they ran 6-8x slower (CNN-4 w16: 42.6 s -> 7.1-8.2 s per run-epoch with
this version, ResNet-8 w8: 63.7 -> 16.9 s, on the 2-core CPU). `conv2d` writes both gradients as
convolutions in the canonical NHWC / HWIO layout with explicit transposes; the values are the
same convolutions, so gradients equal the stock ones.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

#: BN variants by name: trainable gamma and beta, no parameters, or no BN layer.
BN_VARIANTS = ("affine", "plain", "none")


def torch_linear_init():
    """PyTorch nn.Linear's default init: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The thesis names no framework; this is our choice (the default of most NC code), and it fixes
    the starting scale of the features, so the path to collapse is comparable across our runs. kaiming_uniform(a=sqrt(5)) equals
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


def bn_layer(variant: str, momentum: float = 0.1, name: Optional[str] = None):
    """The BN module of a variant name ("affine", "plain", "scale"), or None for "none"."""
    if variant == "none":
        return None
    affine = {"affine": True, "plain": False, "scale": "scale"}[variant]
    return BatchNorm(affine=affine, momentum=momentum, name=name)


_DN = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, stride: int, pad: int):
    """x (B, H, W, C_in) * kernel (kh, kw, C_in, C_out) with `stride` and `pad` zeros on every
    side -> (B, H', W', C_out), H' = (H + 2 pad - kh) // stride + 1."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=_DN)


def _conv2d_fwd(x, kernel, stride, pad):
    return conv2d(x, kernel, stride, pad), (x, kernel)


def _conv2d_bwd(stride, pad, res, g):
    x, k = res
    kh, kw = k.shape[:2]
    (H, W), (ho, wo) = x.shape[1:3], g.shape[1:3]
    # dx: the stride-dilated cotangent convolved with the flipped kernel, in / out swapped
    k_t = jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2)
    lo_h, lo_w = kh - 1 - pad, kw - 1 - pad
    hi_h = H - (ho - 1) * stride - 1 - lo_h + kh - 1
    hi_w = W - (wo - 1) * stride - 1 - lo_w + kw - 1
    dx = jax.lax.conv_general_dilated(g, k_t, (1, 1), ((lo_h, hi_h), (lo_w, hi_w)),
                                      lhs_dilation=(stride, stride), dimension_numbers=_DN)
    # dk[a, b, i, o] = sum_{n,h,w} x_pad[n, s h + a, s w + b, i] g[n, h, w, o]: a convolution
    # with the batch as the contracted channel axis (negative high padding crops)
    x_t = x.transpose(3, 1, 2, 0)                       # (C_in, H, W, B)
    g_t = g.transpose(1, 2, 0, 3)                       # (ho, wo, B, C_out)
    dk = jax.lax.conv_general_dilated(
        x_t, g_t, (1, 1), ((pad, kh + (ho - 1) * stride - H - pad),
                           (pad, kw + (wo - 1) * stride - W - pad)),
        rhs_dilation=(stride, stride), dimension_numbers=_DN)
    return dx, dk.transpose(1, 2, 0, 3)                 # (kh, kw, C_in, C_out)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
