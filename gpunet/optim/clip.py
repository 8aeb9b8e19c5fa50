"""Gradient clipping, in place and without a host sync (torch.nn.utils.clip_grad_*_).

    clip_grad_norm:  ‖g‖_p = (Σ_params Σ |g|^p)^(1/p)   (p = inf: max |g|)
                     g ← g · min(1, max_norm / (‖g‖_p + eps))
    clip_grad_value: g ← clip(g, −clip_value, clip_value)

The norm is over all parameters' gradients together (the global norm; Pascanu et al.
2013, "On the difficulty of training recurrent neural networks"). When the parameters are
exactly those of flat buffers (a fused optimizer's, gpunet/nn/flat.py) with every view in
place, the norm is one reduction over each flat gradient buffer and the scaling one
multiply per buffer.
"""
from __future__ import annotations

import math
import numbers

from .. import backend
from ..checks import checks_enabled
from ..errors import GpunetTypeError, GpunetValueError, NonFiniteError
from ..nn.flat import flat_of
from .optimizer import check_number, check_params


def _norm_type(value) -> float:
    if isinstance(value, str) and value.lower() == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GpunetTypeError(f"clip_grad_norm: norm_type expected a number > 0 or 'inf', "
                              f"got {type(value).__name__} {value!r}")
    if math.isnan(value) or value <= 0:
        raise GpunetValueError(f"clip_grad_norm: norm_type expected a number > 0 or inf, got {value!r}")
    return float(value)


def clip_grad_norm(params, max_norm: float, norm_type=2.0, error_if_nonfinite: bool = False, *, eps: float = 1e-6):
    """Scale all grads in place by min(1, max_norm / (‖g‖ + eps)), ‖g‖ the global p-norm.

    Arguments in PyTorch's order (eps, gpunet's, by keyword only).
    norm_type: p > 0, or inf / "inf" for the largest |g|. Returns ‖g‖ (before clipping)
    as a 0-d device array. Everything stays on the device, so there is no host sync
    (as torch.nn.utils.clip_grad_norm_). All parameters must be on one device.
    error_if_nonfinite=True (a sync) or gn.checks() on: a NaN/Inf norm raises
    NonFiniteError and the grads are left unchanged; otherwise they are scaled by the
    NaN coefficient, as PyTorch does.
    """
    params = check_params("clip_grad_norm", params)
    max_norm = check_number("clip_grad_norm", "max_norm", max_norm, lo=0.0, lo_open=True)
    p = _norm_type(norm_type)
    eps = check_number("clip_grad_norm", "eps", eps, lo=0.0)
    if not isinstance(error_if_nonfinite, bool):
        raise GpunetTypeError(f"clip_grad_norm: error_if_nonfinite expected a bool, got {error_if_nonfinite!r}")
    flat = flat_of(params)
    grads = [g.grad for g in flat.groups] if flat is not None else [q.grad for q in params]
    with backend.device_of(params[0].grad):  # CuPy allocates on the current GPU
        norm = _total_norm(grads, p)
        xp = backend.xp_of(norm)
        if (error_if_nonfinite or checks_enabled()) and not bool(xp.isfinite(norm)):  # sync: on request
            raise NonFiniteError(f"clip_grad_norm: expected finite gradients, got total {norm_type}-norm "
                                 f"{float(norm)}")
        coef = xp.minimum(max_norm / (norm + eps), 1.0)
        for g in grads:
            g *= coef.astype(g.dtype, copy=False)
    return norm


def _total_norm(grads, p):
    xp = backend.xp_of(grads[0])
    total = None
    for g in grads:
        flat = g.reshape(-1)
        if p == 2.0:
            part = xp.dot(flat, flat)  # Σ g² without a squared temporary
        elif p == math.inf:
            part = xp.abs(flat).max() if flat.size else xp.zeros((), flat.dtype)
        elif p == 1.0:
            part = xp.abs(flat).sum()
        else:
            part = (xp.abs(flat) ** p).sum()
        if total is None:
            total = part
        else:
            total = xp.maximum(total, part) if p == math.inf else total + part
    total = xp.asarray(total)
    if p == math.inf or p == 1.0:
        return total
    return xp.sqrt(total) if p == 2.0 else total ** (1.0 / p)


def clip_grad_value(params, clip_value: float) -> None:
    """Clamp every gradient element in place to [−clip_value, clip_value] (clip_value > 0)."""
    params = check_params("clip_grad_value", params)
    v = check_number("clip_grad_value", "clip_value", clip_value, lo=0.0, lo_open=True)
    for q in params:
        backend.xp_of(q.grad).clip(q.grad, -v, v, out=q.grad)


clip_grad_norm_ = clip_grad_norm     # PyTorch's spelling
clip_grad_value_ = clip_grad_value
