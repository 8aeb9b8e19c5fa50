"""Regression losses on the difference d = pred − target (PyTorch's MSELoss, L1Loss,
SmoothL1Loss and HuberLoss), element-wise:

    MSE:              ℓ = d²                                    ∂ℓ/∂pred = 2d
    L1:               ℓ = |d|                                   ∂ℓ/∂pred = sign(d)   (0 at d = 0)
    SmoothL1(beta):   ℓ = ½d²/beta  if |d| < beta  else |d| − ½beta
                                                                ∂ℓ/∂pred = d/beta inside, sign(d) outside
    Huber(delta):     ℓ = ½d²       if |d| ≤ delta else delta·(|d| − ½delta)
                                                                ∂ℓ/∂pred = d inside, delta·sign(d) outside

Huber(delta) = delta · SmoothL1(beta=delta); SmoothL1 with beta = 0 is L1 (as in
PyTorch). Huber is quadratic near 0 and linear in the tails, so outliers pull with
bounded force (Huber 1964, "Robust estimation of a location parameter"; Girshick 2015,
"Fast R-CNN", for smooth L1). "mean" averages over all elements (not rows), as
PyTorch does: for pred (N, D) the loss is Σ ℓ / (N·D).
"""
from __future__ import annotations

from ..nn._layer import real
from .elementwise import ElementwiseLoss


class MSE(ElementwiseLoss):
    """Squared error. Shapes: pred and target alike, any shape."""

    def _forward(self, xp, pred, target):
        diff = pred - target
        self._cache = (diff,)
        return diff * diff

    def _derivative(self, xp):
        (diff,) = self._cache
        return 2.0 * diff


class L1Loss(ElementwiseLoss):
    """Absolute error. Shapes: pred and target alike, any shape."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction)

    def _forward(self, xp, pred, target):
        diff = pred - target
        self._cache = (diff,)
        return xp.abs(diff)

    def _derivative(self, xp):
        (diff,) = self._cache
        return xp.sign(diff)


class SmoothL1Loss(ElementwiseLoss):
    """Quadratic for |d| < beta, linear beyond; beta >= 0 (0: plain L1)."""

    def __init__(self, reduction: str = "mean", beta: float = 1.0):
        super().__init__(reduction)
        self.beta = real(type(self).__name__, "beta", beta, low=0.0)

    def _forward(self, xp, pred, target):
        diff = pred - target
        a = xp.abs(diff)
        self._cache = (diff,)
        if self.beta == 0.0:
            return a
        return xp.where(a < self.beta, (0.5 / self.beta) * diff * diff, a - 0.5 * self.beta)

    def _derivative(self, xp):
        (diff,) = self._cache
        if self.beta == 0.0:
            return xp.sign(diff)
        return xp.where(xp.abs(diff) < self.beta, diff / self.beta, xp.sign(diff))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, beta={self.beta}"


class HuberLoss(ElementwiseLoss):
    """Quadratic for |d| <= delta, linear (slope delta) beyond; delta > 0."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        self.delta = real(type(self).__name__, "delta", delta, low=0.0, low_open=True)

    def _forward(self, xp, pred, target):
        diff = pred - target
        a = xp.abs(diff)
        self._cache = (diff,)
        return xp.where(a <= self.delta, 0.5 * diff * diff, self.delta * (a - 0.5 * self.delta))

    def _derivative(self, xp):
        (diff,) = self._cache
        return xp.clip(diff, -self.delta, self.delta)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"
