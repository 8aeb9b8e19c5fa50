"""Input checks and the reduce/backward plumbing shared by element-wise losses.

An element-wise loss computes ℓ(pred_i, target_i) for every element i and reduces
like PyTorch: "mean" divides the sum by the number of *elements* (not rows), "sum"
adds them, "none" returns the element-wise array with pred's shape. Backward
multiplies the element-wise derivative by the upstream gradient and, for "mean",
by 1/numel:

    d(grad · loss)/d pred_i = grad · ∂ℓ_i/∂pred_i · (1/numel if mean)

The helpers here are also used by GeneralizedDice for validation.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..checks import checks_enabled
from ..errors import GpunetTypeError, GpunetValueError, NonFiniteError, ShapeError
from .base import Loss

FLOAT_KINDS = "f"
NUMERIC_KINDS = "biuf"


def dtype_of(a):
    dt = getattr(a, "dtype", None)
    return np.dtype(dt) if dt is not None else np.asarray(a).dtype


def check_pred(loss, pred):
    """pred must be a non-empty float array; returns its array module."""
    if not (hasattr(pred, "shape") and hasattr(pred, "dtype")):
        raise GpunetTypeError(f"{loss}: pred expected a NumPy/CuPy float array, got {type(pred).__name__}")
    if np.dtype(pred.dtype).kind not in FLOAT_KINDS:
        raise GpunetTypeError(f"{loss}: pred expected a floating dtype (float32/float64), got {pred.dtype}")
    if pred.size == 0:
        raise ShapeError(f"{loss}: pred expected at least one element, got shape {tuple(pred.shape)}")
    return backend.xp_of(pred)


def float_target(loss, xp, pred, target):
    """A target with pred's exact shape, cast to pred's dtype on pred's device."""
    kind = dtype_of(target).kind
    if kind not in NUMERIC_KINDS:
        raise GpunetTypeError(f"{loss}: target expected a numeric or bool array, got dtype {dtype_of(target)}")
    if tuple(np.shape(target)) != tuple(pred.shape):
        raise ShapeError(f"{loss}: target shape must equal pred shape, got pred {tuple(pred.shape)} "
                         f"and target {tuple(np.shape(target))}")
    return xp.asarray(target, dtype=pred.dtype)


def check_finite(loss, name, arr, xp):
    """With gn.checks() on, NaN/Inf in `arr` raise NonFiniteError (costs a sync)."""
    if not checks_enabled():
        return
    bad = int(arr.size - xp.count_nonzero(xp.isfinite(arr)))  # sync: checks only
    if bad:
        raise NonFiniteError(f"{loss}: {name} expected finite values, got {bad} NaN/Inf of {arr.size}")


def check_range(loss, name, arr, xp, lo, hi):
    """With gn.checks() on, values outside [lo, hi] raise GpunetValueError (costs a sync)."""
    if not checks_enabled():
        return
    amin, amax = float(arr.min()), float(arr.max())  # sync: checks only
    if amin < lo or amax > hi:
        raise GpunetValueError(f"{loss}: {name} expected values in [{lo}, {hi}], "
                               f"got min {amin:.6g} and max {amax:.6g}")


