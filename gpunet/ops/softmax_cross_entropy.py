"""Fused softmax cross-entropy: loss, argmax and dlogits in one CUDA kernel per call.

    loss_i = Σ_j t'_ij (lse_i − x_ij),  dlogits_ij = scale · (S_i · softmax(x_i)_j − t'_ij)

(formulas, smoothing and ignore_index semantics: see softmax_cross_entropy_xp.py, the
twin; the kernel's layout and launch: kernels/softmax_cross_entropy.cu). The online
softmax follows Milakov & Gimelshein 2018, "Online normalizer calculation for softmax".
float16 and bfloat16 logits are read as float32, every statistic and the loss are
float32, and dlogits is written in the logits' type.

On CuPy arrays one kernel computes every row's loss (and its dlogits row unless
want_grad=False); a few tiny CuPy reductions finish the job:

* The mean's divisor. The kernel must scale dlogits by 1/n_valid before n_valid is known
  to the host, so n_valid is counted on the device first (count_nonzero(target !=
  ignore_index), or N when nothing can be ignored) and the kernel reads it through a
  pointer: no host sync, and dlogits is written once, already scaled.
* The loss. Per-row losses go to an (N,) buffer and are summed by CuPy (deterministic;
  no float atomics), then divided by n_valid for "mean".
* Bad labels. A label outside [0, C) other than ignore_index is never used as an index:
  its row gets a NaN loss and a NaN dlogits row, and the kernel atomicMin's
  (row << 32 | value) into a per-device error slot. check_labels="sync" reads the slot
  at once (one sync) and raises ValueError naming the first bad row and its value;
  "deferred" leaves it in a second slot that `raise_deferred_errors(device)` reads later
  (the trainer does at logging points), reporting the smallest bad row index seen since
  the last check (value clamped to the int32 range).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ._kernels import cdiv, compute_dtype, dtype_suffix, function, same_offset_mod16, use_kernel
from .softmax_cross_entropy_xp import (bad_label_message, check_inputs, softmax_cross_entropy_eval_xp,
                                       softmax_cross_entropy_xp)

# Flags: keep in sync with kernels/softmax_cross_entropy.cu.
CE_WANT_GRAD, CE_HAS_IGNORE, CE_MEAN, CE_WANT_CORRECT, CE_VEC = 1, 2, 4, 8, 16
SMALL_C = 1024          # up to this, a lane group (<= one warp) per row; above, a block per row
SMALL_BLOCK = 256
NO_ERROR = 2**63 - 1    # an empty error slot (larger than any row << 32 | value key)
DEFERRED, SYNC = 0, 1   # slots of the per-device error buffer

_err_buffers: dict = {}


def _err_buffer(dev):
    buf = _err_buffers.get(dev.name)
    if buf is None:
        with dev:
            buf = dev.xp.full((2,), NO_ERROR, dtype=dev.xp.int64)
        _err_buffers[dev.name] = buf
    return buf


def reset_error_slots() -> None:
    """Forget every device's error slots, a pending deferred bad label included (the slots are
    process-global: the test suite resets them between tests)."""
    _err_buffers.clear()


def _decode(key):
    """(row, value) from an error key; the value is the low 32 bits as a signed int."""
    row, low = key >> 32, key & 0xFFFFFFFF
    return row, low - 2**32 if low >= 2**31 else low


def _launch_config(C):
    """('small', threads per row) or ('large', threads per block)."""
    if C <= SMALL_C:
        tpr = 1
        while tpr < 32 and tpr * 4 < C:   # about 4 elements per lane, at most a warp per row
            tpr *= 2
        return "small", tpr
    return "large", 128 if C <= 4096 else 256 if C <= 16384 else 512 if C <= 65536 else 1024


def _flags(a, logits, dlogits, target, want_correct, mean):
    flags = ((CE_WANT_GRAD if dlogits is not None else 0) | (CE_HAS_IGNORE if a.ignore_index is not None else 0)
             | (CE_MEAN if mean else 0) | (CE_WANT_CORRECT if want_correct else 0))
    aligned = [logits] + ([dlogits] if dlogits is not None else []) + ([target] if a.soft else [])
    return flags | (CE_VEC if same_offset_mod16(*aligned) else 0)


def _launch(logits, target, a, *, dlogits, want_correct, mean, slot):
    """Run the kernel; returns (row_loss, row_correct or None, n_valid)."""
    dev = backend.device_of(logits)
    xp = dev.xp
    N, C = a.N, a.C
    dt = compute_dtype(logits.dtype).type   # float32 for float16 / bfloat16 logits
    label = "soft" if a.soft else ("i32" if target.dtype == np.int32 else "i64")
    suffix = dtype_suffix(logits.dtype) + "_" + label
    flags = _flags(a, logits, dlogits, target, want_correct, mean)
    ign = np.int64(a.ignore_index if a.ignore_index is not None else 0)
    kind, threads = _launch_config(C)
    with dev:
        err = _err_buffer(dev)
        if a.ignore_index is not None:
            n_valid = xp.asarray(xp.count_nonzero(target != a.ignore_index), dtype=xp.int64)
        else:
            n_valid = xp.full((), N, dtype=xp.int64)
        row_loss = xp.empty(N, dtype=dt)
        row_correct = xp.empty(N, dtype=xp.int32) if want_correct else None
        # Unused outputs get a harmless pointer (the error buffer): the flags keep them unwritten.
        head = (logits, target, dlogits if dlogits is not None else logits, row_loss,
                row_correct if row_correct is not None else err, err[slot:slot + 1], n_valid,
                np.int64(N), np.int32(C))
        tail = (ign, dt(a.eps), dt(1.0), np.int32(flags))
        if kind == "small":
            fn = function(dev, "softmax_cross_entropy", f"ce_small_{suffix}")
            fn((cdiv(N, SMALL_BLOCK // threads),), (SMALL_BLOCK,), head + (np.int32(threads),) + tail)
        else:
            fn = function(dev, "softmax_cross_entropy", f"ce_large_{suffix}")
            fn((N,), (threads,), head + tail)
    return row_loss, row_correct, n_valid


def _raise_sync_error(dev, name, target, a):
    """check_labels="sync": read this call's error slot (a sync) and raise if it was set."""
    err = _err_buffer(dev)
    key = int(err[SYNC].get())  # sync
    if key == NO_ERROR:
        return
    with dev:
        err[SYNC:SYNC + 1].fill(NO_ERROR)
    row, _ = _decode(key)
    value = int(target[row].get())  # sync: the exact value, even beyond int32
    raise GpunetValueError(bad_label_message(name, row, value, a.C, a.ignore_index))


