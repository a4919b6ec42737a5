"""The MLP of Definition 3.2.1 (arXiv 2309.04644) with three BatchNorm variants.

Everything is a pure function of the `params` and `batch_stats` pytrees, so a single-run model
can be `vmap`ped over a run axis and `scan`ned over minibatches.
"""
from __future__ import annotations

import flax.linen as nn

from nc_jax.models._layers import BN_VARIANTS, TorchDense, bn_layer
from nc_jax.models._registry import register_model


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

    @property
    def last_bn_name(self):
        """The parameter entry of the BN layer whose output is h (decay group "last_bn"), None
        without BN."""
        return None if self.bn == "none" else f"bn_{self.depth - 2}"

    def last_bn(self, params, prev):
        """The last BN layer, the one whose output is the feature h (optional model protocol,
        read by Proposition 2.2.1's report): `{"scale": gamma (d,) or None, "bias": beta (d,) or
        None, "input": z (N, d)}`, z = ReLU(W_{L-1} prev + b_{L-1}) its input, computed from
        `prev` (N, width), the previous block's train-mode output (or the flattened input for
        depth 2). None without BN."""
        if self.bn == "none":
            return None
        last = self.depth - 2
        bn, dense = params.get(self.last_bn_name, {}), params[f"dense_{last}"]
        z = nn.relu(prev @ dense["kernel"] + dense["bias"])
        return {"scale": bn.get("scale"), "bias": bn.get("bias"), "input": z}


@register_model("mlp")
def _mlp(cfg, num_classes: int) -> MLP:
    return MLP(depth=cfg.depth, width=cfg.width, num_classes=num_classes, bn=cfg.bn)


@register_model("mlp_peeled")
def _mlp_peeled(cfg, num_classes: int) -> MLP:
    return MLP(depth=cfg.depth, width=cfg.width, num_classes=num_classes, bn=cfg.bn, peeled=True)
