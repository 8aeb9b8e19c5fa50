"""Fused optimizer steps over flat buffers (kernels/fused_optim.cu and their twins).

    sgd_step(w, g, v, lr=, momentum=, dampening=, weight_decay=, nesterov=, v_from_grad=, lowp=)
        g' = g + weight_decay·w;  v = momentum·v + (1 − dampening)·g'  (v = g' when v_from_grad)
        w = w − lr·(g' + momentum·v if nesterov else v)               (w − lr·g' without momentum)
    adam_step(w, g, m, v, vmax, lr=, betas=, eps=, weight_decay=, decoupled=, step=, lowp=)
        AdamW (decoupled): w = w·(1 − lr·weight_decay);  Adam: g' = g + weight_decay·w
        m = β₁m + (1 − β₁)g';  v = β₂v + (1 − β₂)g'²;  vmax = max(vmax, v) (amsgrad: vmax given)
        w = w − lr/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + eps)

Every array is updated in place and has w's shape and dtype (float32 or float64), contiguous:
typically one parameter group's slice of a model's flat buffer (gpunet/nn/flat.py). `lowp`,
when given, is a float16 or bfloat16 array of w's shape that receives the updated float32
weights, rounded to nearest even, in the same pass (master weights and their low-precision copy).

The arithmetic is the per-parameter optimizers' (gpunet/optim/sgd.py, adam.py) operation for
operation, so float64 agrees with them to rounding. On CuPy arrays one kernel launch does the
whole update; elsewhere the `*_xp` twins, written once with `xp` over the whole buffer, run
(the CPU path of `fused=True`) and serve as the kernels' test reference.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError
from ._kernels import cdiv, check_contiguous, check_float, check_like, dtype_suffix, function, use_kernel

BLOCK = 256
MAX_BLOCKS = 8192
# Flags: keep in sync with kernels/fused_optim.cu.
SGD_MOMENTUM, SGD_NESTEROV, SGD_V_FROM_GRAD, SGD_L2 = 1, 2, 4, 8
ADAM_AMSGRAD, ADAM_L2 = 1, 2
LP_FP16, LP_BF16 = 16, 32
LOW_PRECISION = {"float16": LP_FP16, "bfloat16": LP_BF16}


# ---------------------------------------------------------------- checks

def _check(name, w, arrays, lowp):
    check_float(name, "w", w)
    check_contiguous(name, "w", w)
    for arg, a in arrays.items():
        if a is not None:
            check_like(name, arg, a, w, "w")
            check_contiguous(name, arg, a)
    if lowp is None:
        return 0
    if not hasattr(lowp, "dtype") or np.dtype(lowp.dtype).name not in LOW_PRECISION:
        raise GpunetTypeError(f"{name}: expected lowp of dtype float16 or bfloat16, "
                              f"got {getattr(lowp, 'dtype', type(lowp).__name__)}")
    if w.dtype != np.float32:
        raise GpunetTypeError(f"{name}: a low-precision copy expects float32 master weights, got w of dtype {w.dtype}")
    if backend.is_cupy_array(lowp) != backend.is_cupy_array(w) or tuple(lowp.shape) != tuple(w.shape):
        raise GpunetValueError(f"{name}: expected lowp of shape {tuple(w.shape)} on {backend.device_of(w).name}, "
                               f"got shape {tuple(lowp.shape)} on {backend.device_of(lowp).name}")
    check_contiguous(name, "lowp", lowp)
    return LOW_PRECISION[np.dtype(lowp.dtype).name]


def _launch(kernel, w, pointers, scalars, flags, lowp):
    dev = backend.device_of(w)
    n = w.size
    if n == 0:
        return
    t = w.dtype.type
    lp = None if lowp is None else lowp.view(dev.xp.int16)
    with dev:
        fn = function(dev, "fused_optim", f"{kernel}_{dtype_suffix(w.dtype)}")
        grid = max(1, min(cdiv(n, BLOCK), MAX_BLOCKS))
        fn((grid,), (BLOCK,), (w, *pointers, lp, np.int64(n), *[t(s) for s in scalars], np.int32(flags)))


def _cast_into(lowp, w):
    """lowp = w rounded to lowp's dtype; beyond its range becomes ±inf, as the kernel writes it."""
    with np.errstate(over="ignore"):
        lowp[...] = w.astype(lowp.dtype)


# ---------------------------------------------------------------- SGD

def sgd_step_xp(w, g, v, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                v_from_grad=False, lowp=None):
    xp = backend.xp_of(w)
    if weight_decay:
        gd = xp.multiply(w, weight_decay)
        gd += g
    else:
        gd = g
    d = gd
    if momentum:
        if v_from_grad:
            v[...] = gd
        else:
            v *= momentum
            if dampening:
                v += (1.0 - dampening) * gd
            else:
                v += gd
        if nesterov:
            d = xp.multiply(v, momentum)
            d += gd
        else:
            d = v
    w -= xp.multiply(d, lr)
    if lowp is not None:
        _cast_into(lowp, w)


