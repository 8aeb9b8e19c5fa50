"""The loss contract: `forward(pred, target) -> loss`, `backward(grad=1.0) -> dpred`.

`forward` returns a 0-d device array for reduction "mean"/"sum" (no host sync; call
`float(loss)` at a logging point) and an (N,) array for "none". `backward(grad)`
returns d(grad · loss)/d(pred); for "none", `grad` may be an (N,) array.
"""
from __future__ import annotations

from ..errors import GpunetValueError

REDUCTIONS = ("mean", "sum", "none")


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

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
