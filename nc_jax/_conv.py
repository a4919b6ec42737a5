"""A 2-D convolution whose gradients XLA:CPU runs on its fast path inside `lax.scan`.

Measured (issue 11, helper study): the stock transposed convolutions of `conv_general_dilated`'s
VJP keep layouts (f01b_i01o / b01f_01oi) that XLA:CPU rewrites to its fast kernels only outside
a loop; inside the training loop's scan they ran 6-8x slower (CNN-4 w16: 42.6 s -> 7.1-8.2 s per
run-epoch with this version, ResNet-8 w8: 63.7 -> 16.9 s, both under load). Here both gradients
are written as convolutions in the canonical NHWC / HWIO layout with explicit transposes; the
values are the same convolutions, so gradients equal the stock ones (tests/test_convnets.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

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
