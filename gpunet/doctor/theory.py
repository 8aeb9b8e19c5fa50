"""The reference values the checks compare against: entropies and losses at known states.

    H(p)      = −p ln p − (1−p) ln(1−p)           binary entropy, in nats
    H(π)      = −Σ_c π_c ln π_c                    entropy of the class priors π

A classifier that has learnt nothing but the label frequencies predicts π for
every sample. Its expected loss is then
    softmax cross-entropy:          H(π)                      (= ln C for balanced classes)
    C-way BCE, mean over elements:  (1/C) Σ_c H(π_c)
    C-way BCE, summed over classes: Σ_c H(π_c)                (= 10·H(0.1) ≈ 3.25 for MNIST)
and at initialization, with logits near zero (uniform predictions),
    softmax cross-entropy: ln C;   BCE: ln 2 per element (C·ln 2 per row);
    MSE on one-hot targets with zero outputs: 1/C per element.
"""
from __future__ import annotations

import math

import numpy as np

from .. import losses

LOG2 = math.log(2.0)


def binary_entropy(p) -> float:
    """H(p) = −p ln p − (1−p) ln(1−p) (0 at p ∈ {0, 1})."""
    p = float(p)
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log(p) - (1.0 - p) * math.log(1.0 - p)


def entropy(priors) -> float:
    """H(π) = −Σ π_c ln π_c over the classes with π_c > 0."""
    p = np.asarray(priors, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def priors_from_labels(y, classes: int) -> np.ndarray:
    """Class frequencies π (C,) of integer labels (N,) or one-hot/multi-hot targets (N, C)."""
    y = np.asarray(y)
    if y.ndim == 1:
        counts = np.bincount(y.astype(np.int64), minlength=classes)[:classes]
        return counts / max(counts.sum(), 1)
    return y.reshape(-1, y.shape[-1]).mean(axis=0)  # a multi-label prior per class


def base_loss(loss):
    """The loss a wrapper (e.g. OneHotLoss) delegates to, else `loss` itself."""
    while hasattr(loss, "inner"):
        loss = loss.inner
    return loss


def loss_kind(loss) -> str:
    """"ce", "bce" (on logits), "bce_prob" (on probabilities), "mse" or "other"."""
    loss = base_loss(loss)
    if isinstance(loss, losses.SoftmaxCrossEntropy):
        return "ce"
    if isinstance(loss, losses.BCEWithLogits):
        return "bce"
    if isinstance(loss, losses.BCE):
        return "bce_prob"
    if isinstance(loss, losses.MSE):
        return "mse"
    return "other"


def priors_losses(loss, priors) -> dict:
    """{reading: the loss of predicting the priors} for every reading the loss may report."""
    kind, p = loss_kind(loss), np.asarray(priors, dtype=np.float64)
    if kind == "ce":
        return {"cross-entropy H(π)": entropy(p)}
    if kind in ("bce", "bce_prob"):
        per_class = [binary_entropy(pc) for pc in p]
        return {"BCE per element (1/C)ΣH(π_c)": float(np.mean(per_class)),
                "BCE summed over classes ΣH(π_c)": float(np.sum(per_class))}
    if kind == "mse":
        return {"MSE per element (1/C)Σπ_c(1−π_c)": float(np.mean(p * (1 - p)))}
    return {}


def init_loss(loss, classes: int) -> float | None:
    """The loss with uniform predictions (zero logits) at initialization, or None if unknown."""
    kind = loss_kind(loss)
    if kind == "ce":
        return math.log(classes)
    if kind in ("bce", "bce_prob"):
        return LOG2 if base_loss(loss).reduction == "mean" else None
    if kind == "mse":
        return 1.0 / classes if base_loss(loss).reduction == "mean" else None
    return None
