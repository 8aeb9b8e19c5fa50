"""Fully connected layers: Linear and Flatten.

Linear:  y = x @ W.T + b       x (N, in) or (N, *, in), W (out, in), b (out,), y (..., out)
         dx = dy @ W,  dW += dy.T @ x,  db += Σ_rows dy
Flatten: (N, d1, d2, ...) -> (N, d1·d2·...) as a view; backward reshapes dy back.
"""
from __future__ import annotations

import math

from .. import precision as _precision
from ..errors import GpunetValueError
from . import init as _init
from ._layer import Layer, RegularizedLayer, boolean, positive_int
from .module import Parameter


class Linear(RegularizedLayer):
    """y = x @ W.T + b, PyTorch layout: weight (out_features, in_features), bias (out_features,).

    init defaults to "glorot_uniform" (Keras' default; variance-preserving for tanh/linear
    stacks); pass init="he_normal" before ReLUs. Leading dimensions beyond the first are
    allowed: (N, *, in) -> (N, *, out). init="torch_default" draws PyTorch's default, and then
    bias_init (None: zeros, or PyTorch's U(±1/sqrt(in_features)) with "torch_default") too.
    `precision` (set by gpunet.precision.apply): the compute precision of its GEMMs.
    """

    takes_precision, precision = True, None

    def __init__(self, in_features, out_features, bias=True, init="glorot_uniform",
                 bias_init=None, kernel_regularizer=None, activity_regularizer=None):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        has_bias = boolean("Linear", "bias", bias)
        self.weight = Parameter(_init.initialize(init, (self.out_features, self.in_features), arg="init"))
        bias_init = _init.bias_initializer(init, bias_init, (self.out_features, self.in_features))
        self.bias = Parameter(_init.initialize(bias_init, (self.out_features,), arg="bias_init")) \
            if has_bias else None
        self._init_regularizers(kernel_regularizer, activity_regularizer)
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        if x.ndim < 2 or x.shape[-1] != self.in_features:
            raise self._shape_error(f"(N, {self.in_features}) or (N, *, {self.in_features})", x)
        self._check_float(x, self.weight.dtype)
        p = self.precision  # None (fp32) or the GEMM's compute precision: operands cast once, kept
        x2 = _precision.cast(p, x.reshape(-1, self.in_features))
        w = _precision.cast(p, self.weight.data)
        y = _precision.matmul(p, x2, w.T, split=False)  # BLAS reads the transposed view directly
        if self.bias is not None:
            y += self.bias.data
        y = y.reshape(*x.shape[:-1], self.out_features)
        self._cache = (x2, x.shape, w)
        return self._keep_output(y)

    def backward(self, dy, need_input_grad=True):
        """dx, or None when need_input_grad=False (the first layer: its dx GEMM is skipped)."""
        x2, x_shape, w = self._saved()
        self._check_dy(dy, (*x_shape[:-1], self.out_features))
        dy = self._activity_dy(dy)
        dy2 = dy.reshape(-1, self.out_features)
        p = self.precision
        dyc = _precision.cast(p, dy2)
        self.weight.grad += _precision.matmul(p, dyc.T, x2, split=False)
        self._add_kernel_grad()
        if self.bias is not None:
            self.bias.grad += dy2.sum(axis=0)
        if not need_input_grad:
            return None
        return _precision.matmul(p, dyc, w, split=False).reshape(x_shape)

    def extra_repr(self):
        extra = "" if self.bias is not None else ", bias=False"
        return f"{self.in_features}→{self.out_features}{extra}{self._regularizer_repr()}"


class Flatten(Layer):
    """Flattens dims start_dim..end_dim into one (PyTorch); default (N, ...) -> (N, prod(...))."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for arg, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise GpunetValueError(f"Flatten: {arg} expected an int, got {v!r}")
        self.start_dim, self.end_dim = start_dim, end_dim
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        nd = x.ndim
        start = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        end = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= start <= end < nd:
            raise self._shape_error(f"at least {max(self.start_dim, self.end_dim) + 1} dimensions "
                                    f"(start_dim={self.start_dim}, end_dim={self.end_dim})", x)
        if x.dtype.kind == "f":
            self._check_finite(x)
        y = x.reshape(*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        x_shape, y_shape = self._saved()
        return self._check_dy(dy, y_shape).reshape(x_shape)

    def extra_repr(self):
        if (self.start_dim, self.end_dim) == (1, -1):
            return ""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
