"""Models: a registry by name (`ModelConfig.name`), the thesis' MLP, conv nets, shared layers and
the Flax NNX adapter.

The model protocol every trainer and reporter relies on is documented in `nc_jax.training.Task`.
Importing this package registers the built-in models ("mlp", "mlp_peeled", "cnn", "resnet").
"""
from nc_jax.models._convnets import CNN, BasicBlock, ResNet, TorchConv, cnn_strides
from nc_jax.models._layers import BN_VARIANTS, BatchNorm, TorchDense, bn_layer, conv2d, \
    torch_linear_init
from nc_jax.models._mlp import MLP
from nc_jax.models._nnx import NNXModule, from_nnx, linear_classifier
from nc_jax.models._registry import MODELS, head_classifier, known_models, last_layer_weights, \
    make_model, register_model

__all__ = [
    "BN_VARIANTS", "BasicBlock", "BatchNorm", "CNN", "MLP", "MODELS", "NNXModule", "ResNet",
    "TorchConv", "TorchDense", "bn_layer", "cnn_strides", "conv2d", "from_nnx", "head_classifier",
    "known_models", "last_layer_weights", "linear_classifier", "make_model", "register_model",
    "torch_linear_init",
]
