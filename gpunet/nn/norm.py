"""Batch normalisation (Ioffe & Szegedy 2015), PyTorch semantics.

Per channel c, over the n = N (·L or ·H·W) values of the batch:
    train: mean = Σx/n,  var = Σ(x − mean)²/n,  rstd = 1/sqrt(var + eps)
           running_mean ← (1 − momentum)·running_mean + momentum·mean
           running_var  ← (1 − momentum)·running_var  + momentum·var·n/(n − 1)   (unbiased)
    eval:  mean, var = running_mean, running_var
    x_hat = (x − mean)·rstd,   y = weight·x_hat + bias

backward (train), with Σ over the batch axes of channel c:
    db = Σ dy,  dw = Σ dy·x_hat
    dx = weight·rstd · (dy − db/n − x_hat·dw/n)
backward (eval): dx = weight·rstd·dy (the statistics are constants).
Kept for backward: x_hat and rstd (per channel).
momentum=None gives the cumulative average over num_batches_tracked batches.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import DeviceError, ShapeError
from ._layer import Layer, boolean, positive_int, real
from .module import Parameter


class _BatchNorm(Layer):
    _ndims: tuple = ()
    _layout: str = ""

    def __init__(self, num_features, momentum=0.1, eps=1e-5, affine=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(name, "num_features", num_features)
        self.momentum = None if momentum is None else real(name, "momentum", momentum, 0.0, 1.0)
        self.eps = real(name, "eps", eps, 0.0, low_open=True)
        self.affine = boolean(name, "affine", affine)
        C = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(C, dtype=backend.DEFAULT_DTYPE))
            self.bias = Parameter(np.zeros(C, dtype=backend.DEFAULT_DTYPE))
        else:
            self.weight = self.bias = None
        self.register_buffer("running_mean", np.zeros(C, dtype=backend.DEFAULT_DTYPE))
        self.register_buffer("running_var", np.ones(C, dtype=backend.DEFAULT_DTYPE))
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        self._cache = None

    def _check_input(self, x):
        self._check_array(x)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise self._shape_error(self._layout.format(C=self.num_features), x)
        if backend.xp_of(x) is not backend.xp_of(self.running_mean):  # affine=False has no params
            raise DeviceError(f"{self!r} has its buffers on {self.device.name}, got an input on "
                              f"{backend.device_of(x).name}; call model.to(device)")
        self._check_float(x, self.running_mean.dtype)

    def forward(self, x):
        self._check_input(x)
        xp = backend.xp_of(x)
        axes = (0, *range(2, x.ndim))
        bshape = (1, self.num_features) + (1,) * (x.ndim - 2)  # broadcasts over the batch axes
        n = x.size // self.num_features
        if self.training:
            if n < 2:
                raise ShapeError(f"{self!r} expected more than 1 value per channel in training mode, "
                                 f"got input {tuple(x.shape)}")
            mean = x.mean(axis=axes, keepdims=True)
            x_hat = x - mean
            y = xp.square(x_hat)                       # y's buffer holds (x − mean)² first
            var = y.mean(axis=axes, keepdims=True)
            self._update_running(mean.reshape(-1), var.reshape(-1), n)
        else:
            mean = self.running_mean.reshape(bshape)
            var = self.running_var.reshape(bshape)
            x_hat = x - mean
            y = xp.empty_like(x)
        rstd = 1.0 / xp.sqrt(var + self.eps)
        x_hat *= rstd
        if self.affine:
            xp.multiply(x_hat, self.weight.data.reshape(bshape), out=y)
            y += self.bias.data.reshape(bshape)
        else:
            y[...] = x_hat
        self._cache = (x_hat, rstd, self.training)
        return y

    def _update_running(self, mean, var, n):
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # sync
        # In place, so the buffers keep their identity (and their device).
        self.running_mean *= 1.0 - m
        self.running_mean += m * mean
        self.running_var *= 1.0 - m
        self.running_var += (m * n / (n - 1)) * var

    def backward(self, dy):
        x_hat, rstd, trained = self._saved()
        self._check_dy(dy, x_hat.shape)
        axes = (0, *range(2, dy.ndim))
        db = dy.sum(axis=axes, keepdims=True)
        t = dy * x_hat
        dw = t.sum(axis=axes, keepdims=True)
        if self.affine:
            self.weight.grad += dw.reshape(-1)
            self.bias.grad += db.reshape(-1)
            scale = rstd * self.weight.data.reshape(rstd.shape)
        else:
            scale = rstd
        if not trained:
            t = dy * scale
            return t
        n = dy.size // self.num_features
        backend.xp_of(dy).multiply(x_hat, dw / n, out=t)  # reuse t's buffer: t = x_hat·dw/n
        backend.xp_of(dy).subtract(dy, t, out=t)
        t -= db / n
        t *= scale
        return t

    def extra_repr(self):
        s = f"{self.num_features}"
        if self.momentum != 0.1:
            s += f", momentum={self.momentum}"
        if self.eps != 1e-5:
            s += f", eps={self.eps}"
        if not self.affine:
            s += ", affine=False"
        return s


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) inputs; statistics per feature C."""
    _ndims = (2, 3)
    _layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) inputs; statistics per channel C."""
    _ndims = (4,)
    _layout = "(N, {C}, H, W)"
