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
Kept for backward: xk, mk with xk − mk = x − mean, and rstd (per channel); x_hat is never
stored, which saves a pass each way (y = xk·scale + (bias − mk·scale), scale = weight·rstd).
On the CPU xk is x itself (nothing copied; one pass of statistics, see _batch_moments, and
the element-wise passes over batch chunks on gpunet's CPU threads; with gpunet[cpu] the
compiled loops of _jit.py do forward and backward in two passes each). On the GPU, and
on the CPU when |mean| ≫ std, xk = x − mean (two-pass statistics) in a buffer the layer
reuses from step to step (see Layer._scratch) and mk = 0.
momentum=None gives the cumulative average over num_batches_tracked batches.
track_running_stats=False keeps no running statistics (no buffers, as in PyTorch): batch
statistics in training and in eval mode alike.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import DeviceError, ShapeError
from . import _jit
from ._chunks import over_batch
from ._layer import Layer, boolean, positive_int, real
from .module import Parameter

# One-pass variance (E[x²] − mean²) is used while E[x²] <= ratio·var for every channel (by
# itemsize: float32, float64): it then loses at most log10(ratio) of the dtype's digits.
_ONE_PASS_RATIO = {4: 16.0, 8: 1e4}


class _BatchNorm(Layer):
    _ndims: tuple = ()
    _layout: str = ""

    def __init__(self, num_features, momentum=0.1, eps=1e-5, affine=True, track_running_stats=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(name, "num_features", num_features)
        self.momentum = None if momentum is None else real(name, "momentum", momentum, 0.0, 1.0)
        self.eps = real(name, "eps", eps, 0.0, low_open=True)
        self.affine = boolean(name, "affine", affine)
        self.track_running_stats = boolean(name, "track_running_stats", track_running_stats)
        C = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(C, dtype=backend.DEFAULT_DTYPE))
            self.bias = Parameter(np.zeros(C, dtype=backend.DEFAULT_DTYPE))
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dtype=backend.DEFAULT_DTYPE))
            self.register_buffer("running_var", np.ones(C, dtype=backend.DEFAULT_DTYPE))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._cache = None

    def _check_input(self, x):
        self._check_array(x)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise self._shape_error(self._layout.format(C=self.num_features), x)
        ref = self.weight.data if self.affine else self.running_mean  # affine=False has no params
        if ref is not None and backend.xp_of(x) is not backend.xp_of(ref):
            raise DeviceError(f"{self!r} has its buffers on {self.device.name}, got an input on "
                              f"{backend.device_of(x).name}; call model.to(device)")
        self._check_float(x, None if ref is None else ref.dtype)

    def forward(self, x):
        self._check_input(x)
        xp = backend.xp_of(x)
        jk = None if backend.is_cupy_array(x) else _jit.kernels()
        if jk is not None:
            x = np.ascontiguousarray(x)
        bshape = (1, self.num_features) + (1,) * (x.ndim - 2)  # broadcasts over the batch axes
        n = x.size // self.num_features
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            if n < 2:
                raise ShapeError(f"{self!r} expected more than 1 value per channel in training mode, "
                                 f"got input {tuple(x.shape)}")
            mean, var, xk, mk = self._batch_moments(xp, x, n, bshape, jk)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, n)
        else:
            var, xk, mk = self.running_var, x, self.running_mean.copy()
        rstd = 1.0 / xp.sqrt(var + self.eps)
        # y = x_hat·w + b = xk·scale + (b − mk·scale): x_hat itself is never formed.
        scale = rstd * self.weight.data if self.affine else rstd
        shift = -mk * scale
        if self.affine:
            shift += self.bias.data
        scale_b = scale.reshape(bshape).astype(x.dtype, copy=False)
        shift_b = shift.reshape(bshape).astype(x.dtype, copy=False)
        y = xp.empty(x.shape, dtype=x.dtype)
        if jk is not None:  # compiled: one pass
            x3, y3, sc, sh = _rows(xk), _rows(y), scale_b.reshape(-1), shift_b.reshape(-1)
            over_batch(x, lambda lo, hi: jk.bn_affine(x3, sc, sh, y3, lo, hi))
            self._cache = (xk, mk, rstd.astype(x.dtype, copy=False), batch_stats)
            return y

        def normalise(lo, hi):
            out = xp.multiply(xk[lo:hi], scale_b, out=y[lo:hi])
            out += shift_b

        over_batch(x, normalise)
        self._cache = (xk, mk, rstd.astype(x.dtype, copy=False), batch_stats)
        return y

    def _batch_moments(self, xp, x, n, bshape, jk=None):
        """(mean, var, xk, mk): the batch statistics and what backward keeps, xk − mk = x − mean.

        Compiled (gpunet[cpu]): one pass of shifted sums in float64, stable for any mean.
        CPU: one pass of per-row sums Σx and Σx² (combined in float64), keeping x itself
        (xk = x, mk = mean). var = E[x²] − mean² loses about log10(E[x²]/var) digits, so
        when a channel's |mean| is large against its spread (E[x²] > _ONE_PASS_RATIO·var)
        the two-pass form below runs instead. GPU, and that fallback: mean first, then
        xc = x − mean in a reused buffer and var = Σxc²/n (xk = xc, mk = 0).
        """
        if jk is not None:  # compiled: Σ(x − K), Σ(x − K)² in float64, K = each channel's first value
            x3 = _rows(x)
            K = x3[0, :, 0].astype(np.float64)

            def part(lo, hi):
                s = np.empty((2, x3.shape[1]))
                jk.bn_sums(x3, K, s[0], s[1], lo, hi)
                return s

            s = sum(over_batch(x, part)) / n
            mean, var = K + s[0], np.maximum(s[1] - s[0] * s[0], 0.0)
            return mean.astype(x.dtype), var.astype(x.dtype), x, mean.astype(x.dtype)
        if not backend.is_cupy_array(x):
            s1, s2 = _channel_sums(xp, x, x, squares=True)
            mean = s1 / n
            ex2 = s2 / n
            var = xp.maximum(ex2 - mean * mean, 0.0)
            if bool((ex2 <= _ONE_PASS_RATIO[x.dtype.itemsize] * var).all()):
                dtype = x.dtype
                return mean.astype(dtype), var.astype(dtype), x, mean.astype(dtype)
        mean = _channel_sum(x) / n
        xc = xp.subtract(x, mean.reshape(bshape), out=self._scratch("xc", x.shape, x.dtype))
        var = _channel_dot(xp, xc, xc) / n      # two passes: stable when |mean| >> std
        return mean, var, xc, xp.zeros_like(mean)

    def _update_running(self, mean, var, n):
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # sync
        # In place, so the buffers keep their identity (and their device).
        self.running_mean *= 1.0 - m
        self.running_mean += m * mean
        self.running_var *= 1.0 - m
        self.running_var += (m * n / (n - 1)) * var

    def backward(self, dy, need_input_grad=True):
        xk, mk, rstd, trained = self._saved()
        self._check_dy(dy, xk.shape)
        xp = backend.xp_of(dy)
        bshape = (1, self.num_features) + (1,) * (dy.ndim - 2)
        jk = None if backend.is_cupy_array(dy) else _jit.kernels()
        if jk is not None:  # compiled: Σ dy and Σ dy·(xk − mk) in one pass, float64
            dy = np.ascontiguousarray(dy)
            d3, x3, m64 = _rows(dy), _rows(xk), mk.astype(np.float64)

            def part(lo, hi):
                s = np.empty((2, x3.shape[1]))
                jk.bn_grad_sums(d3, x3, m64, s[0], s[1], lo, hi)
                return s

            db, dw = sum(over_batch(dy, part))
            dw = dw * rstd
        else:
            db, sxy = _channel_sums(xp, dy, xk)
            dw = (sxy - mk * db) * rstd               # Σ dy·x_hat, x_hat = (xk − mk)·rstd
        db, dw = db.astype(dy.dtype, copy=False), dw.astype(dy.dtype, copy=False)
        if self.affine:
            self.weight.grad += dw
            self.bias.grad += db
            scale = rstd * self.weight.data
        else:
            scale = rstd
        scale_b = scale.reshape(bshape)
        dx = xp.empty(dy.shape, dtype=dy.dtype)
        n = dy.size // self.num_features
        if jk is not None:  # compiled: dx = scale·dy − scale·k·(xk − mk) − scale·db/n in one pass
            k = rstd * dw / n if trained else xp.zeros_like(scale)
            c = -scale * db / n if trained else xp.zeros_like(scale)
            a, b = scale.astype(dy.dtype), (-scale * k).astype(dy.dtype)
            m, c = mk.astype(dy.dtype), c.astype(dy.dtype)
            x3, d3, dx3 = _rows(xk), _rows(dy), _rows(dx)
            over_batch(dy, lambda lo, hi: jk.bn_grad_input(d3, x3, a, b, m, c, dx3, lo, hi))
            return dx
        if not trained:
            over_batch(dy, lambda lo, hi: xp.multiply(dy[lo:hi], scale_b, out=dx[lo:hi]))
            return dx
        # dx = scale·(dy − db/n − x_hat·dw/n) = scale·(dy − (xk·k + (db/n − mk·k))), k = rstd·dw/n:
        # four passes, over batch chunks on the CPU threads.
        k = rstd * dw / n
        k_b, c_b = k.reshape(bshape), (db / n - mk * k).reshape(bshape)

        def chunk(lo, hi):
            t = xp.multiply(xk[lo:hi], k_b, out=dx[lo:hi])
            t += c_b
            xp.subtract(dy[lo:hi], t, out=t)
            t *= scale_b

        over_batch(dy, chunk)
        return dx

    def extra_repr(self):
        s = f"{self.num_features}"
        if self.momentum != 0.1:
            s += f", momentum={self.momentum}"
        if self.eps != 1e-5:
            s += f", eps={self.eps}"
        if not self.affine:
            s += ", affine=False"
        if not self.track_running_stats:
            s += ", track_running_stats=False"
        return s


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) inputs; statistics per feature C."""
    _ndims = (2, 3)
    _layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) inputs; statistics per channel C."""
    _ndims = (4,)
    _layout = "(N, {C}, H, W)"


