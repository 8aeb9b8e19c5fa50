"""Softmax cross-entropy written once with `xp`: the CPU path and the CUDA kernel's reference.

For logits x (N, C), smoothing eps and targets t (one-hot of the label y, or a soft row):

    t'_j   = (1 − eps) · t_j + eps / C                       (label smoothing, as in PyTorch)
    loss_i = Σ_j t'_j · (lse_i − x_ij),   lse_i = m_i + log Σ_j exp(x_ij − m_i),  m_i = max_j x_ij
    dloss_i/dx_ij = S_i · softmax(x_i)_j − t'_ij,            S_i = Σ_j t'_ij

S_i = 1 for hard labels and for soft rows that sum to 1; keeping S makes the gradient exact
for any soft row. The log-sum-exp is shifted by the row max, so logits of ±1e4 stay finite;
log(softmax) is never formed. Rows whose label equals `ignore_index` (hard labels only,
as in PyTorch) contribute 0 and get a zero gradient row; "mean" divides by the number of
other rows, n_valid. When every row is ignored the mean is 0/0 = NaN and the gradient is 0,
as in PyTorch. Non-finite logits follow PyTorch too, and the CUDA kernel agrees: a NaN or +inf
logit makes its row's loss and gradient NaN, -inf logits are masked out (an all -inf row is
NaN), argmax counts NaN as the maximum (first NaN wins). One deliberate difference: a zero
soft target contributes 0 even against a -inf logit (0 · log 0 = 0; PyTorch gives NaN), so
masked classes work with soft targets.

float16 and bfloat16 (ml_dtypes) logits, with soft targets of the same type, are computed in
float32, as the CUDA kernel does: the loss is float32 and dlogits is rounded once (to nearest
even) to the logits' type.

`check_inputs` is shared with the CUDA wrapper, so both paths accept and reject the same
arguments with the same messages.
"""
from __future__ import annotations

import types

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError, ShapeError
from ._kernels import check_contiguous, check_float, check_like, compute_dtype, is_half

INT_LABELS = (np.dtype(np.int32), np.dtype(np.int64))
CHECK_MODES = ("sync", "deferred")
REDUCTIONS = ("mean", "sum", "none")  # every loss's; gpunet.losses re-exports it


def _check_target(name, logits, target):
    """Hard labels (N,) int32/int64, or soft targets (N, C) of the logits dtype. Returns soft."""
    N, C = logits.shape
    if not hasattr(target, "dtype") or not hasattr(target, "shape"):
        raise GpunetTypeError(f"{name}: expected target to be an array, got {type(target).__name__}")
    if target.ndim == 1:
        if target.dtype not in INT_LABELS:
            raise GpunetTypeError(f"{name}: expected int32 or int64 class labels of shape ({N},), "
                                  f"got dtype {target.dtype}")
        if target.shape[0] != N:
            raise ShapeError(f"{name}: expected target of shape ({N},) for logits of shape ({N}, {C}), "
                             f"got {tuple(target.shape)}")
        if backend.is_cupy_array(target) != backend.is_cupy_array(logits) or \
                (backend.is_cupy_array(target) and target.device.id != logits.device.id):
            raise GpunetTypeError(f"{name}: expected target on the same device as logits "
                                  f"({backend.device_of(logits).name}), got {backend.device_of(target).name}")
        check_contiguous(name, "target", target)
        return False
    if target.ndim == 2:
        check_like(name, "target", target, logits, "logits")
        check_contiguous(name, "target", target)
        return True
    raise ShapeError(f"{name}: expected target of shape ({N},) (class labels) or ({N}, {C}) (soft targets) "
                     f"for logits of shape ({N}, {C}), got {tuple(target.shape)}")


