"""Shape and plumbing layers: Identity, ZeroPad2d and Residual.

    Identity:  y = x                                   dx = dy
    ZeroPad2d: y = x padded with zeros by (left, right, top, bottom)   dx = the interior of dy
    Residual:  y = body(x) + shortcut(x)               dx = body.backward(dy) + shortcut.backward(dy)
               (shortcut None: the identity, dx = body.backward(dy) + dy; He et al. 2016)
"""
from __future__ import annotations

import numpy as np

from ..errors import GpunetTypeError, GpunetValueError, ShapeError
from ._layer import Layer
from ._window import pad_mode, unpad_mode
from .module import Module


class Identity(Layer):
    """y = x (the same array: nothing is copied or kept). Any input; a placeholder layer."""

    def __init__(self, *args, **kwargs):  # PyTorch's Identity accepts and ignores arguments ...
        super().__init__()
        if args or kwargs:                 # ... gpunet refuses them rather than ignore them
            raise GpunetTypeError(f"Identity: takes no arguments, got {args or ''}{kwargs or ''}")
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        self._cache = x.shape
        return x

    def backward(self, dy, need_input_grad=True):
        return self._check_dy(dy, self._saved())


class ZeroPad2d(Layer):
    """Zero padding of the last two axes: an int, or (left, right, top, bottom) as in PyTorch."""

    def __init__(self, padding):
        super().__init__()
        pads = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding) \
            if isinstance(padding, (tuple, list)) else ()
        if len(pads) != 4 or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0
                                     for p in pads):
            raise GpunetValueError(f"ZeroPad2d: padding expected an int >= 0 or (left, right, top, bottom), "
                                   f"got {padding!r}")
        self.padding = tuple(int(p) for p in pads)
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        if x.ndim < 2:
            raise self._shape_error("(*, H, W)", x)
        if x.dtype.kind == "f":
            self._check_finite(x)
        left, right, top, bottom = self.padding
        y = pad_mode(x, (top, bottom, left, right), "zeros")
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        x_shape, y_shape = self._saved_shapes(dy)
        left, right, top, bottom = self.padding
        return unpad_mode(dy, (top, bottom, left, right), "zeros", *x_shape[-2:])

    def extra_repr(self):
        return f"{self.padding}"


class Residual(Module):
    """body(x) + shortcut(x), both Modules (shortcut None: x itself). Put the activation
    that follows the sum (a ResNet block's ReLU) after this module."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        for arg, m in (("body", body), ("shortcut", shortcut)):
            if m is not None and not isinstance(m, Module):
                raise GpunetTypeError(f"Residual: {arg} expected a gn.nn.Module, got {type(m).__name__}")
        if body is None:
            raise GpunetTypeError("Residual: body expected a gn.nn.Module, got None")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        y = self.body.forward(x)
        s = x if self.shortcut is None else self.shortcut.forward(x)
        if y.shape != s.shape:
            raise ShapeError(f"Residual: body output {tuple(y.shape)} and shortcut output "
                             f"{tuple(s.shape)} differ; give a shortcut that maps the input to the body's shape")
        return y + s  # a new array: y may be the body's kept output

    def backward(self, dy, need_input_grad=True):
        if not need_input_grad:
            self.body.backward(dy, need_input_grad=False)
            if self.shortcut is not None:
                self.shortcut.backward(dy, need_input_grad=False)
            return None
        dx = self.body.backward(dy)
        if self.shortcut is None:
            return dx + dy
        dx = dx + self.shortcut.backward(dy)
        return dx
