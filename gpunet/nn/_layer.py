"""Shared plumbing of the layers: argument checks, input checks, regularizer hooks.

Layer errors follow one pattern, so a user can read where it failed and why:
    ShapeError:      "Linear(784→256) expected input (N, 784), got (32, 28, 28)"
    GpunetTypeError: "Linear(784→256) expected a float32 input (the weights' dtype), got float64 ..."
    NonFiniteError:  only with gn.set_checks(True): the first NaN/Inf and its index.
Constructor errors name the argument and the value received (GpunetValueError), through
the validators of gpunet.argcheck.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import regularizers as _reg
from ..argcheck import boolean, int_pair, positive_int, real  # noqa: F401  (re-exported: layers import them from here)
from ..checks import checks_enabled
from ..errors import (DeviceError, GpunetTypeError, GpunetValueError, NonFiniteError,
                      ShapeError)
from .module import Module


# ---------------------------------------------------------------- the layer base

class Layer(Module):
    """A Module with the house input checks and a backward-before-forward guard."""

    def _check_array(self, x, arg="input"):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise GpunetTypeError(f"{self!r} expected {arg} to be an array (numpy or cupy), "
                                  f"got {type(x).__name__}")
        if self._params and backend.xp_of(x) is not self.device.xp:
            where = backend.device_of(x).name
            raise DeviceError(f"{self!r} has its parameters on {self.device.name}, got an {arg} on "
                              f"{where}; call model.to(device) or move the {arg} with dev.asarray(x)")

    def _check_float(self, x, dtype=None):
        """x is a float array of `dtype` (the layer's weights' dtype) if given, else float32/64."""
        self._check_array(x)
        if x.dtype.kind in "biu":
            want = dtype or "float32"
            raise GpunetTypeError(f"{self!r} expected a floating input ({want}), got {x.dtype}: "
                                  f"convert integer images first, e.g. x.astype('{want}') / 255")
        if x.dtype not in backend.FLOAT_DTYPES:  # float16, complex, ...: only a cast helps
            want = dtype or "float32"
            raise GpunetTypeError(f"{self!r} expected a float32 or float64 input, got {x.dtype}; "
                                  f"cast it with x.astype('{want}')")
        if dtype is not None and x.dtype != dtype:
            raise GpunetTypeError(f"{self!r} expected a {dtype} input (the weights' dtype), got {x.dtype}; "
                                  f"cast the input or call model.to(dtype='{x.dtype}')")
        self._check_finite(x)

    def _check_finite(self, x, what="input"):
        if not checks_enabled():
            return
        xp = backend.xp_of(x)
        bad = ~xp.isfinite(x)
        if bool(bad.any()):  # sync: checks are opt-in
            first = tuple(int(i) for i in np.unravel_index(int(xp.flatnonzero(bad)[0]), x.shape))
            raise NonFiniteError(f"{self!r} got a non-finite {what}: {int(bad.sum())} NaN/Inf of "
                                 f"{x.size}, the first at index {first} "
                                 f"(value {backend.to_numpy(x[first])})")

    def _shape_error(self, expected: str, x, what="input"):
        return ShapeError(f"{self!r} expected {what} {expected}, got {tuple(x.shape)}")

    def _saved(self, name="_cache"):
        """The forward state that backward needs; an error if forward has not run."""
        value = self.__dict__.get(name)
        if value is None:
            raise GpunetValueError(f"{self!r}: backward called before forward; run forward(x) on "
                                   f"this batch first")
        return value

    def _saved_shapes(self, dy):
        """(x_shape, y_shape) that forward kept as `self._cache = (x.shape, y.shape)`, once dy
        has y_shape (the state of layers whose backward needs the shapes only)."""
        x_shape, y_shape = self._saved()
        self._check_dy(dy, y_shape)
        return x_shape, y_shape

    def _scratch(self, name, shape, dtype):
        """A work array kept by this layer between calls, for temporaries that never leave it
        (im2col columns, BatchNorm's x − mean, GEMM outputs before a transpose).

        Reusing them saves a fresh allocation per step; for arrays of tens of MB that is a
        fresh mmap and its page faults each time (~2× the cost of the pass that fills it).
        Reallocated when the shape, dtype or device changes (e.g. a short last batch).
        """
        bufs = self.__dict__.get("_scratch_bufs")
        if bufs is None:
            bufs = {}
            object.__setattr__(self, "_scratch_bufs", bufs)
        buf, where = bufs.get(name, (None, None))
        if buf is None or where != self.device.name or buf.shape != tuple(shape) or buf.dtype != dtype:
            with self.device:
                buf = self.device.xp.empty(shape, dtype=dtype)
            bufs[name] = (buf, self.device.name)
        return buf

    def _check_dy(self, dy, shape):
        self._check_array(dy, "dy")
        if tuple(dy.shape) != tuple(shape):
            raise ShapeError(f"{self!r} backward expected dy of the output's shape {tuple(shape)}, "
                             f"got {tuple(dy.shape)}")
        return dy


class RegularizedLayer(Layer):
    """A layer with `kernel_regularizer` (on `self.weight`) and `activity_regularizer` (output).

    Loss contribution: kernel.penalty(W) + activity.penalty(y_last). Backward first adds
    activity.grad(y) to dy, and `_add_kernel_grad` adds kernel.grad(W) into W.grad.
    """

    def _init_regularizers(self, kernel_regularizer, activity_regularizer):
        owner = type(self).__name__
        self.kernel_regularizer = _reg.check(kernel_regularizer, "kernel_regularizer", owner)
        self.activity_regularizer = _reg.check(activity_regularizer, "activity_regularizer", owner)
        self._out = None

    def _keep_output(self, y):
        """Keep y only when the activity penalty needs it."""
        if self.activity_regularizer is not None:
            self._out = y
        return y

    def _own_penalty(self):
        total = 0.0
        if self.kernel_regularizer is not None:
            total = total + self.kernel_regularizer.penalty(self.weight.data)
        if self.activity_regularizer is not None and self._out is not None:
            total = total + self.activity_regularizer.penalty(self._out)
        return total

    def _activity_dy(self, dy):
        if self.activity_regularizer is None:
            return dy
        return dy + self.activity_regularizer.grad(self._saved("_out"))  # a new array: dy is the caller's

    def _add_kernel_grad(self):
        if self.kernel_regularizer is not None:
            self.weight.grad += self.kernel_regularizer.grad(self.weight.data)

    def _regularizer_repr(self):
        parts = []
        if self.kernel_regularizer is not None:
            parts.append(f"kernel_regularizer={self.kernel_regularizer!r}")
        if self.activity_regularizer is not None:
            parts.append(f"activity_regularizer={self.activity_regularizer!r}")
        return "".join(", " + p for p in parts)
