"""Mean squared error (PyTorch's MSELoss).

    ℓ_i = (pred_i − target_i)²,   ∂ℓ_i/∂pred_i = 2·(pred_i − target_i)

"mean" averages over all elements (not rows), as PyTorch does; so for pred (N, D)
the loss is Σ ℓ / (N·D).
"""
from __future__ import annotations

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
