"""Every layer in one namespace (the classes live in files split by kind).

    linear.py      Linear, Flatten
    conv.py        Conv2d                   (im2col + one GEMM; _window.py holds im2col/col2im)
    pool.py        MaxPool2d, AvgPool2d
    activation.py  ReLU, LeakyReLU, Sigmoid, Tanh, Softmax
    dropout.py     Dropout
    norm.py        BatchNorm1d, BatchNorm2d
    embedding.py   Embedding
"""
from .activation import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d
from .dropout import Dropout
from .embedding import Embedding
from .linear import Flatten, Linear
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AvgPool2d, MaxPool2d

__all__ = ["Linear", "Flatten", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Softmax", "Dropout", "BatchNorm1d", "BatchNorm2d", "Embedding"]
