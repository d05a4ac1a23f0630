"""Neural networks written from scratch in NumPy: layers, the MLP and its flat parameter buffer."""

from descentlab.nn.layers import (
    ACTIVATIONS,
    Affine,
    BatchNorm,
    Dropout,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    softmax_cross_entropy,
)
from descentlab.nn.mlp import MLP, WEIGHT_INITS, init_std
from descentlab.nn.params import FlatParameters

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "WEIGHT_INITS",
    "Affine",
    "BatchNorm",
    "Dropout",
    "FlatParameters",
    "ReLU",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "init_std",
    "softmax_cross_entropy",
]