def broadcasts_to(shape, target) -> bool:
    """True when an array of `shape` broadcasts to exactly `target`."""
    try:
        return tuple(np.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except ValueError:
        return False


def reduce(xp, values, reduction, axis=None):
    """mean/sum to a 0-d device array (no sync), or `values` unchanged for "none"."""
    if reduction == "none":
        return values
    total = values.sum(axis=axis)
    return total / values.size if reduction == "mean" else total


def upstream_scale(loss, xp, grad, reduction, count, out_shape):
    """The factor each per-item derivative is multiplied by: grad·(1/count if mean).

    For "none" `grad` may be an array broadcastable to `out_shape` (the loss's shape).
    """
    if reduction == "none":
        if np.ndim(grad) == 0:
            return grad
        if not broadcasts_to(np.shape(grad), out_shape):
            raise ShapeError(f"{loss}.backward: grad expected a scalar or shape broadcastable to "
                             f"{tuple(out_shape)}, got {tuple(np.shape(grad))}")
        return xp.asarray(grad)
    if np.ndim(grad) != 0:
        raise ShapeError(f"{loss}.backward: grad expected a scalar for reduction={reduction!r}, "
                         f"got shape {tuple(np.shape(grad))}")
    if not isinstance(grad, (int, float, np.number)):
        grad = xp.asarray(grad)  # a 0-d device array: stays on the device, no sync
    return grad / count if reduction == "mean" else grad


def check_element_weight(loss, weight):
    """None, or a float64 host array of finite, non-negative weights (broadcast against pred)."""
    if weight is None:
        return None
    arr = backend.to_numpy(weight) if hasattr(weight, "shape") else np.asarray(weight)
    if arr.dtype.kind not in "iuf":
        raise GpunetTypeError(f"{loss}: weight expected a number or numeric array, got dtype {arr.dtype}")
    if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
        raise GpunetValueError(f"{loss}: weight expected finite values >= 0, got {arr.tolist()}")
    return arr.astype(np.float64)


class ElementwiseLoss(Loss):
    """Base of BCEWithLogits, BCE, MSE, L1, SmoothL1, Huber, KLDiv: subclasses give `_forward`
    and `_derivative`.

    `weight` (BCE and BCEWithLogits, as PyTorch's): an array broadcastable to pred's shape
    that multiplies each element's loss and derivative; "mean" still divides by numel.
    """

    def __init__(self, reduction: str = "mean", weight=None):
        super().__init__(reduction)
        self._cache = None
        self.weight = check_element_weight(type(self).__name__, weight)
        self._w_cache = {}  # (array module, device, dtype) -> weight on that device

    def _weight_on(self, pred):
        if not broadcasts_to(self.weight.shape, pred.shape):
            raise ShapeError(f"{self}: weight shape {self.weight.shape} does not broadcast to "
                             f"pred shape {tuple(pred.shape)}")
        key = (backend.xp_of(pred).__name__, str(getattr(pred, "device", "cpu")), pred.dtype.str)
        if key not in self._w_cache:
            self._w_cache[key] = backend.device_of(pred).asarray(self.weight, dtype=pred.dtype)
        return self._w_cache[key]

    def _forward(self, xp, pred, target):
        """Element-wise loss array; stores what `_derivative` needs in self._cache."""
        raise NotImplementedError

    def _derivative(self, xp):
        """∂ℓ_i/∂pred_i as a fresh array (it is scaled in place by backward)."""
        raise NotImplementedError

    def _check_inputs(self, xp, pred, target):
        """Extra value checks (only under gn.checks())."""
        check_finite(self, "pred", pred, xp)
        check_finite(self, "target", target, xp)

    def forward(self, pred, target):
        xp = check_pred(self, pred)
        target = float_target(self, xp, pred, target)
        self._check_inputs(xp, pred, target)
        values = self._forward(xp, pred, target)
        self._shape = tuple(pred.shape)
        self._w = None if self.weight is None else self._weight_on(pred)
        if self._w is not None:
            values = values * self._w
        if self.reduction == "batchmean":  # KLDivLoss: Σ ℓ / N
            return values.sum() / values.shape[0]
        return reduce(xp, values, self.reduction)

    def backward(self, grad=1.0):
        if self._cache is None:
            raise GpunetValueError(f"{self}.backward called before forward: call forward(pred, target) first")
        xp = backend.xp_of(*self._cache)
        count = int(np.prod(self._shape))
        reduction = self.reduction
        if reduction == "batchmean":  # KLDivLoss: a mean over the N rows only
            reduction, count = "mean", self._shape[0]
        scale = upstream_scale(self, xp, grad, reduction, count, self._shape)
        d = self._derivative(xp)
        if self._w is not None:
            d *= self._w
        d *= scale
        return d
