"""Numerical gradient checks for modules and losses (float64 central differences).

For a module f and a fixed random upstream gradient dy, the scalar
L(x, θ) = Σ f(x; θ) · dy has ∂L/∂x = f.backward(dy) and ∂L/∂θ = θ.grad. Each
element is perturbed by ±eps and compared with

    (L(x + eps·e_i) − L(x − eps·e_i)) / (2·eps)

A failure names the tensor, the worst element's index and both values.
Use float64: in float32 the rounding error of the difference swamps the check.
"""
from __future__ import annotations

import numpy as np

from . import backend


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree beyond the tolerance."""


def numeric_grad(f, arr, eps=1e-6):
    """Central differences of the scalar function f() with respect to `arr`, in place."""
    xp = backend.xp_of(arr)
    flat = arr.reshape(-1)  # a view: arr must be contiguous
    grad = np.zeros(flat.size, dtype=np.float64)
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return xp.asarray(grad.reshape(arr.shape))


def assert_close(name, analytic, numeric, atol, rtol):
    """Raise GradcheckError with the worst mismatch if |a − n| > atol + rtol·|n| anywhere."""
    a = backend.to_numpy(analytic).astype(np.float64)
    n = backend.to_numpy(numeric).astype(np.float64)
    if a.shape != n.shape:
        raise GradcheckError(f"{name}: analytic shape {a.shape} != numeric shape {n.shape}")
    excess = np.abs(a - n) - (atol + rtol * np.abs(n))
    if excess.size and excess.max() > 0:
        i = np.unravel_index(np.argmax(excess), a.shape)
        raise GradcheckError(f"{name}: worst mismatch at index {tuple(int(j) for j in i)}: "
                             f"analytic {a[i]:.10g}, numeric {n[i]:.10g} "
                             f"(|diff| {abs(a[i] - n[i]):.3g} > atol {atol} + rtol {rtol}·|numeric|); "
                             f"{int((excess > 0).sum())} of {a.size} elements out of tolerance")


def gradcheck_module(module, x, dy=None, eps=1e-6, atol=1e-6, rtol=1e-5, check_input=True, seed=0):
    """Check `module.backward` (dx and every Parameter.grad) against central differences.

    `x` must be a float64 array on the module's device. Stochastic modules must be
    deterministic across calls (eval mode, or reseeded by the caller's wrapper).
    Returns the dict of analytic gradients that were checked.
    """
    xp = backend.xp_of(x)
    if x.dtype != np.float64:
        raise ValueError(f"gradcheck_module: expected a float64 input, got {x.dtype}")
    x = xp.ascontiguousarray(x.copy())
    y = module.forward(x)
    if dy is None:
        rng = np.random.default_rng(seed)
        dy = xp.asarray(rng.standard_normal(y.shape))

    def scalar():
        return float(xp.sum(module.forward(x) * dy))  # sync: test-only

    module.zero_grad()
    module.forward(x)
    dx = module.backward(dy)
    checked = {}
    if check_input:
        assert_close(f"{type(module).__name__} dx", dx, numeric_grad(scalar, x, eps), atol, rtol)
        checked["x"] = dx
    for name, p in module.named_parameters():
        analytic = p.grad.copy()
        assert_close(f"{type(module).__name__} d{name}", analytic, numeric_grad(scalar, p.data, eps), atol, rtol)
        checked[name] = analytic
    return checked


def gradcheck_loss(loss_fn, pred, target, eps=1e-6, atol=1e-6, rtol=1e-5, upstream=1.0):
    """Check `loss_fn.backward(upstream)` with respect to `pred` against central differences.

    Works for every reduction: with reduction="none" the scalar is Σ loss_i · w_i
    for a fixed random w, and `upstream` is w.
    """
    xp = backend.xp_of(pred)
    if pred.dtype != np.float64:
        raise ValueError(f"gradcheck_loss: expected a float64 prediction, got {pred.dtype}")
    pred = xp.ascontiguousarray(pred.copy())
    out = loss_fn.forward(pred, target)
    if getattr(out, "ndim", 0) > 0 and np.isscalar(upstream):
        upstream = xp.asarray(np.random.default_rng(0).standard_normal(out.shape))

    def scalar():
        return float(xp.sum(loss_fn.forward(pred, target) * upstream))  # sync: test-only

    loss_fn.forward(pred, target)
    analytic = loss_fn.backward(upstream)
    assert_close(f"{type(loss_fn).__name__} dpred", analytic, numeric_grad(scalar, pred, eps), atol, rtol)
    return analytic