def check_options(name, label_smoothing, ignore_index, reduction="mean", check_labels="sync"):
    """Validate the scalar options (the loss's constructor calls this too: one place checks them)."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)) \
            or not 0.0 <= float(label_smoothing) <= 1.0:
        raise GpunetValueError(f"{name}: expected label_smoothing in [0, 1], got {label_smoothing!r}")
    if ignore_index is not None and (isinstance(ignore_index, bool)
                                     or not isinstance(ignore_index, (int, np.integer))):
        raise GpunetTypeError(f"{name}: expected ignore_index to be an int or None, got {ignore_index!r}")
    if reduction not in REDUCTIONS:
        raise GpunetValueError(f"{name}: expected reduction in {REDUCTIONS}, got {reduction!r}")
    if check_labels not in CHECK_MODES:
        raise GpunetValueError(f"{name}: expected check_labels in {CHECK_MODES}, got {check_labels!r}")


def check_inputs(name, logits, target, label_smoothing, ignore_index, reduction="mean",
                 check_labels="sync", out=None):
    """Validate every argument; return a namespace (N, C, soft, eps, ignore_index)."""
    check_float(name, "logits", logits)
    if logits.ndim != 2:
        raise ShapeError(f"{name}: expected logits of shape (N, C), got {tuple(logits.shape)}")
    N, C = logits.shape
    if C < 1 or N >= 2**31 or C >= 2**31:
        raise ShapeError(f"{name}: expected logits (N, C) with 1 <= C < 2^31 and N < 2^31, got {(N, C)}")
    check_contiguous(name, "logits", logits)
    soft = _check_target(name, logits, target)
    check_options(name, label_smoothing, ignore_index, reduction, check_labels)
    if N == 0 and reduction == "mean":  # 0/0: a NaN loss; "sum" and "none" are defined
        raise ShapeError(f"{name}: expected at least one row for reduction='mean', got logits of shape {(N, C)}")
    if out is not None:
        check_like(name, "out", out, logits, "logits")
        check_contiguous(name, "out", out)
        if out is target:
            raise GpunetValueError(f"{name}: out must not be the target array")
    return types.SimpleNamespace(N=N, C=C, soft=soft, eps=float(label_smoothing),
                                 ignore_index=None if (soft or ignore_index is None) else int(ignore_index))


def bad_label_message(name, row, value, C=None, ignore_index=None):
    allowed = f"[0, {C})" if C is not None else "[0, C)"
    if ignore_index is not None:
        allowed += f" or ignore_index={ignore_index}"
    return f"{name}: expected class labels in {allowed}, got {value} at row {row} (the first bad row)"


def check_labels_now(name, target, a):
    """Raise GpunetValueError naming the first label outside [0, C) (a sync on a GPU)."""
    xp = backend.xp_of(target)
    bad = (target < 0) | (target >= a.C)
    if a.ignore_index is not None:
        bad &= target != a.ignore_index
    if bool(bad.any()):  # sync
        row = int(xp.argmax(bad))
        raise GpunetValueError(bad_label_message(name, row, int(target[row]), a.C, a.ignore_index))


def _widen(logits, target, a):
    """(logits, target) in the compute type: float16 / bfloat16 to float32 (exact), else as given."""
    if not is_half(logits.dtype):
        return logits, target
    ct = compute_dtype(logits.dtype)
    return logits.astype(ct), (target.astype(ct) if a.soft else target)


def _row_losses(xp, logits, target, a):
    """(row_loss, shifted = x − m, logs = log Σ exp(x − m), valid rows, labels with ignored → 0)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    logs = xp.log(xp.exp(shifted).sum(axis=1))
    eps, C = a.eps, a.C
    if a.soft:
        smoothed = (1.0 - eps) * target + eps / C
        # A zero target contributes 0 even against a -inf logit (0 · log 0 = 0), as in the kernel.
        row = (smoothed * xp.where(smoothed != 0, logs[:, None] - shifted, 0)).sum(axis=1)
        return row, shifted, logs, xp.ones(a.N, dtype=bool), None
    valid = target != a.ignore_index if a.ignore_index is not None else xp.ones(a.N, dtype=bool)
    y = xp.where(valid, target, 0).astype(xp.int64)
    shifted_y = xp.take_along_axis(shifted, y[:, None], axis=1)[:, 0]
    row = logs - (1.0 - eps) * shifted_y
    if eps:
        row = row - eps * shifted.mean(axis=1)
    row = xp.where(valid, row, xp.zeros((), dtype=row.dtype))
    return row, shifted, logs, valid, y


