"""gn.nn: modules with explicit forward/backward, PyTorch names and layouts.

    Module, Parameter, Sequential                         (module.py)
    Linear, Flatten, Conv2d, MaxPool2d, AvgPool2d,        (layers.py lists where each lives)
    ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout,
    BatchNorm1d, BatchNorm2d, Embedding,
    Conv1d, ConvTranspose2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d,
    GELU, SiLU, ELU, Softplus, LogSoftmax, Dropout2d,
    LayerNorm, GroupNorm, LocalResponseNorm, Identity, ZeroPad2d, Residual
    init                                                  (weight initializers)
"""
from .module import Module, Parameter, Sequential  # noqa: F401
from . import init  # noqa: F401
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding,  # noqa: F401
                     Flatten, LeakyReLU, Linear, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh)
from .layers import (ELU, GELU, AdaptiveAvgPool2d, AdaptiveMaxPool2d, Conv1d,  # noqa: F401
                     ConvTranspose2d, Dropout2d, GroupNorm, Identity, LayerNorm, LocalResponseNorm,
                     LogSoftmax, Residual, SiLU, Softplus, ZeroPad2d)
