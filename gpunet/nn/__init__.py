"""gn.nn: modules with explicit forward/backward, PyTorch names and layouts.

    Module, Parameter, Sequential                         (module.py)
    Linear, Flatten, Conv2d, MaxPool2d, AvgPool2d,        (layers.py lists where each lives)
    ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout,
    BatchNorm1d, BatchNorm2d, Embedding
    init                                                  (weight initializers)
"""
from .module import Module, Parameter, Sequential  # noqa: F401
from . import init  # noqa: F401
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding,  # noqa: F401
                     Flatten, LeakyReLU, Linear, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh)
