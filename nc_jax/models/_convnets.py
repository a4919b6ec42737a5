"""Convolutional models following the model protocol of `nc_jax.models`: a plain CNN and a
CIFAR-style ResNet-(6n+2).

Both take NHWC images x (B, H, W, C_in) and return logits (B, num_classes), or with
`return_features=True` the pair `(logits, features)`, where `features` is a tuple of (B, channels)
arrays in layer order whose last entry is the vector h the classifier reads
(logits = h W^T + b, W, b from the TorchDense named "head").

Per-layer features are global-average-pooled (GAP) feature maps, not flattened maps: flattening a
28x28x`width` map gives 28*28*32 = 25088 dimensions per sample at width 32, and the layer-wise NC
metrics build d x d within/between-class covariances over the full training set, which is out of
reach on a CPU at that size. The GAP vector is also exactly what the classifier of both networks
sees, so the last feature is the classical last-layer feature of Papyan et al. (2020).

Initialization follows PyTorch's defaults (nn.Conv2d / nn.Linear), as for the MLP, so that
feature scales at initialization match the PyTorch experiments.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from nc_jax.models._layers import BN_VARIANTS, TorchDense, bn_layer, conv2d
from nc_jax.models._registry import register_model


def _check_image_input(x, model_name: str) -> None:
    # Flat (B, d) data has no spatial layout to recover; guessing a square reshape would silently
    # train on scrambled pixels, so refuse.
    if x.ndim != 4:
        raise ValueError(
            f"model {model_name!r} needs image inputs (B, H, W, C); got shape {tuple(x.shape)}")


def _check_bn(bn: str) -> None:
    if bn not in BN_VARIANTS:
        raise ValueError(f"bn must be one of {BN_VARIANTS}, got {bn!r}")


def _gap(h: jnp.ndarray) -> jnp.ndarray:
    """Global average pool (B, H, W, C) -> (B, C)."""
    return jnp.mean(h, axis=(1, 2))


class TorchConv(nn.Module):
    """2-D convolution on NHWC inputs with PyTorch nn.Conv2d's default initialization.

    Kernel (kh, kw, C_in, features) (HWIO) ~ kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = variance_scaling(1/3, "fan_in", "uniform"); bias
    ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = C_in * kh * kw
    (torch.nn.Conv2d.reset_parameters).

    `padding=None` pads kernel_size // 2 zeros on every side, i.e. PyTorch's `padding=1` for a
    3x3 kernel, so the output is ceil(H / strides) for odd kernels, exactly as in PyTorch.
    This equals flax's "SAME" at stride 1 but not at stride 2 on even sizes: "SAME" pads (0, 1)
    where PyTorch pads (1, 1), which shifts every window by one pixel.

    x (B, H, W, C_in) -> (B, H', W', features).
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    padding: int | None = None

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"TorchConv needs (B, H, W, C) inputs; got shape {tuple(x.shape)}")
        k = self.kernel_size
        in_ch = x.shape[-1]
        fan_in = in_ch * k * k
        bound = 1.0 / math.sqrt(fan_in)
        kernel = self.param("kernel",
                            nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                            (k, k, in_ch, self.features), jnp.float32)
        pad = k // 2 if self.padding is None else self.padding
        # gradients in canonical layouts: the stock ones run ~7x slower in the training scan
        y = conv2d(x, kernel, self.strides, pad)
        if self.use_bias:
            bias = self.param(
                "bias",
                lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound),
                (self.features,))
            y = y + bias
        return y


def cnn_strides(depth: int) -> tuple[int, ...]:
    """Stride of each CNN block: 2 at the 2nd and 4th block, 1 elsewhere.

    With 3x3 kernels and padding 1 a stride-2 block maps a side H to ceil(H / 2) >= 1, so the
    spatial size never drops below 1 and a 28x28 input ends at 14x14 (depth 2-3) or 7x7
    (depth >= 4); 32x32 ends at 8x8, 12x12 at 3x3, 8x8 at 2x2. Blocks beyond the 4th keep the
    resolution, so deep CNNs add depth at 7x7 as VGG-style nets do after their last pooling.
    """
    return tuple(2 if block in (2, 4) else 1 for block in range(1, depth + 1))


