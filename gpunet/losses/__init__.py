"""gn.losses: SoftmaxCrossEntropy (fused kernel on GPU), BCEWithLogits, BCE, MSE, GeneralizedDice.

Contract (see base.py): `forward(pred, target)` returns a 0-d device array for
reduction "mean"/"sum" and the unreduced array for "none"; `backward(grad=1.0)`
returns d(grad · loss)/d pred.
"""
from .base import REDUCTIONS, Loss  # noqa: F401
from .binary import BCE, BCEWithLogits  # noqa: F401
from .cross_entropy import SoftmaxCrossEntropy  # noqa: F401
from .dice import GeneralizedDice  # noqa: F401
from .regression import MSE  # noqa: F401

__all__ = ["Loss", "REDUCTIONS", "SoftmaxCrossEntropy", "BCEWithLogits", "BCE", "MSE", "GeneralizedDice"]