def _rows(a):
    """(N, C, L) view of an (N, C) or (N, C, ...) array (a copy only if it is not contiguous)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _channel_sum(a):
    """Σ over every axis but 1: the rows first (pairwise sums), then the batch."""
    return _rows(a).sum(axis=2).sum(axis=0)


def _channel_sums(xp, a, b, squares=False):
    """(Σ a, Σ a·b) per channel (b = a when squares), float64: per-row sums in a's dtype over
    batch chunks (CPU threads), then the rows in float64. One pass over a and b."""
    a3, b3 = _rows(a), _rows(b)

    cpu = not backend.is_cupy_array(a)
    ones = xp.ones(a3.shape[2], dtype=a.dtype) if cpu else None
    dot = getattr(xp, "vecdot", None) if cpu else None

    def part(lo, hi):
        ra, rb = a3[lo:hi], a3[lo:hi] if squares else b3[lo:hi]
        if dot is None:
            return ra.sum(axis=2), xp.einsum("ncl,ncl->nc", ra, rb)
        return xp.matmul(ra, ones), dot(ra, rb)   # BLAS matrix-vector and dot loops: ~1.6x faster

    parts = over_batch(a, part)
    s1 = sum(p[0].sum(axis=0, dtype=xp.float64) for p in parts)
    s2 = sum(p[1].sum(axis=0, dtype=xp.float64) for p in parts)
    return s1, s2


def _channel_dot(xp, a, b):
    """Σ a·b over every axis but 1, without the a·b temporary."""
    return xp.einsum("ncl,ncl->c", _rows(a), _rows(b))
