"""gn.losses: SoftmaxCrossEntropy (fused kernel on GPU), BCEWithLogits, BCE, MSE, GeneralizedDice."""
from .base import REDUCTIONS, Loss  # noqa: F401
