"""Generalized Dice loss for segmentation (Sudre et al. 2017, "Generalised Dice overlap
as a deep learning loss function for highly unbalanced segmentations").

pred holds class *probabilities* p (N, C, *spatial), e.g. the output of a softmax
over C (put `gn.nn.Softmax()` last in the model; the loss itself takes no logits).
The target is one-hot / soft t (N, C, *spatial) or integer labels (N, *spatial).
For each sample n, with i running over its pixels and r_c = Σ_i t_ic the volume
of class c:

    w_c    = 1 / r_c²                     (weight="square"; "simple": 1/r_c; "uniform": 1)
    num    = Σ_c w_c Σ_i p_ic t_ic
    den    = Σ_c w_c Σ_i (p_ic + t_ic)
    L_n    = 1 − (2·num + eps) / (den + eps)
    ∂L_n/∂p_ic = w_c · ((2·num + eps) − 2·t_ic·(den + eps)) / (den + eps)²

The loss is per sample; "mean"/"sum" reduce over N, "none" returns (N,).
Weights depend on the target only, so no gradient flows through them.

Absent classes. A class with r_c = 0 has the weight 1/0. The common fix
1/(r_c² + eps) ("naive") gives it 1/eps = 10⁶, so the absent class's false positives
Σ_i p_ic dominate both num and den. While they are not tiny, L_n ≈ 1 whatever the
present classes do and every gradient is ~1/(w_c·Σ_i p_ic): training freezes (the
generalized-dice experiment measures a gradient norm of 4e-11 from a uniform start,
below Adam's eps). Once p_ic is pushed near 0 the gradient on it spikes instead
(over 1e5 at p = 1e-9). Two bounded choices:
- absent="zero" (the default) drops the absent class's term. Its false positives
  still cost through the softmax, which takes their mass from the present classes.
  In the generalized-dice experiment this is the variant that learns to segment
  (foreground IoU 0.90 on MNIST-derived masks).
- absent="max" (MONAI's choice) gives it the largest weight among the sample's
  present classes (≤ 1 for hard targets). In the same experiment it settles on the
  all-background local minimum (foreground IoU 0).
`max_weight` optionally caps every weight.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError, ShapeError
from .base import Loss
from .elementwise import (check_finite, check_pred, check_range, dtype_of, float_target, reduce,
                          upstream_scale)

WEIGHTS = {"square": 2, "simple": 1, "uniform": 0}
ABSENT = ("max", "zero", "naive")


class GeneralizedDice(Loss):
    """Generalized Dice loss. pred (N, C, *spatial) probabilities; target one-hot (N, C, *spatial)
    or int labels (N, *spatial). Returns a 0-d array ("mean"/"sum") or (N,) ("none")."""

    def __init__(self, eps: float = 1e-6, weight: str = "square", absent: str = "zero",
                 max_weight: float | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        name = type(self).__name__
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise GpunetValueError(f"{name}: eps expected a positive number, got {eps!r}")
        if weight not in WEIGHTS:
            raise GpunetValueError(f"{name}: weight expected one of {tuple(WEIGHTS)}, got {weight!r}")
        if absent not in ABSENT:
            raise GpunetValueError(f"{name}: absent expected one of {ABSENT}, got {absent!r}")
        if max_weight is not None and (isinstance(max_weight, bool) or not isinstance(max_weight, (int, float))
                                       or not max_weight > 0):
            raise GpunetValueError(f"{name}: max_weight expected None or a positive number, got {max_weight!r}")
        self.eps, self.weight, self.absent = float(eps), weight, absent
        self.max_weight = None if max_weight is None else float(max_weight)
        self._cache = None

    # -- target handling
    def _one_hot(self, xp, pred, target):
        """Target as a float (N, C, S) array on pred's device."""
        n, c = pred.shape[:2]
        tshape = tuple(np.shape(target))
        if tshape == tuple(pred.shape):
            t = float_target(self, xp, pred, target)
            check_finite(self, "target", t, xp)
            check_range(self, "target", t, xp, 0.0, 1.0)
            return t.reshape(n, c, -1)
        if tshape != (n,) + tuple(pred.shape[2:]):
            raise ShapeError(f"{self}: target expected one-hot {tuple(pred.shape)} or labels "
                             f"{(n,) + tuple(pred.shape[2:])} for pred {tuple(pred.shape)}, got {tshape}")
        if dtype_of(target).kind not in "iu":
            raise GpunetTypeError(f"{self}: label target expected an integer dtype, got {dtype_of(target)}")
        labels = xp.asarray(target).reshape(n, 1, -1)
        check_range(self, "target labels", labels, xp, 0, c - 1)
        # Comparison builds the one-hot without indexing, so a bad label can never read
        # out of bounds; without checks it just yields an all-zero column.
        return (labels == xp.arange(c).reshape(1, c, 1)).astype(pred.dtype)

    def _weights(self, xp, r):
        """Per-sample class weights (N, C) from class volumes r (N, C)."""
        k = WEIGHTS[self.weight]
        if k == 0:
            w = xp.ones_like(r)
        elif self.absent == "naive":
            w = 1.0 / (r ** k + self.eps)
        else:
            present = r > 0
            w = xp.where(present, 1.0 / xp.where(present, r, 1.0) ** k, 0.0).astype(r.dtype, copy=False)
            if self.absent == "max":
                w = xp.where(present, w, w.max(axis=1, keepdims=True))
        if self.max_weight is not None:
            w = xp.minimum(w, self.max_weight)
        return w

    # -- forward / backward
    def forward(self, pred, target):
        xp = check_pred(self, pred)
        if pred.ndim < 2:
            raise ShapeError(f"{self}: pred expected (N, C, *spatial), got {tuple(pred.shape)}")
        check_finite(self, "pred", pred, xp)
        check_range(self, "pred", pred, xp, 0.0, 1.0)
        n, c = pred.shape[:2]
        t = self._one_hot(xp, pred, target)
        p = pred.reshape(n, c, -1)
        r = t.sum(axis=2)
        w = self._weights(xp, r)
        num = (w * (p * t).sum(axis=2)).sum(axis=1)
        den = (w * (p.sum(axis=2) + r)).sum(axis=1)
        self._cache = (t, w, 2.0 * num + self.eps, den + self.eps)
        self._shape = tuple(pred.shape)
        return reduce(xp, 1.0 - self._cache[2] / self._cache[3], self.reduction)

    def backward(self, grad=1.0):
        if self._cache is None:
            raise GpunetValueError(f"{self}.backward called before forward: call forward(pred, target) first")
        t, w, a, b = self._cache  # a = 2·num + eps, b = den + eps, both (N,)
        xp = backend.xp_of(t)
        n = t.shape[0]
        scale = upstream_scale(self, xp, grad, self.reduction, n, (n,))
        coef = scale / (b * b)  # (N,): the upstream gradient per sample over (den + eps)²
        d = t * (-2.0 * b)[:, None, None]
        d += a[:, None, None]
        d *= (w * coef[:, None])[:, :, None]
        return d.reshape(self._shape)

    def extra_repr(self) -> str:
        mw = "" if self.max_weight is None else f", max_weight={self.max_weight}"
        return (f"eps={self.eps}, weight={self.weight!r}, absent={self.absent!r}{mw}, "
                f"reduction={self.reduction!r}")
