"""Weight and activity penalties (Keras semantics).

    L1(l):         penalty = l · Σ|w|,            grad = l · sign(w)
    L2(l):         penalty = l · Σ w²,            grad = 2 · l · w
    L1L2(l1, l2):  penalty = l1 · Σ|w| + l2 · Σ w², grad = l1 · sign(w) + 2 · l2 · w

Note L2's penalty has no ½: `L2(l)` adds 2·l·w to the gradient, so it equals SGD's
`weight_decay = 2·l`. sign(0) = 0 is the subgradient used at w = 0.

Layers take them as `kernel_regularizer=` (on the weight) and `activity_regularizer=`
(on the layer's output). `penalty(w)` returns a 0-d array on w's device (no host
sync); `model.regularization_loss()` sums them for the trainer to add to the loss.
"""
from __future__ import annotations

from . import backend
from .argcheck import non_negative
from .errors import GpunetTypeError


def _sum_abs(w):
    xp = backend.xp_of(w)
    return xp.sum(xp.abs(w))


def _as_0d(value, w):
    """A 0-d array of w's dtype on w's device (NumPy reductions return scalars)."""
    return backend.xp_of(w).asarray(value, dtype=w.dtype)


def _sum_squares(w):
    flat = w.reshape(-1)
    return backend.xp_of(w).dot(flat, flat)  # one BLAS pass, no w² temporary


class Regularizer:
    """Base class: `penalty(w) -> 0-d array` and `grad(w) -> array shaped like w`."""

    def penalty(self, w):
        raise NotImplementedError(f"{type(self).__name__}.penalty")

    def grad(self, w):
        raise NotImplementedError(f"{type(self).__name__}.grad")

    def __call__(self, w):
        return self.penalty(w)

    def get_config(self) -> dict:
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1(Regularizer):
    """l · Σ|w|: pushes weights to exactly zero (sparsity)."""

    def __init__(self, l=0.01):
        self.l = non_negative("L1", "l", l)

    def penalty(self, w):
        return _as_0d(_sum_abs(w) * self.l, w)

    def grad(self, w):
        g = backend.xp_of(w).sign(w)
        g *= self.l
        return g

    def get_config(self):
        return {"l": self.l}


class L2(Regularizer):
    """l · Σw²: weight decay with coefficient 2·l."""

    def __init__(self, l=0.01):
        self.l = non_negative("L2", "l", l)

    def penalty(self, w):
        return _as_0d(_sum_squares(w) * self.l, w)

    def grad(self, w):
        return w * (2.0 * self.l)

    def get_config(self):
        return {"l": self.l}


class L1L2(Regularizer):
    """l1 · Σ|w| + l2 · Σw²."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = non_negative("L1L2", "l1", l1)
        self.l2 = non_negative("L1L2", "l2", l2)

    def penalty(self, w):
        return _as_0d(_sum_abs(w) * self.l1 + _sum_squares(w) * self.l2, w)

    def grad(self, w):
        g = backend.xp_of(w).sign(w)
        g *= self.l1
        g += w * (2.0 * self.l2)
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


def check(reg, arg: str, owner: str):
    """None, or an object with `penalty` and `grad` (a Regularizer or a duck-typed one)."""
    if reg is None or (callable(getattr(reg, "penalty", None)) and callable(getattr(reg, "grad", None))):
        return reg
    raise GpunetTypeError(f"{owner}: {arg} expected None or a regularizer (gn.regularizers.L1/L2/L1L2, "
                          f"or any object with penalty(w) and grad(w)), got {type(reg).__name__} {reg!r}")
