"""Binary cross-entropy: on logits (stable) and on probabilities (clamped).

For a logit z, its probability σ(z) = 1/(1+e^−z) and a target t ∈ [0, 1]:

    BCE(p, t)          = −[t·log p + (1−t)·log(1−p)]
    BCEWithLogits(z,t) = max(z, 0) − z·t + log1p(exp(−|z|))          (= BCE(σ(z), t))
    ∂/∂z               = σ(z) − t

The logit form never evaluates log(σ(z)) or exp(z) for large |z|, so it is exact at
|z| = 1000 where the probability form overflows or returns log(0). Prefer it.

With `pos_weight` (PyTorch's BCEWithLogitsLoss), positives are weighted by pw:
ℓ = −[pw·t·log σ(z) + (1−t)·log(1−σ(z))] = (1−t)·z + lw·softplus(−z) with
lw = 1 + (pw−1)·t, and ∂ℓ/∂z = (1−t) − lw·(1−σ(z)).

Reductions follow PyTorch: "mean" averages over all elements. `weight` (both classes,
as PyTorch's): per-element weights broadcastable to pred's shape, multiplying ℓ and ∂ℓ;
"mean" still divides by the number of elements.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError, ShapeError
from .elementwise import ElementwiseLoss, broadcasts_to, check_range


def _sigmoid_parts(xp, z):
    """e = exp(−|z|) (never overflows) and σ(z) = (1 if z ≥ 0 else e)/(1 + e)."""
    e = xp.exp(-xp.abs(z))
    sigma = xp.where(z >= 0, 1.0, e).astype(z.dtype, copy=False)
    sigma /= 1.0 + e
    return e, sigma


class BCEWithLogits(ElementwiseLoss):
    """Binary cross-entropy on logits, fused with the sigmoid. Shapes: pred and target alike, any shape.

    pos_weight: None, a positive scalar, or an array broadcastable to pred's shape
    (e.g. (C,) for pred (N, C)): the weight of the positive term per class.
    weight: None or per-element weights >= 0 broadcastable to pred's shape.
    """

    def __init__(self, reduction: str = "mean", pos_weight=None, weight=None):
        super().__init__(reduction, weight)
        if pos_weight is not None:
            arr = np.asarray(pos_weight)
            if arr.dtype.kind not in "iuf":
                raise GpunetTypeError(f"{type(self).__name__}: pos_weight expected a number or numeric array, "
                                      f"got {type(pos_weight).__name__}")
            if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
                raise GpunetValueError(f"{type(self).__name__}: pos_weight expected positive finite values, "
                                       f"got {pos_weight!r}")
            pos_weight = arr.astype(np.float64)
        self.pos_weight = pos_weight
        self._pw_cache = {}  # (array module, device, dtype) -> pos_weight on that device

    def _pos_weight_on(self, xp, z):
        """pos_weight moved to z's device and dtype once, then reused (no copy per step)."""
        if not broadcasts_to(self.pos_weight.shape, z.shape):
            raise ShapeError(f"{self}: pos_weight shape {self.pos_weight.shape} does not broadcast to "
                             f"pred shape {tuple(z.shape)}")
        key = (xp.__name__, str(getattr(z, "device", "cpu")), z.dtype.str)
        if key not in self._pw_cache:
            self._pw_cache[key] = backend.device_of(z).asarray(self.pos_weight, dtype=z.dtype)
        return self._pw_cache[key]

    def _check_inputs(self, xp, pred, target):
        super()._check_inputs(xp, pred, target)
        check_range(self, "target", target, xp, 0.0, 1.0)

    def _forward(self, xp, z, t):
        e, sigma = _sigmoid_parts(xp, z)
        softplus_neg_abs = xp.log1p(e)  # log(1 + e^−|z|), in (0, log 2]
        if self.pos_weight is None:
            loss = xp.maximum(z, 0) - z * t + softplus_neg_abs
            lw = None
        else:
            lw = 1.0 + (self._pos_weight_on(xp, z) - 1.0) * t
            # softplus(−z) = max(−z, 0) + log1p(e^−|z|): stable for either sign of z.
            loss = (1.0 - t) * z + lw * (xp.maximum(-z, 0) + softplus_neg_abs)
        self._cache = (sigma, t, lw)
        return loss

    def _derivative(self, xp):
        sigma, t, lw = self._cache
        if lw is None:
            return sigma - t
        return (1.0 - t) - lw * (1.0 - sigma)

    def extra_repr(self) -> str:
        pw = "" if self.pos_weight is None else f", pos_weight={self.pos_weight.tolist()}"
        w = "" if self.weight is None else f", weight={self.weight.tolist()}"
        return f"reduction={self.reduction!r}{pw}{w}"


class BCE(ElementwiseLoss):
    """Binary cross-entropy on probabilities p ∈ [0, 1]. Shapes: pred and target alike.

    p is clamped to [eps, 1−eps] before the logs, so ℓ ≤ −log(eps) (≈ 16.1 for
    eps = 1e-7) and never Inf. The backward is the exact derivative of this clamped
    function: (p_c − t)/(p_c·(1−p_c)) inside [eps, 1−eps] and 0 outside, where the
    clamp is flat. A saturated wrong prediction therefore gets no gradient; that is
    why BCEWithLogits on the logits is the better choice for training.
    (PyTorch instead clamps each log at −100 and keeps a non-zero gradient.)
    weight: None or per-element weights >= 0 broadcastable to pred's shape.
    """

    def __init__(self, reduction: str = "mean", eps: float = 1e-7, weight=None):
        super().__init__(reduction, weight)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0.0 < eps < 0.5):
            raise GpunetValueError(f"{type(self).__name__}: eps expected a number in (0, 0.5), got {eps!r}")
        self.eps = float(eps)

    def _check_inputs(self, xp, pred, target):
        super()._check_inputs(xp, pred, target)
        check_range(self, "pred", pred, xp, 0.0, 1.0)
        check_range(self, "target", target, xp, 0.0, 1.0)

    def _forward(self, xp, p, t):
        pc = xp.clip(p, self.eps, 1.0 - self.eps)
        loss = -(t * xp.log(pc) + (1.0 - t) * xp.log1p(-pc))
        self._cache = (p, t)
        return loss

    def _derivative(self, xp):
        p, t = self._cache
        pc = xp.clip(p, self.eps, 1.0 - self.eps)
        inside = (p >= self.eps) & (p <= 1.0 - self.eps)
        d = (pc - t) / (pc * (1.0 - pc))
        d *= inside  # the clamp's derivative: 1 inside, 0 where p was clamped
        return d

    def extra_repr(self) -> str:
        w = "" if self.weight is None else f", weight={self.weight.tolist()}"
        return f"reduction={self.reduction!r}, eps={self.eps}{w}"