def raise_deferred_errors(device) -> None:
    """Raise (and clear) a bad label recorded by check_labels="deferred" calls on `device`.

    One sync on a GPU; nothing to do on the CPU, where labels are always checked at once.
    """
    dev = backend.device(device)
    err = _err_buffers.get(dev.name)
    if err is None:
        return
    key = int(err[DEFERRED].get())  # sync
    if key == NO_ERROR:
        return
    with dev:
        err[DEFERRED:DEFERRED + 1].fill(NO_ERROR)
    row, value = _decode(key)
    clamp = " (clamped to the int32 range)" if value in (2**31 - 1, -2**31) else ""
    raise GpunetValueError(f"softmax_cross_entropy: expected class labels in [0, C) or ignore_index, got "
                           f"{value}{clamp} at row {row} of a batch since the last check (its loss is NaN)")


def softmax_cross_entropy(logits, target, *, label_smoothing=0.0, ignore_index=None, reduction="mean",
                          want_grad=True, out=None, check_labels="sync"):
    """Fused softmax cross-entropy. Returns (loss, dlogits, n_valid).

    logits (N, C) float32/float64/float16/bfloat16, C-contiguous. target: (N,) int32/int64
    labels or (N, C) soft targets of the logits dtype. loss: 0-d for "mean"/"sum", (N,) for
    "none", in the compute type (float32 for float16 / bfloat16 logits; dlogits has the
    logits dtype).
    dlogits = d(loss)/d(logits) (for "none": of the sum of the row losses), written into
    `out` when given (`out` may be `logits` itself), or None when want_grad=False.
    n_valid: 0-d int64 device array, the rows not ignored. A label outside [0, C) raises
    GpunetValueError (a ValueError) naming the first bad row and its value; on a GPU with
    check_labels="deferred" it is raised later by `raise_deferred_errors(device)`.
    """
    name = "softmax_cross_entropy"
    a = check_inputs(name, logits, target, label_smoothing, ignore_index, reduction, check_labels, out)
    if a.N == 0 or not use_kernel(logits):
        return softmax_cross_entropy_xp(logits, target, label_smoothing=label_smoothing,
                                        ignore_index=ignore_index, reduction=reduction,
                                        want_grad=want_grad, out=out, check_labels=check_labels)
    dev = backend.device_of(logits)
    xp = dev.xp
    dlogits = None
    if want_grad:
        with dev:
            dlogits = out if out is not None else xp.empty(logits.shape, dtype=logits.dtype)
    slot = SYNC if check_labels == "sync" else DEFERRED
    row_loss, _, n_valid = _launch(logits, target, a, dlogits=dlogits, want_correct=False,
                                   mean=reduction == "mean", slot=slot)
    if slot == SYNC and not a.soft:
        _raise_sync_error(dev, name, target, a)
    with dev:
        if reduction == "none":
            loss = row_loss
        elif reduction == "sum":
            loss = row_loss.sum()
        else:
            loss = row_loss.sum() / n_valid.astype(row_loss.dtype)
    return loss, dlogits, n_valid


def softmax_cross_entropy_eval(logits, target, *, label_smoothing=0.0, ignore_index=None, check_labels="sync"):
    """Forward only: (loss_sum, n_valid, n_correct), 0-d device arrays; no gradient written.

    correct: argmax(logits row) == label (soft targets: == argmax(target row)), first index
    on ties; ignored rows are excluded from all three.
    """
    name = "softmax_cross_entropy_eval"
    a = check_inputs(name, logits, target, label_smoothing, ignore_index, "sum", check_labels)
    if a.N == 0 or not use_kernel(logits):
        return softmax_cross_entropy_eval_xp(logits, target, label_smoothing=label_smoothing,
                                             ignore_index=ignore_index, check_labels=check_labels)
    dev = backend.device_of(logits)
    slot = SYNC if check_labels == "sync" else DEFERRED
    row_loss, row_correct, n_valid = _launch(logits, target, a, dlogits=None, want_correct=True,
                                             mean=False, slot=slot)
    if slot == SYNC and not a.soft:
        _raise_sync_error(dev, name, target, a)
    with dev:
        return row_loss.sum(), n_valid, row_correct.sum(dtype=dev.xp.int64)
