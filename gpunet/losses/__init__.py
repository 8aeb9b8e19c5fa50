"""gn.losses: SoftmaxCrossEntropy (fused kernel on GPU), NLLLoss, BCEWithLogits, BCE, MSE,
L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss, GeneralizedDice.

Contract (see base.py): `forward(pred, target)` returns a 0-d device array for
reduction "mean"/"sum" and the unreduced array for "none"; `backward(grad=1.0)`
returns d(grad · loss)/d pred. Class weights: SoftmaxCrossEntropy(weight=) and
NLLLoss(weight=) take (C,) class weights, BCE and BCEWithLogits per-element `weight=`
(and BCEWithLogits `pos_weight=`), all with PyTorch's semantics.
"""
from .base import REDUCTIONS, Loss  # noqa: F401
from .binary import BCE, BCEWithLogits  # noqa: F401
from .cross_entropy import SoftmaxCrossEntropy  # noqa: F401
from .dice import GeneralizedDice  # noqa: F401
from .kl import KLDivLoss  # noqa: F401
from .nll import NLLLoss  # noqa: F401
from .regression import MSE, HuberLoss, L1Loss, SmoothL1Loss  # noqa: F401

# Short names in the style of MSE and BCE.
NLL, L1, SmoothL1, Huber, KLDiv = NLLLoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss

__all__ = ["Loss", "REDUCTIONS", "SoftmaxCrossEntropy", "NLLLoss", "BCEWithLogits", "BCE", "MSE", "L1Loss",
           "SmoothL1Loss", "HuberLoss", "KLDivLoss", "GeneralizedDice", "NLL", "L1", "SmoothL1", "Huber", "KLDiv"]