def _gradient(xp, target, a, shifted, logs, valid, y, scale, out):
    """dlogits = scale · (S · softmax − t'), zero on ignored rows, written into `out`."""
    g = out if out is not None else xp.empty(shifted.shape, dtype=shifted.dtype)
    xp.subtract(shifted, logs[:, None], out=g)
    xp.exp(g, out=g)
    eps, C = a.eps, a.C
    if a.soft:
        smoothed = (1.0 - eps) * target + eps / C
        g *= smoothed.sum(axis=1, keepdims=True)
        g -= smoothed
    else:
        g[xp.arange(a.N), y] -= 1.0 - eps
        if eps:
            g -= eps / C
    g *= scale
    xp.copyto(g, xp.zeros((), dtype=g.dtype), where=~valid[:, None])
    return g


def _reduce(xp, row, n_valid, reduction):
    if reduction == "none":
        return row
    total = row.sum()
    if reduction == "sum":
        return xp.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):  # all rows ignored: NaN, as in PyTorch
        return xp.asarray(total / n_valid.astype(row.dtype))


def softmax_cross_entropy_xp(logits, target, *, label_smoothing=0.0, ignore_index=None, reduction="mean",
                             want_grad=True, out=None, check_labels="sync"):
    """Twin of `gpunet.ops.softmax_cross_entropy`: (loss, dlogits or None, n_valid).

    Labels are always checked at once here (check_labels is accepted for the same signature).
    """
    name = "softmax_cross_entropy"
    a = check_inputs(name, logits, target, label_smoothing, ignore_index, reduction, check_labels, out)
    xp = backend.xp_of(logits)
    if not a.soft:
        check_labels_now(name, target, a)
    x, t = _widen(logits, target, a)
    row, shifted, logs, valid, y = _row_losses(xp, x, t, a)
    n_valid = xp.asarray(valid.sum(), dtype=xp.int64)
    loss = _reduce(xp, row, n_valid, reduction)
    if not want_grad:
        return loss, None, n_valid
    scale = 1.0 / xp.maximum(n_valid, 1).astype(x.dtype) if reduction == "mean" else 1.0
    if x is logits:
        return loss, _gradient(xp, t, a, shifted, logs, valid, y, scale, out), n_valid
    g = _gradient(xp, t, a, shifted, logs, valid, y, scale, None)   # float32, then one rounding
    res = out if out is not None else xp.empty(logits.shape, dtype=logits.dtype)
    res[...] = g.astype(logits.dtype)
    return loss, res, n_valid


def softmax_cross_entropy_eval_xp(logits, target, *, label_smoothing=0.0, ignore_index=None,
                                  check_labels="sync"):
    """Twin of `gpunet.ops.softmax_cross_entropy_eval`: (loss_sum, n_valid, n_correct), 0-d arrays.

    correct: argmax of the logits row equals the label (soft: the argmax of the target row);
    ties go to the first index. Ignored rows count in neither n_valid nor n_correct.
    """
    name = "softmax_cross_entropy_eval"
    a = check_inputs(name, logits, target, label_smoothing, ignore_index, "sum", check_labels)
    xp = backend.xp_of(logits)
    if not a.soft:
        check_labels_now(name, target, a)
    x, t = _widen(logits, target, a)
    row, _, _, valid, y = _row_losses(xp, x, t, a)
    ref = xp.argmax(t, axis=1) if a.soft else y
    correct = (xp.argmax(x, axis=1) == ref) & valid
    return (xp.asarray(row.sum()), xp.asarray(valid.sum(), dtype=xp.int64),
            xp.asarray(correct.sum(), dtype=xp.int64))
