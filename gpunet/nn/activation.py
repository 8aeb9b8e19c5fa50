"""Element-wise activations and Softmax. Each keeps the one array its backward needs.

    ReLU:      y = max(x, 0)                   dx = dy · (y > 0)         keeps y, or a 1-bit mask
    LeakyReLU: y = x if x > 0 else a·x         dx = dy · (1 if x > 0 else a)   keeps x
    Sigmoid:   y = 1 / (1 + e^−x)              dx = dy · y · (1 − y)     keeps y
    Tanh:      y = tanh(x)                     dx = dy · (1 − y²)        keeps y
    Softmax:   y = e^(x − max) / Σ e^(x − max) dx = y · (dy − Σ dy·y)    keeps y (along `axis`)
    LogSoftmax: y = x − max − log Σ e^(x − max) dx = dy − e^y · Σ dy       keeps y (along `axis`)

ReLU's backward runs through `gpunet.ops.relu` (a CUDA kernel on GPU, its NumPy twin on
CPU), or on the CPU with gpunet[cpu] through the one-pass compiled loop of nn/_jit.py. Any input shape works; the input must be float32 or float64.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ..ops import relu as relu_ops
from . import _jit
from ._chunks import over_batch
from ._layer import Layer, boolean, real


class ReLU(Layer):
    """max(x, 0). mask=True keeps a packed 1-bit mask instead of y (32× less memory than float32)."""

    def __init__(self, mask=False):
        super().__init__()
        self.mask = boolean("ReLU", "mask", mask)
        self._cache = None

    def forward(self, x):
        self._check_float(x)
        xp = backend.xp_of(x)
        if x.ndim == 0:
            y = xp.maximum(x, 0)
        else:  # over batch chunks on the CPU threads (one call on the GPU)
            y = xp.empty(x.shape, dtype=x.dtype)
            over_batch(x, lambda lo, hi: xp.maximum(x[lo:hi], 0, out=y[lo:hi]))
        self._cache = (relu_ops.relu_pack_mask(y) if self.mask else y, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        kept, shape = self._saved()
        self._check_dy(dy, shape)
        if self.mask:
            return relu_ops.relu_backward_mask(dy, kept)
        jk = None if backend.is_cupy_array(dy) or dy.ndim == 0 else _jit.kernels()
        if jk is not None and dy.dtype == kept.dtype:  # compiled (gpunet[cpu]): one pass
            dy, kept = np.ascontiguousarray(dy), np.ascontiguousarray(kept)
            dx = np.empty(dy.shape, dtype=dy.dtype)
            d2, y2, x2 = (a.reshape(a.shape[0], -1) for a in (dy, kept, dx))
            over_batch(dy, lambda lo, hi: jk.relu_backward(d2, y2, x2, lo, hi))
            return dx
        return relu_ops.relu_backward(dy, kept)

    def forward_deferred(self, x):
        """Checks x and keeps it for backward (dx = dy·(x > 0), the same select as y > 0)
        without computing y: the layer after applies max(·, 0) itself (MaxPool2d.forward_fused).
        Returns x."""
        self._check_float(x)
        self._cache = (x, x.shape)
        return x

    def keeps_relu_output(self, y) -> bool:
        """True when y is the array this ReLU keeps for backward: its output, or its input
        after forward_deferred (not with mask=True: it keeps bits)."""
        cache = self.__dict__.get("_cache")
        return not self.mask and cache is not None and cache[0] is y

    def extra_repr(self):
        return "mask=True" if self.mask else ""


class LeakyReLU(Layer):
    """x for x > 0, negative_slope · x otherwise (Maas et al. 2013)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = real("LeakyReLU", "negative_slope", negative_slope)
        self._cache = None

    def forward(self, x):
        self._check_float(x)
        xp = backend.xp_of(x)
        y = x * self.negative_slope
        # max(x, a·x) is the piecewise form for any a <= 1 (negative a included); min for a > 1.
        if self.negative_slope <= 1:
            xp.maximum(x, y, out=y)
        else:
            xp.minimum(x, y, out=y)
        self._cache = x
        return y

    def backward(self, dy, need_input_grad=True):
        x = self._saved()
        self._check_dy(dy, x.shape)
        return relu_ops.leaky_relu_backward(dy, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


def sigmoid(x):
    """σ(x) = (1 if x ≥ 0 else e) / (1 + e), e = exp(−|x|): never overflows, and keeps full
    relative accuracy in the left tail (σ(x) = e/(1 + e) there, down to the smallest
    subnormal), the form BCEWithLogits uses. (1 + tanh(x/2))/2 would round to 0 from x ≈ −17
    in float32 (relative error 2.6e-2 at −15)."""
    xp = backend.xp_of(x)
    e = xp.abs(x)
    xp.negative(e, out=e)
    xp.exp(e, out=e)
    y = xp.where(x >= 0, 1.0, e).astype(x.dtype, copy=False)
    e += 1.0
    y /= e
    return y


class Sigmoid(Layer):
    """1 / (1 + e^−x), in the stable form of `sigmoid`: no overflow, exact left tail."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        self._check_float(x)
        y = sigmoid(x)
        self._cache = y
        return y

    def backward(self, dy, need_input_grad=True):
        y = self._saved()
        self._check_dy(dy, y.shape)
        dx = 1.0 - y
        dx *= y
        dx *= dy
        return dx


class Tanh(Layer):
    """tanh(x)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        self._check_float(x)
        y = backend.xp_of(x).tanh(x)
        self._cache = y
        return y

    def backward(self, dy, need_input_grad=True):
        y = self._saved()
        self._check_dy(dy, y.shape)
        dx = y * y
        backend.xp_of(y).subtract(1.0, dx, out=dx)
        dx *= dy
        return dx


class _AlongAxis(Layer):
    """Softmax and LogSoftmax: an int `axis`, checked against each input's dimensions."""

    def __init__(self, axis=-1):
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise GpunetValueError(f"{type(self).__name__}: axis expected an int, got {axis!r}")
        self.axis = axis
        self._cache = None

    def _check_input(self, x):
        self._check_array(x)
        if not -x.ndim <= self.axis < x.ndim:
            raise self._shape_error(f"at least {self.axis + 1 if self.axis >= 0 else -self.axis} "
                                    f"dimensions (axis={self.axis})", x)
        self._check_float(x)

    def extra_repr(self):
        return "" if self.axis == -1 else f"axis={self.axis}"


class Softmax(_AlongAxis):
    """Normalised exponentials along `axis` (max-subtracted, so no overflow).

    For classification training prefer raw logits into gn.losses.SoftmaxCrossEntropy,
    which fuses softmax with the loss and is more accurate.
    """

    def forward(self, x):
        self._check_input(x)
        xp = backend.xp_of(x)
        y = x - x.max(axis=self.axis, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        self._cache = y
        return y

    def backward(self, dy, need_input_grad=True):
        y = self._saved()
        self._check_dy(dy, y.shape)
        dx = dy * y
        s = dx.sum(axis=self.axis, keepdims=True)
        dx -= y * s
        return dx


class LogSoftmax(_AlongAxis):
    """log(softmax(x)) along `axis` (PyTorch's `dim` is accepted as an alias), computed as
    x − max − log Σ e^(x − max): finite for any finite x, unlike log(Softmax(x)).

    Feed it to gn.losses' NLL loss; raw logits into SoftmaxCrossEntropy are the fused equivalent.
    """

    def __init__(self, axis=-1, *, dim=None):
        if dim is not None:
            if axis != -1:
                raise GpunetValueError(f"LogSoftmax: give axis or dim, not both (got axis={axis!r}, dim={dim!r})")
            axis = dim
        super().__init__(axis)

    def forward(self, x):
        self._check_input(x)
        xp = backend.xp_of(x)
        y = x - x.max(axis=self.axis, keepdims=True)
        y -= xp.log(xp.exp(y).sum(axis=self.axis, keepdims=True))
        self._cache = y
        return y

    def backward(self, dy, need_input_grad=True):
        y = self._saved()
        self._check_dy(dy, y.shape)
        xp = backend.xp_of(dy)
        dx = xp.exp(y)
        dx *= dy.sum(axis=self.axis, keepdims=True)
        xp.subtract(dy, dx, out=dx)
        return dx
