"""Class-weighted cross-entropy and NLL, written once with `xp` (PyTorch's weighted semantics).

For log-probabilities ℓ_ij = log softmax(x_i)_j (or NLL's input), class weights w (C,),
smoothing eps and a row's coefficients a_ij, every loss here is

    loss_i = −Σ_j a_ij · ℓ_ij,      ∂loss_i/∂x_ij = (Σ_k a_ik) · softmax(x_i)_j − a_ij

    hard label y_i:  a_ij = (1 − eps) · w_{y_i} · [j = y_i] + (eps / C) · w_j
    soft target t_i: a_ij = w_j · ((1 − eps) · t_ij + eps / C)

"mean" divides the sum by Σ_i w_{y_i} over rows not ignored (hard labels: both terms,
as torch.nn.functional.cross_entropy does) and by N for soft targets (PyTorch divides
soft-target losses by N, weighted or not). When that divisor is 0 (every row ignored,
or only zero-weight classes present) the mean is NaN, as in PyTorch, and the gradient 0.
NLL (input already log-probabilities): loss_i = −w_{y_i} · ℓ_{i,y_i}, ∂/∂ℓ_{i,y_i} = −w_{y_i}.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError, ShapeError


def check_class_weight(owner: str, weight):
    """None, or a 1-D float64 host copy of finite, non-negative class weights."""
    if weight is None:
        return None
    arr = backend.to_numpy(weight) if hasattr(weight, "shape") else np.asarray(weight)
    if arr.dtype.kind not in "iuf":
        raise GpunetTypeError(f"{owner}: weight expected a numeric (C,) array of class weights, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise ShapeError(f"{owner}: weight expected a (C,) array of class weights, got shape {arr.shape}")
    if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
        raise GpunetValueError(f"{owner}: weight expected finite values >= 0, got {arr.tolist()}")
    return arr.astype(np.float64)


class WeightCache:
    """A host array copied to a device and dtype once, then reused (no copy per step)."""

    def __init__(self, host):
        self.host, self._copies = host, {}

    def on(self, like):
        xp = backend.xp_of(like)
        key = (xp.__name__, str(getattr(like, "device", "cpu")), like.dtype.str)
        if key not in self._copies:
            self._copies[key] = backend.device_of(like).asarray(self.host, dtype=like.dtype)
        return self._copies[key]


def check_weight_shape(owner, w, C):
    if tuple(w.shape) != (C,):
        raise ShapeError(f"{owner}: weight expected shape ({C},) for {C} classes, got {tuple(w.shape)}")


def _mean_scale(xp, denom, dtype):
    """(1/denom where denom > 0 else 0) as a 0-d device array: no sync."""
    denom = xp.asarray(denom, dtype=dtype)
    return xp.where(denom > 0, 1.0 / xp.where(denom > 0, denom, 1.0), 0.0).astype(dtype)


def _reduce(xp, row, denom, reduction):
    if reduction == "none":
        return row
    if reduction == "sum":
        return xp.asarray(row.sum())
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0: NaN, as in PyTorch
        return xp.asarray(row.sum() / denom)


def weighted_cross_entropy(logits, target, w, eps, ignore_index, reduction, want_grad=True):
    """(loss, dlogits or None, n_valid) of class-weighted softmax cross-entropy; see the header."""
    xp = backend.xp_of(logits)
    N, C = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    logs = xp.log(xp.exp(shifted).sum(axis=1))
    logp = shifted - logs[:, None]
    if target.ndim == 2:
        a = ((1.0 - eps) * target + eps / C) * w[None, :]
        valid = xp.ones(N, dtype=bool)
        denom = xp.asarray(N, dtype=logits.dtype)
    else:
        valid = target != ignore_index if ignore_index is not None else xp.ones(N, dtype=bool)
        y = xp.where(valid, target, 0).astype(xp.int64)
        wy = w[y] * valid
        a = xp.zeros_like(logits) if not eps else xp.broadcast_to((eps / C) * w, (N, C)) * valid[:, None]
        a = xp.array(a)  # writable
        a[xp.arange(N), y] += (1.0 - eps) * wy
        denom = wy.sum()
    row = -(a * logp).sum(axis=1)
    n_valid = xp.asarray(valid.sum(), dtype=xp.int64)
    loss = _reduce(xp, row, denom, reduction)
    if not want_grad:
        return loss, None, n_valid
    g = xp.exp(logp)
    g *= a.sum(axis=1, keepdims=True)
    g -= a
    if reduction == "mean":
        g *= _mean_scale(xp, denom, logits.dtype)
    return loss, g, n_valid


def nll(logp, target, w, ignore_index, reduction):
    """(loss, dlogp, n_valid) of the negative log-likelihood of log-probabilities (N, C)."""
    xp = backend.xp_of(logp)
    N, C = logp.shape
    valid = target != ignore_index if ignore_index is not None else xp.ones(N, dtype=bool)
    y = xp.where(valid, target, 0).astype(xp.int64)
    wy = (w[y] if w is not None else xp.ones(N, dtype=logp.dtype)) * valid
    picked = xp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
    row = -wy * picked
    denom = wy.sum()
    loss = _reduce(xp, row, denom, reduction)
    g = xp.zeros_like(logp)
    g[xp.arange(N), y] = -wy
    if reduction == "mean":
        g *= _mean_scale(xp, denom, logp.dtype)
    return loss, g, xp.asarray(valid.sum(), dtype=xp.int64)
