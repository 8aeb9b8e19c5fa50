"""2-d pooling over NCHW inputs: MaxPool2d and AvgPool2d.

    MaxPool2d: y[n, c, ho, wo] = max_{i,j} xpad[n, c, sh·ho + i, sw·wo + j]   (xpad padded with −inf)
               dx: each window's dy goes to its argmax only; ties go to the first
               element in row-major window order (exactly one element per window).
    AvgPool2d: y = (1 / (kh·kw)) Σ_{i,j} xpad[...]                             (xpad padded with 0)
               dx: dy / (kh·kw) to every element of the window (count_include_pad=True,
               PyTorch's default).

Both loop over the kh·kw kernel offsets with strided slices (see _window.py), so
overlapping windows (e.g. 3×3 stride 2) accumulate exactly in backward. MaxPool keeps
only the argmax offset per output (int8), not the input.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ._layer import Layer, int_pair
from ._window import crop_hw, offset_view, out_size, pad_hw


class _Pool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = int_pair(name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair(name, "stride", stride)
        self.padding = int_pair(name, "padding", padding, minimum=0)
        for p, k in zip(self.padding, self.kernel_size):
            if 2 * p > k:  # else a window could lie entirely in the padding
                raise GpunetValueError(f"{name}: padding expected at most half the kernel size "
                                       f"{self.kernel_size}, got {padding!r}")
        self._cache = None

    def _geometry(self, x):
        """Validates x and returns (Ho, Wo)."""
        self._check_array(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.ndim != 4:
            raise self._shape_error("(N, C, H, W)", x)
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise self._shape_error(f"H + 2·{ph} >= {kh} and W + 2·{pw} >= {kw} (the window must fit)", x)
        self._check_float(x)
        return (out_size(x.shape[2], kh, self.stride[0], ph), out_size(x.shape[3], kw, self.stride[1], pw))

    def _offsets(self):
        kh, kw = self.kernel_size
        return [(k, divmod(k, kw)) for k in range(kh * kw)]

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}"
        if self.stride != self.kernel_size:
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s


class MaxPool2d(_Pool2d):
    """Max over each (kh, kw) window; stride defaults to kernel_size. (N, C, H, W) -> (N, C, Ho, Wo)."""

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        xp = backend.xp_of(x)
        xpad = pad_hw(x, *self.padding, value=-np.inf)
        sh, sw = self.stride
        n_off = self.kernel_size[0] * self.kernel_size[1]
        arg = xp.zeros((*x.shape[:2], Ho, Wo), dtype=np.int8 if n_off <= 127 else np.int32)
        y = None
        for k, (i, j) in self._offsets():
            s = offset_view(xpad, i, j, Ho, Wo, sh, sw)
            if y is None:
                y = xp.array(s, copy=True, order="C")  # never a view of x: y is updated in place
                continue
            better = s > y  # strict: a tie keeps the earlier offset
            xp.copyto(y, s, where=better)
            xp.copyto(arg, xp.full((), k, dtype=arg.dtype), where=better)  # same-dtype source on both backends
        self._cache = (arg, x.shape)
        return y

    def backward(self, dy):
        arg, x_shape = self._saved()
        self._check_dy(dy, arg.shape)
        xp = backend.xp_of(dy)
        ph, pw = self.padding
        N, C, H, W = x_shape
        Ho, Wo = arg.shape[2:]
        dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
        routed = xp.empty_like(dy)
        for k, (i, j) in self._offsets():
            xp.multiply(dy, arg == k, out=routed)
            view = offset_view(dxpad, i, j, Ho, Wo, *self.stride)
            view += routed
        return crop_hw(dxpad, ph, pw, H, W)


class AvgPool2d(_Pool2d):
    """Mean over each (kh, kw) window, zero padding counted (count_include_pad=True)."""

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        xp = backend.xp_of(x)
        xpad = pad_hw(x, *self.padding)
        y = None
        for k, (i, j) in self._offsets():
            s = offset_view(xpad, i, j, Ho, Wo, *self.stride)
            if y is None:
                y = xp.array(s, copy=True, order="C")
            else:
                y += s
        y *= 1.0 / (self.kernel_size[0] * self.kernel_size[1])
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dy):
        x_shape, y_shape = self._saved()
        self._check_dy(dy, y_shape)
        xp = backend.xp_of(dy)
        ph, pw = self.padding
        N, C, H, W = x_shape
        g = dy * (1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
        for k, (i, j) in self._offsets():
            view = offset_view(dxpad, i, j, *y_shape[2:], *self.stride)
            view += g
        return crop_hw(dxpad, ph, pw, H, W)
