"""Per-sample normalisation: LayerNorm (Ba et al. 2016) and GroupNorm (Wu & He 2018).

Both normalise each row r of M values (LayerNorm: the trailing normalized_shape of one
sample; GroupNorm: one group of C/G channels of one sample, all positions), with the
statistics of that row alone, so training and eval agree and batch size 1 works:
    mean = Σx/M,  var = Σ(x − mean)²/M (biased),  rstd = 1/sqrt(var + eps)
    x_hat = (x − mean)·rstd,   y = weight·x_hat + bias   (LayerNorm: per element of
                                                          normalized_shape; GroupNorm: per channel)
backward, with g = dy·weight and means over the row:
    dx = rstd·(g − mean(g) − x_hat·mean(g·x_hat)),   dweight = Σ dy·x_hat,   dbias = Σ dy
Kept for backward: x_hat and rstd (per row).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ._layer import Layer, boolean, positive_int, real
from .module import Parameter


def _normalize_rows(xp, x2, eps):
    """x2 (R, M) -> (x_hat, rstd (R, 1)), two passes (stable when |mean| >> std)."""
    xc = x2 - x2.mean(axis=1, keepdims=True)
    var = xp.einsum("rm,rm->r", xc, xc)[:, None] / x2.shape[1]
    rstd = 1.0 / xp.sqrt(var + eps)
    xc *= rstd
    return xc, rstd


def _rows_backward(g, x_hat, rstd):
    """dx (R, M) of the row normalisation for g = dL/dx_hat (R, M)."""
    xp = backend.xp_of(g)
    M = g.shape[1]
    mean_g = g.mean(axis=1, keepdims=True)
    mean_gx = xp.einsum("rm,rm->r", g, x_hat)[:, None] / M
    dx = x_hat * mean_gx
    dx += mean_g
    xp.subtract(g, dx, out=dx)
    dx *= rstd
    return dx


class LayerNorm(Layer):
    """Normalises over the trailing dims `normalized_shape` (an int or a tuple): (*, *normalized_shape).

    weight (ones) and bias (zeros) have shape normalized_shape; elementwise_affine=False has
    neither, bias=False has no bias (PyTorch's arguments).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        if not isinstance(shape, (tuple, list)) or not shape:
            raise GpunetValueError(f"LayerNorm: normalized_shape expected an int or a non-empty tuple of "
                                   f"ints, got {normalized_shape!r}")
        self.normalized_shape = tuple(positive_int("LayerNorm", "normalized_shape", s) for s in shape)
        self.eps = real("LayerNorm", "eps", eps, 0.0, low_open=True)
        self.elementwise_affine = boolean("LayerNorm", "elementwise_affine", elementwise_affine)
        has_bias = boolean("LayerNorm", "bias", bias)
        dt = backend.DEFAULT_DTYPE
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dt)) if self.elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dt)) \
            if self.elementwise_affine and has_bias else None
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        D = len(self.normalized_shape)
        if x.ndim < D or tuple(x.shape[x.ndim - D:]) != self.normalized_shape:
            raise self._shape_error(f"(*, {', '.join(map(str, self.normalized_shape))})", x)
        self._check_float(x, self.weight.dtype if self.weight is not None else None)
        xp = backend.xp_of(x)
        x_hat, rstd = _normalize_rows(xp, x.reshape(-1, math.prod(self.normalized_shape)), self.eps)
        x_hat = x_hat.reshape(x.shape)
        y = x_hat * self.weight.data if self.weight is not None else x_hat.copy()
        if self.bias is not None:
            y += self.bias.data
        self._cache = (x_hat, rstd)
        return y

    def backward(self, dy, need_input_grad=True):
        x_hat, rstd = self._saved()
        self._check_dy(dy, x_hat.shape)
        M = math.prod(self.normalized_shape)
        if self.weight is not None:
            self.weight.grad += (dy * x_hat).reshape(-1, M).sum(axis=0).reshape(self.normalized_shape)
            g = dy * self.weight.data
        else:
            g = dy
        if self.bias is not None:
            self.bias.grad += dy.reshape(-1, M).sum(axis=0).reshape(self.normalized_shape)
        if not need_input_grad:
            return None
        return _rows_backward(g.reshape(-1, M), x_hat.reshape(-1, M), rstd).reshape(dy.shape)

    def extra_repr(self):
        s = f"{self.normalized_shape}, eps={self.eps}"
        if not self.elementwise_affine:
            s += ", elementwise_affine=False"
        elif self.bias is None:
            s += ", bias=False"
        return s


class GroupNorm(Layer):
    """Normalises each of num_groups channel groups per sample: (N, C, *) with C = num_channels.

    weight (ones) and bias (zeros) are per channel (affine=True). num_groups = 1 is a
    LayerNorm over (C, *) with per-channel affine; num_groups = C is InstanceNorm.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise GpunetValueError(f"GroupNorm: num_groups expected to divide num_channels "
                                   f"({self.num_channels}), got {num_groups!r}")
        self.eps = real("GroupNorm", "eps", eps, 0.0, low_open=True)
        self.affine = boolean("GroupNorm", "affine", affine)
        C, dt = self.num_channels, backend.DEFAULT_DTYPE
        self.weight = Parameter(np.ones(C, dtype=dt)) if self.affine else None
        self.bias = Parameter(np.zeros(C, dtype=dt)) if self.affine else None
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise self._shape_error(f"(N, {self.num_channels}, *)", x)
        self._check_float(x, self.weight.dtype if self.affine else None)
        xp = backend.xp_of(x)
        x_hat, rstd = _normalize_rows(xp, x.reshape(x.shape[0] * self.num_groups, -1), self.eps)
        x_hat = x_hat.reshape(x.shape)
        if self.affine:
            cshape = (1, self.num_channels) + (1,) * (x.ndim - 2)
            y = x_hat * self.weight.data.reshape(cshape)
            y += self.bias.data.reshape(cshape)
        else:
            y = x_hat.copy()
        self._cache = (x_hat, rstd)
        return y

    def backward(self, dy, need_input_grad=True):
        x_hat, rstd = self._saved()
        self._check_dy(dy, x_hat.shape)
        xp = backend.xp_of(dy)
        N, C = dy.shape[:2]
        g = dy
        if self.affine:
            dy3, x3 = dy.reshape(N, C, -1), x_hat.reshape(N, C, -1)
            self.weight.grad += xp.einsum("ncl,ncl->c", dy3, x3)
            self.bias.grad += dy3.sum(axis=2).sum(axis=0)
            g = dy * self.weight.data.reshape((1, C) + (1,) * (dy.ndim - 2))
        if not need_input_grad:
            return None
        R = N * self.num_groups
        return _rows_backward(g.reshape(R, -1), x_hat.reshape(R, -1), rstd).reshape(dy.shape)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}" + ("" if self.affine else ", affine=False")
