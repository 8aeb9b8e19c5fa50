"""Adaptive pooling: a fixed output size (Ho, Wo) from any input size, PyTorch's windows.

Output row ho pools the input rows [floor(ho·H/Ho), ceil((ho + 1)·H/Ho)) (columns alike),
so windows may differ in size and overlap by a row when H is not a multiple of Ho.

    AdaptiveAvgPool2d: y = A_h @ x @ A_w.T         A (Ho × H): 1/len on each window's rows
                       dx = A_h.T @ dy @ A_w
    AdaptiveMaxPool2d: y = max over the window;  dx: each window's dy to its first maximum
                       (row-major within the window), as MaxPool2d.

The averaging matrices make both directions two small GEMMs on NumPy and CuPy (no loops,
no scatter-add). Max pooling loops over the offsets (i, j) < (the longest window): offset i
of output row ho reads row min(start + i, end − 1), so a shorter window re-reads its last
row, which never changes the max or the first-max routing. Its gradient is scattered back
with one-hot row and column matrices (R_i.T @ g @ C_j), the same GEMM trick.
AdaptiveAvgPool2d(1) is the global average pooling of ResNet heads.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ._layer import Layer


def adaptive_windows(size, n_out):
    """(start, end) arrays of the n_out windows over `size` positions (PyTorch's formula)."""
    o = np.arange(n_out)
    return (o * size) // n_out, -((-(o + 1) * size) // n_out)


def _output_size(owner, value):
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                              and v >= 1) for v in pair)
    if not ok:
        raise GpunetValueError(f"{owner}: output_size expected an int >= 1 or a pair of them "
                               f"(None keeps that input size), got {value!r}")
    return tuple(None if v is None else int(v) for v in pair)


class _AdaptivePool2d(Layer):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = _output_size(type(self).__name__, output_size)
        self._cache = None

    def _geometry(self, x):
        self._check_array(x)
        if x.ndim != 4:
            raise self._shape_error("(N, C, H, W)", x)
        self._check_float(x)
        return tuple(n if o is None else o for o, n in zip(self.output_size, x.shape[2:]))

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Mean over adaptive windows: (N, C, H, W) -> (N, C, *output_size)."""

    def _matrices(self, xp, H, W, Ho, Wo, dtype):
        mats = []
        for n, n_out in ((H, Ho), (W, Wo)):
            start, end = adaptive_windows(n, n_out)
            i = np.arange(n)
            a = ((i >= start[:, None]) & (i < end[:, None])) / (end - start)[:, None]
            mats.append(xp.asarray(a, dtype=dtype))
        return mats                                            # A_h (Ho, H), A_w (Wo, W)

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        xp = backend.xp_of(x)
        H, W = x.shape[2:]
        if (Ho, Wo) == (1, 1):                                 # global average pooling
            y = x.reshape(*x.shape[:2], -1).mean(axis=2).reshape(*x.shape[:2], 1, 1)
        else:
            ah, aw = self._matrices(xp, H, W, Ho, Wo, x.dtype)
            y = xp.matmul(xp.matmul(ah, x), aw.T)
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        x_shape, y_shape = self._saved_shapes(dy)
        xp = backend.xp_of(dy)
        (H, W), (Ho, Wo) = x_shape[2:], y_shape[2:]
        if (Ho, Wo) == (1, 1):
            return xp.broadcast_to(dy * (1.0 / (H * W)), x_shape).copy()
        ah, aw = self._matrices(xp, H, W, Ho, Wo, dy.dtype)
        return xp.matmul(xp.matmul(ah.T, dy), aw)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Max over adaptive windows: (N, C, H, W) -> (N, C, *output_size). Keeps x and y."""

    @staticmethod
    def _offsets(n, n_out):
        """Per offset i < the longest window: the row each output reads, clamped to its window."""
        start, end = adaptive_windows(n, n_out)
        return [np.minimum(start + i, end - 1) for i in range(int((end - start).max()))]

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        xp = backend.xp_of(x)
        H, W = x.shape[2:]
        y = None
        for rows in self._offsets(H, Ho):
            xr = xp.take(x, xp.asarray(rows), axis=2)
            for cols in self._offsets(W, Wo):
                s = xp.take(xr, xp.asarray(cols), axis=3)
                y = s if y is None else xp.maximum(y, s, out=y)
        self._cache = (x, y)
        return y

    def backward(self, dy, need_input_grad=True):
        x, y = self._saved()
        self._check_dy(dy, y.shape)
        xp = backend.xp_of(dy)
        (H, W), (Ho, Wo) = x.shape[2:], y.shape[2:]
        dx = xp.zeros(x.shape, dtype=dy.dtype)
        taken = xp.zeros(y.shape, dtype=bool)
        col_offsets = self._offsets(W, Wo)
        for rows in self._offsets(H, Ho):
            xr = xp.take(x, xp.asarray(rows), axis=2)
            r = xp.asarray(np.equal.outer(rows, np.arange(H)).T, dtype=dy.dtype)       # (H, Ho)
            for cols in col_offsets:
                hit = xp.take(xr, xp.asarray(cols), axis=3) == y
                hit &= ~taken                                  # ties and re-read rows: the first only
                taken |= hit
                c = xp.asarray(np.equal.outer(cols, np.arange(W)), dtype=dy.dtype)   # (Wo, W)
                dx += xp.matmul(xp.matmul(r, dy * hit), c)
        return dx