def sgd_step(w, g, v, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
             v_from_grad=False, lowp=None):
    """One SGD step over flat w (in place), v the velocity (None without momentum)."""
    lp = _check("sgd_step", w, {"g": g, "v": v}, lowp)
    if momentum and v is None:
        raise GpunetValueError(f"sgd_step: momentum={momentum} expects a velocity buffer v, got None")
    sgd_step_unchecked(w, g, v, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                       nesterov=nesterov, v_from_grad=v_from_grad, lowp=lowp, lp_flag=lp)


def sgd_step_unchecked(w, g, v, *, lr, momentum, dampening, weight_decay, nesterov, v_from_grad, lowp=None,
                       lp_flag=0):
    """sgd_step without the argument checks, for callers whose arrays are known good (the fused
    optimizer's own flat buffers): a step's host time is then the launch alone."""
    if not use_kernel(w):
        return sgd_step_xp(w, g, v, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                           nesterov=nesterov, v_from_grad=v_from_grad, lowp=lowp)
    flags = lp_flag | (SGD_MOMENTUM if momentum else 0) | (SGD_NESTEROV if nesterov and momentum else 0) \
        | (SGD_V_FROM_GRAD if v_from_grad else 0) | (SGD_L2 if weight_decay else 0)
    _launch("sgd_step", w, (g, v if momentum else None), (lr, momentum, 1.0 - dampening, weight_decay),
            flags, lowp)


# ---------------------------------------------------------------- Adam / AdamW

def adam_constants(lr, betas, weight_decay, decoupled, step):
    """The host-side constants of step `step`: (decay, bc2, step_size), as adam.py computes them."""
    b1, b2 = betas
    decay = 1.0 - lr * weight_decay if (decoupled and weight_decay) else 1.0
    return decay, math.sqrt(1.0 - b2 ** step), lr / (1.0 - b1 ** step)


def adam_moments_xp(g, m, v, b1, b2):
    """m ← b1·m + (1 − b1)·g and v ← b2·v + (1 − b2)·g² in place (the per-parameter Adam's
    operation order); returns the scratch array of the update."""
    xp = backend.xp_of(g)
    tmp = xp.multiply(g, 1.0 - b1)
    m *= b1
    m += tmp
    xp.multiply(g, g, out=tmp)
    tmp *= 1.0 - b2
    v *= b2
    v += tmp
    return tmp


def adam_step_xp(w, g, m, v, vmax=None, *, lr, betas, eps, weight_decay=0.0, decoupled=False, step, lowp=None):
    xp = backend.xp_of(w)
    b1, b2 = betas
    decay, bc2, step_size = adam_constants(lr, betas, weight_decay, decoupled, step)
    if decoupled and weight_decay:
        w *= decay
    if weight_decay and not decoupled:
        gd = xp.multiply(w, weight_decay)
        gd += g
    else:
        gd = g
    tmp = adam_moments_xp(gd, m, v, b1, b2)
    if vmax is not None:
        xp.maximum(vmax, v, out=vmax)
        v = vmax
    xp.sqrt(v, out=tmp)
    tmp /= bc2
    tmp += eps
    xp.divide(m, tmp, out=tmp)
    tmp *= step_size
    w -= tmp
    if lowp is not None:
        _cast_into(lowp, w)


def adam_step(w, g, m, v, vmax=None, *, lr, betas, eps, weight_decay=0.0, decoupled=False, step, lowp=None):
    """One Adam (decoupled=False, L2) or AdamW (decoupled=True) step over flat w, in place.
    vmax: the amsgrad running maximum (None: plain Adam). step: t >= 1, for the bias corrections."""
    lp = _check("adam_step", w, {"g": g, "m": m, "v": v, "vmax": vmax}, lowp)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise GpunetValueError(f"adam_step: step expected an int >= 1, got {step!r}")
    adam_step_unchecked(w, g, m, v, vmax, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled=decoupled, step=int(step), lowp=lowp, lp_flag=lp)


def adam_step_unchecked(w, g, m, v, vmax, *, lr, betas, eps, weight_decay, decoupled, step, lowp=None, lp_flag=0):
    """adam_step without the argument checks (see sgd_step_unchecked)."""
    if not use_kernel(w):
        return adam_step_xp(w, g, m, v, vmax, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                            decoupled=decoupled, step=step, lowp=lowp)
    b1, b2 = betas
    decay, bc2, step_size = adam_constants(lr, betas, weight_decay, decoupled, step)
    flags = lp_flag | (ADAM_AMSGRAD if vmax is not None else 0) | (ADAM_L2 if weight_decay and not decoupled else 0)
    _launch("adam_step", w, (g, m, v, vmax),
            (decay, weight_decay, b1, 1.0 - b1, b2, 1.0 - b2, bc2, eps, step_size), flags, lowp)
