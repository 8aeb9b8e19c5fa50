"""Every layer in one namespace (the classes live in files split by kind).

    linear.py          Linear, Flatten
    conv.py            Conv2d, Conv1d           (im2col + one GEMM per group; _window.py holds im2col/col2im)
    conv_transpose.py  ConvTranspose2d
    pool.py            MaxPool2d, AvgPool2d
    adaptive_pool.py   AdaptiveAvgPool2d, AdaptiveMaxPool2d
    activation.py      ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, LogSoftmax
    smooth.py          GELU, SiLU, ELU, Softplus
    dropout.py         Dropout, Dropout2d
    norm.py            BatchNorm1d, BatchNorm2d
    layernorm.py       LayerNorm, GroupNorm
    lrn.py             LocalResponseNorm
    embedding.py       Embedding
    utility.py         Identity, ZeroPad2d, Residual
"""
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .adaptive_pool import AdaptiveAvgPool2d, AdaptiveMaxPool2d
from .conv import Conv1d, Conv2d
from .conv_transpose import ConvTranspose2d
from .dropout import Dropout, Dropout2d
from .embedding import Embedding
from .layernorm import GroupNorm, LayerNorm
from .linear import Flatten, Linear
from .lrn import LocalResponseNorm
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AvgPool2d, MaxPool2d
from .smooth import ELU, GELU, SiLU, Softplus
from .utility import Identity, Residual, ZeroPad2d

__all__ = ["Linear", "Flatten", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Softmax", "Dropout", "BatchNorm1d", "BatchNorm2d", "Embedding",
           "Conv1d", "ConvTranspose2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "LogSoftmax",
           "GELU", "SiLU", "ELU", "Softplus", "Dropout2d", "LayerNorm", "GroupNorm",
           "LocalResponseNorm", "Identity", "ZeroPad2d", "Residual"]
