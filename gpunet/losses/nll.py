"""Negative log-likelihood of log-probabilities (PyTorch's NLLLoss), for a LogSoftmax head.

    loss_i = −w_{y_i} · logp_{i, y_i},     ∂loss_i/∂logp_ij = −w_{y_i} · [j = y_i]

"mean" divides by Σ_i w_{y_i} over rows not ignored (N without weights). NLLLoss(LogSoftmax(x))
equals SoftmaxCrossEntropy on x; the fused loss is faster and never forms log-probabilities.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError, ShapeError
from ..ops.softmax_cross_entropy_xp import check_labels_now
from .base import Loss
from .class_weights import WeightCache, check_class_weight, check_weight_shape, nll
from .elementwise import check_finite, check_pred


class NLLLoss(Loss):
    """NLLLoss(weight=None, ignore_index=None, reduction="mean"). logp (N, C), target (N,) ints.

    forward returns 0-d for "mean"/"sum" and (N,) for "none"; backward(grad) returns dlogp.
    Labels outside [0, C) (other than ignore_index) raise GpunetValueError (a sync on a GPU).
    When every row is ignored (or every weight met is 0) the mean is NaN and the gradient 0.
    """

    def __init__(self, weight=None, ignore_index=None, reduction: str = "mean"):
        super().__init__(reduction)
        name = type(self).__name__
        self.weight = check_class_weight(name, weight)
        self._weights = WeightCache(self.weight) if self.weight is not None else None
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, (int, np.integer))):
            raise GpunetTypeError(f"{name}: ignore_index expected an int or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self._grad = None

    def forward(self, logp, target):
        name = type(self).__name__
        xp = check_pred(self, logp)
        if logp.ndim != 2 or getattr(target, "ndim", 0) != 1 or target.shape[0] != logp.shape[0]:
            raise ShapeError(f"{name}: expected logp (N, C) and target (N,) class labels, got logp "
                             f"{tuple(logp.shape)} and target {tuple(getattr(target, 'shape', ()))}")
        if np.dtype(target.dtype).kind not in "iu":
            raise GpunetTypeError(f"{name}: expected integer class labels, got {target.dtype}")
        target = backend.device_of(logp).asarray(target).astype(np.int64, copy=False)
        N, C = logp.shape
        check_finite(self, "logp", logp, xp)
        check_labels_now(name, target, _Labels(C, self.ignore_index))
        w = None
        if self.weight is not None:
            check_weight_shape(name, self._weights.host, C)
            w = self._weights.on(logp)
        with backend.device_of(logp):
            loss, self._grad, self.n_valid = nll(logp, target, w, self.ignore_index, self.reduction)
        return loss

    def backward(self, grad=1.0):
        if self._grad is None:
            raise GpunetValueError(f"{type(self).__name__}.backward: expected a forward call first, got none")
        d = self._grad
        xp = backend.xp_of(d)
        g = grad if isinstance(grad, (int, float, np.number)) else xp.asarray(grad, dtype=d.dtype)
        if np.ndim(g) == 0:
            return d * g
        if self.reduction == "none" and tuple(np.shape(g)) == (d.shape[0],):
            return d * g[:, None]
        raise ShapeError(f"{type(self).__name__}.backward: expected grad as a scalar"
                         f"{f' or of shape ({d.shape[0]},)' if self.reduction == 'none' else ''}, "
                         f"got shape {tuple(np.shape(g))}")

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if self.ignore_index is not None:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.weight is not None:
            parts.append(f"weight={self.weight.tolist()}")
        return ", ".join(parts)


class _Labels:
    """The two fields check_labels_now reads."""

    def __init__(self, C, ignore_index):
        self.C, self.ignore_index = C, ignore_index