class CNN(nn.Module):
    """Plain CNN: `depth` blocks h <- BN(ReLU(conv3x3(h))), GAP, Dense head.

    The block order conv -> ReLU -> BN mirrors the thesis' MLP block BN(ReLU(W h + b))
    (Definition 3.2.1), so that BN variants mean the same thing in both families; strides follow
    `cnn_strides` (2 at blocks 2 and 4). Every conv has `width` channels and a bias (BN comes
    after the ReLU, so the bias is not cancelled by it).

    x (B, H, W, C_in) -> logits (B, num_classes); with `return_features=True`
    `(logits, (g_1, ..., g_depth))`, g_l = GAP of block l's output, each (B, width); g_depth is
    the head's input.
    """

    depth: int
    width: int
    num_classes: int
    bn: str = "affine"
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        _check_image_input(x, "cnn")
        _check_bn(self.bn)
        if self.depth < 1:
            raise ValueError(f"cnn depth must be >= 1, got {self.depth}")
        h = x
        features = []
        for block, stride in enumerate(cnn_strides(self.depth)):
            h = nn.relu(TorchConv(self.width, 3, stride, name=f"conv_{block}")(h))
            bn = bn_layer(self.bn, self.bn_momentum, name=f"bn_{block}")
            if bn is not None:
                h = bn(h, train)
            features.append(_gap(h))
        logits = TorchDense(self.num_classes, name="head")(features[-1])
        if return_features:
            return logits, tuple(features)
        return logits


def resnet_blocks_per_stage(depth: int) -> int:
    """n of a CIFAR ResNet-`depth`, depth = 6n + 2 (He et al. 2016, sec. 4.2), else ValueError."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"resnet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, ...), got {depth!r}")
    return (depth - 2) // 6


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016, fig. 2 left), standard conv-BN-ReLU ordering:

        y = ReLU(BN(conv3x3_s(x))); y = BN(conv3x3(y)); out = ReLU(y + shortcut(x))

    shortcut = identity, or BN(conv1x1_s(x)) when the stride or channel count changes (projection,
    option B of the paper). x (B, H, W, C_in) -> (B, ceil(H/s), ceil(W/s), features).
    """

    features: int
    strides: int = 1
    bn: str = "affine"
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x, train: bool):
        # A conv bias right before BN is cancelled by the mean subtraction (and "plain" BN has no
        # beta to replace it), so it would be a dead, weight-decayed parameter: biases only
        # without BN, as in torchvision's ResNets (bias=False) plus the BN-free case.
        use_bias = self.bn == "none"

        def norm(h, name):
            layer = bn_layer(self.bn, self.bn_momentum, name=name)
            return h if layer is None else layer(h, train)

        y = TorchConv(self.features, 3, self.strides, use_bias, name="conv1")(x)
        y = nn.relu(norm(y, "bn1"))
        y = TorchConv(self.features, 3, 1, use_bias, name="conv2")(y)
        y = norm(y, "bn2")
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = TorchConv(self.features, 1, self.strides, use_bias, padding=0,
                                 name="proj_conv")(x)
            shortcut = norm(shortcut, "proj_bn")
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2) (He et al. 2016, sec. 4.2), standard conv-BN-ReLU ordering.

    stem: ReLU(BN(conv3x3(width))); 3 stages of n `BasicBlock`s with width, 2 width, 4 width
    channels, stride 2 at the first block of stages 2 and 3 (1x1 conv + BN projection shortcut
    where the shape changes; the paper's CIFAR nets use zero-padded identity shortcuts, option
    A); global average pool; Dense head named "head". With bn="none" every BN is omitted and the
    convs get biases; "plain" BN has no gamma/beta. depth 8, 14, 20, ... (n = 1, 2, 3, ...).

    x (B, H, W, C_in) -> logits (B, num_classes); with `return_features=True`
    `(logits, (g_stem, g_1, ..., g_3n))`: GAP of the stem output (B, width) and of every block
    output (B, width * 2^stage); the last one is the head's input.
    """

    depth: int
    width: int
    num_classes: int
    bn: str = "affine"
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        _check_image_input(x, "resnet")
        _check_bn(self.bn)
        n = resnet_blocks_per_stage(self.depth)
        h = TorchConv(self.width, 3, 1, self.bn == "none", name="stem_conv")(x)
        bn = bn_layer(self.bn, self.bn_momentum, name="stem_bn")
        if bn is not None:
            h = bn(h, train)
        h = nn.relu(h)
        features = [_gap(h)]
        for stage in range(3):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                h = BasicBlock(self.width * 2 ** stage, stride, self.bn, self.bn_momentum,
                               name=f"stage{stage + 1}_block{block + 1}")(h, train)
                features.append(_gap(h))
        logits = TorchDense(self.num_classes, name="head")(features[-1])
        if return_features:
            return logits, tuple(features)
        return logits


@register_model("cnn")
def _cnn(cfg, num_classes: int) -> CNN:
    return CNN(depth=cfg.depth, width=cfg.width, num_classes=num_classes, bn=cfg.bn)


@register_model("resnet")
def _resnet(cfg, num_classes: int) -> ResNet:
    resnet_blocks_per_stage(cfg.depth)
    return ResNet(depth=cfg.depth, width=cfg.width, num_classes=num_classes, bn=cfg.bn)
