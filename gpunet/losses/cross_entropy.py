"""Softmax cross-entropy on logits, fused with its gradient (one CUDA kernel on a GPU).

    loss_i = Σ_j t'_ij (lse_i − x_ij),      t' = (1 − eps) · t + eps / C,   lse_i = log Σ_j e^x_ij
    dlogits = S · softmax(x) − t'  (S = Σ_j t'_ij, 1 for labels), / n_valid for "mean"

The log-sum-exp is shifted by the row max (stable for |x| ~ 1e4); log(softmax) is never
formed. Forward computes the loss and dlogits in one call of
`gpunet.ops.softmax_cross_entropy` and caches dlogits; backward only scales it.
Label smoothing: Szegedy et al. 2016, "Rethinking the Inception architecture".

Class weights (`weight=`, PyTorch's semantics, formulas in class_weights.py) take the
`xp` path on every device: the fused kernel has no weights.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..checks import checks_enabled
from ..errors import GpunetTypeError, GpunetValueError, NonFiniteError, ShapeError
from ..ops import raise_deferred_errors, softmax_cross_entropy, softmax_cross_entropy_eval
from ..ops.softmax_cross_entropy_xp import check_inputs, check_labels_now, check_options
from .base import Loss
from .class_weights import WeightCache, check_class_weight, check_weight_shape, weighted_cross_entropy

# How far a soft-target row sum may be from 1 when target checks are on.
ROW_SUM_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-8}


def _describe(a) -> str:
    """What a non-array argument is: 'list of 5 items', 'int 3', ..."""
    if isinstance(a, (list, tuple)):
        return f"a Python {type(a).__name__} of {len(a)} items (convert it with np.asarray)"
    return f"{type(a).__name__} {a!r:.40}"


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of softmax(logits) against class labels or soft targets.

    forward(logits (N, C), target) -> loss: 0-d for "mean"/"sum", (N,) for "none".
    target is (N,) integer class labels (any integer dtype; cast to int64 unless int32)
    or (N, C) soft targets (cast to the logits dtype when they differ). A target on the
    host is moved to the logits' device. Labels outside [0, C) raise ValueError naming
    the first bad row and its value: at once on the CPU, and on a GPU at once when
    checks are on (`gn.set_checks(True)`) or check_labels="sync", else at the next
    `raise_deferred_errors(device)` (the trainer calls it at logging points;
    the bad rows' losses are NaN meanwhile).
    ignore_index (class labels only): those rows add 0 and leave the mean's count; when
    every row is ignored the mean is NaN and the gradient 0 (as in PyTorch).
    check_targets=True (or checks on) verifies that soft-target rows sum to 1; checks on
    also scan the logits for NaN/Inf (NonFiniteError). Both cost a sync.
    weight: None or (C,) class weights >= 0, as PyTorch's CrossEntropyLoss(weight=...):
    row i is weighted by w[y_i] and "mean" divides by Σ w[y_i] over rows not ignored
    (label smoothing's term weights class j by w_j; soft targets: Σ_j w_j t'_ij (lse − x_ij),
    "mean" over N). Weighted calls check labels at once (a sync on a GPU).
    """

    def __init__(self, reduction="mean", label_smoothing=0.0, ignore_index=None, check_targets=False,
                 *, check_labels=None, weight=None):
        super().__init__(reduction)
        check_options(type(self).__name__, label_smoothing, ignore_index, reduction,
                      "sync" if check_labels is None else check_labels)
        self.weight = check_class_weight(type(self).__name__, weight)
        self._weights = WeightCache(self.weight) if self.weight is not None else None
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.check_targets = bool(check_targets)
        self.check_labels = check_labels
        self.n_valid = None     # 0-d device int64 after forward: rows not ignored
        self._dlogits = None

    def _prepare(self, logits, target):
        """Validate shapes and dtypes; return contiguous (logits, target) on one device."""
        name = type(self).__name__
        for arg, a in (("logits", logits), ("target", target)):
            if not (hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "ndim")):
                raise GpunetTypeError(f"{name}: expected {arg} to be a NumPy/CuPy array, got {_describe(a)}")
        shapes = f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
        if logits.ndim == 2 and logits.shape[0] == 0 and self.reduction == "mean":
            raise ShapeError(f"{name}: expected at least one row of logits (N >= 1) for reduction='mean', "
                             f"{shapes}")
        if logits.ndim != 2 or target.ndim not in (1, 2):
            raise ShapeError(f"{name}: expected logits (N, C) and target (N,) class labels or (N, C) soft "
                             f"targets, {shapes}")
        if logits.dtype not in backend.FLOAT_DTYPES:
            raise GpunetTypeError(f"{name}: expected float32 or float64 logits, got {logits.dtype}")
        dev = backend.device_of(logits)
        if backend.is_cupy_array(target) != backend.is_cupy_array(logits):
            target = dev.asarray(target)
        N, C = logits.shape
        if target.ndim == 1:
            if target.shape[0] != N:
                raise ShapeError(f"{name}: expected target (N,) = ({N},) class labels, {shapes}")
            if target.dtype.kind not in "iu":
                raise GpunetTypeError(f"{name}: expected integer class labels for a 1-D target, got {target.dtype}")
            if target.dtype not in (np.int32, np.int64):
                if target.dtype == np.uint64 and target.size and int(target.max()) >= C:  # sync: uint64 only
                    row = int(target.argmax())  # show the label itself, not its int64 wrap-around
                    raise GpunetValueError(f"{name}: expected class labels in [0, {C}), got {int(target[row])} "
                                           f"(dtype uint64) at row {row}")
                target = target.astype(np.int64)
        else:
            if tuple(target.shape) != (N, C):
                raise ShapeError(f"{name}: expected soft targets (N, C) = ({N}, {C}), {shapes}")
            if target.dtype.kind != "f":
                raise GpunetTypeError(f"{name}: expected float soft targets, got {target.dtype}")
            target = target.astype(logits.dtype, copy=False)
        xp = dev.xp
        return xp.ascontiguousarray(logits), xp.ascontiguousarray(target)

    def _check_values(self, logits, target):
        """NaN/Inf in logits (checks on) and soft-target row sums (check_targets or checks on)."""
        name = type(self).__name__
        xp = backend.xp_of(logits)
        if checks_enabled():
            finite = xp.isfinite(logits)
            if not bool(finite.all()):  # sync
                row, col = (int(i) for i in np.unravel_index(int(xp.argmin(finite)), logits.shape))
                raise NonFiniteError(f"{name}: expected finite logits, got {logits[row, col].item()} "
                                     f"at row {row}, column {col}")
        if target.ndim == 2 and (self.check_targets or checks_enabled()):
            sums = target.sum(axis=1)
            off = xp.abs(sums - 1) > ROW_SUM_TOL[np.dtype(logits.dtype)]
            if bool(off.any()):  # sync
                row = int(xp.argmax(off))
                raise GpunetValueError(f"{name}: expected soft-target rows summing to 1, got "
                                       f"{float(sums[row])} at row {row}")

    def _label_mode(self):
        return self.check_labels or ("sync" if checks_enabled() else "deferred")

    def forward(self, logits, target):
        logits, target = self._prepare(logits, target)
        self._check_values(logits, target)
        if self.weight is not None:
            return self._forward_weighted(logits, target)
        mode = self._label_mode()
        loss, self._dlogits, self.n_valid = softmax_cross_entropy(
            logits, target, label_smoothing=self.label_smoothing, ignore_index=self.ignore_index,
            reduction=self.reduction, want_grad=True, check_labels=mode)
        return loss

    def evaluate(self, logits, target):
        """(loss_sum, n_valid, n_correct) through the fused forward-only kernel: no dlogits is
        written and the backward state of the last `forward` is left as it was. Ignored rows
        count in none of the three."""
        if self.weight is not None:  # no fused weighted path: forward, and its mean times the rows
            return super().evaluate(logits, target)
        logits, target = self._prepare(logits, target)
        self._check_values(logits, target)
        return softmax_cross_entropy_eval(logits, target, label_smoothing=self.label_smoothing,
                                          ignore_index=self.ignore_index, check_labels=self._label_mode())

    def raise_deferred_errors(self, device) -> None:
        """Bad labels the kernel recorded on `device` in "deferred" mode (a sync: logging points only)."""
        raise_deferred_errors(device)

    def _forward_weighted(self, logits, target):
        # Not the fused kernel (kernels/softmax_cross_entropy.cu), which has no class
        # weights: the xp path below runs on both backends, a few more passes over (N, C)
        # on a GPU. Passing weights through the kernel is a kernel change, not a loss one.
        name = type(self).__name__
        a = check_inputs(name, logits, target, self.label_smoothing, self.ignore_index, self.reduction)
        check_weight_shape(name, self._weights.host, a.C)
        if not a.soft:
            check_labels_now(name, target, a)
        with backend.device_of(logits):
            loss, self._dlogits, self.n_valid = weighted_cross_entropy(
                logits, target, self._weights.on(logits), a.eps, a.ignore_index, self.reduction)
        return loss

    def backward(self, grad=1.0):
        """d(grad · loss)/d(logits). grad: a scalar, or (N,) per-row weights for "none"."""
        name = type(self).__name__
        if self._dlogits is None:
            raise GpunetValueError(f"{name}.backward: expected a forward call first, got none")
        d = self._dlogits
        if isinstance(grad, (int, float, np.number)) and not isinstance(grad, bool):
            return d if grad == 1.0 else d * d.dtype.type(grad)
        g = backend.xp_of(d).asarray(grad).astype(d.dtype, copy=False)
        if g.ndim == 0:
            return d * g
        if self.reduction == "none" and tuple(g.shape) == (d.shape[0],):
            return d * g[:, None]
        raise ShapeError(f"{name}.backward: expected grad as a scalar"
                         f"{f' or of shape ({d.shape[0]},)' if self.reduction == 'none' else ''}, "
                         f"got shape {tuple(g.shape)}")

    def extra_repr(self):
        parts = [f"reduction={self.reduction!r}"]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.ignore_index is not None:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.weight is not None:
            parts.append(f"weight={self.weight.tolist()}")
        return ", ".join(parts)
