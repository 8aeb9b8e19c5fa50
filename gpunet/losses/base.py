"""The loss contract: `forward(pred, target) -> loss`, `backward(grad=1.0) -> dpred`.

`forward` returns a 0-d device array for reduction "mean"/"sum" (no host sync; call
`float(loss)` at a logging point) and an (N,) array for "none". `backward(grad)`
returns d(grad · loss)/d(pred); for "none", `grad` may be an (N,) array.

Two entries serve the Trainer's sync points and evaluation:
`evaluate(pred, target) -> (loss_sum, count, correct)` (forward only, no gradient) and
`raise_deferred_errors(device)` (errors a kernel recorded instead of syncing).
"""
from __future__ import annotations

from ..errors import GpunetValueError
from ..metrics import count_correct
from ..ops import REDUCTIONS


class Loss:
    REDUCTIONS = REDUCTIONS  # a loss may add its own (KLDivLoss: "batchmean")

    def __init__(self, reduction: str = "mean"):
        if reduction not in self.REDUCTIONS:
            raise GpunetValueError(f"{type(self).__name__}: reduction expected one of {self.REDUCTIONS}, "
                                   f"got {reduction!r}")
        self.reduction = reduction

    def forward(self, pred, target):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad=1.0):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def evaluate(self, pred, target):
        """(loss_sum, count, correct) of one batch as 0-d device arrays (no sync): the summed
        loss, the rows it averages over and the rows whose argmax matches the label.

        This default runs `forward`; a loss with a fused forward-only path overrides it."""
        loss = self.forward(pred, target)
        n = pred.shape[0]
        total = loss * n if self.reduction == "mean" else (loss if self.reduction == "sum" else loss.sum())
        return total, n, count_correct(pred, target)

    def raise_deferred_errors(self, device) -> None:
        """Raise what this loss's forward recorded on `device` instead of syncing (default: nothing)."""

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
