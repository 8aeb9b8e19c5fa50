"""Kullback-Leibler divergence (PyTorch's KLDivLoss): pred holds log-probabilities log q.

    log_target=False (target p):      ℓ = p · (log p − pred),    0 where p = 0
    log_target=True  (target log p):  ℓ = e^target · (target − pred)
    ∂ℓ/∂pred = −p

Summed over a row this is KL(p ‖ q). Reductions: "batchmean" (Σ ℓ / N, the true KL
divergence per sample, what the formula means), "sum", "none", and "mean" (Σ ℓ / numel,
PyTorch's default, which divides also by the number of classes).
"""
from __future__ import annotations

from ..errors import GpunetTypeError, ShapeError
from .base import REDUCTIONS
from .elementwise import ElementwiseLoss, check_range


class KLDivLoss(ElementwiseLoss):
    """KLDivLoss(reduction="mean", log_target=False). Shapes: pred and target alike, pred (N, ...)."""

    REDUCTIONS = REDUCTIONS + ("batchmean",)

    def __init__(self, reduction: str = "mean", log_target: bool = False):
        super().__init__(reduction)
        if not isinstance(log_target, bool):
            raise GpunetTypeError(f"{type(self).__name__}: log_target expected a bool, got {log_target!r}")
        self.log_target = log_target

    def _check_inputs(self, xp, pred, target):
        super()._check_inputs(xp, pred, target)
        if not self.log_target:
            check_range(self, "target", target, xp, 0.0, float("inf"))

    def _forward(self, xp, pred, target):
        if self.log_target:
            p = xp.exp(target)
            loss = p * (target - pred)
        else:
            p = target
            safe = xp.where(p > 0, p, 1.0)  # p·log p → 0 as p → 0 (PyTorch's xlogy)
            loss = xp.where(p > 0, p * (xp.log(safe) - pred), -p * pred)
        self._cache = (p,)
        return loss

    def _derivative(self, xp):
        (p,) = self._cache
        return -p

    def forward(self, pred, target):
        if self.reduction == "batchmean" and getattr(pred, "ndim", 0) < 1:
            raise ShapeError(f"{self}: pred expected (N, ...) for reduction='batchmean', got a scalar")
        return super().forward(pred, target)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, log_target={self.log_target}"
