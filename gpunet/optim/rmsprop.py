"""RMSprop (Hinton, Coursera lecture 6e, 2012), PyTorch semantics.

g the gradient, w the weight; s, ḡ and b start at zero:

    g ← g + weight_decay · w                        (L2 folded into the gradient)
    s ← α s + (1 − α) g²                            (running mean of g²)
    centered:  ḡ ← α ḡ + (1 − α) g ;  a = √(s − ḡ²) + eps    (Graves 2013)
    otherwise: a = √s + eps
    momentum > 0:  b ← μ b + g / a ;  w ← w − lr · b
    otherwise:     w ← w − lr · g / a

Centered: s − ḡ² ≥ 0 in exact arithmetic; it is clamped at 0 so that rounding
cannot make √ return NaN (PyTorch does not clamp).
"""
from __future__ import annotations

from .. import backend
from ..errors import GpunetTypeError
from .optimizer import Optimizer, check_number


class RMSprop(Optimizer):
    """RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False)."""

    HYPER = ("lr", "alpha", "eps", "momentum", "weight_decay", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False):
        super().__init__(params, lr, alpha=alpha, eps=eps, momentum=momentum,
                         weight_decay=weight_decay, centered=centered)

    def _check_hyper(self, h: dict) -> dict:
        out = super()._check_hyper(h)
        out["alpha"] = check_number("RMSprop", "alpha", h["alpha"], lo=0.0, hi=1.0, hi_open=True)
        out["eps"] = check_number("RMSprop", "eps", h["eps"], lo=0.0, lo_open=True)
        out["momentum"] = check_number("RMSprop", "momentum", h["momentum"], lo=0.0, hi=1.0, hi_open=True)
        out["weight_decay"] = check_number("RMSprop", "weight_decay", h["weight_decay"], lo=0.0)
        if not isinstance(h["centered"], bool):
            raise GpunetTypeError(f"RMSprop: centered expected a bool, got {h['centered']!r}")
        out["centered"] = h["centered"]
        return out

    def _buffer_names(self, hyper: dict) -> tuple:
        return (("square_avg",) + (("momentum_buffer",) if hyper["momentum"] else ())
                + (("grad_avg",) if hyper["centered"] else ()))

    def _update(self, i, p, h):
        w, xp = p.data, backend.xp_of(p.data)
        g = self._l2_grad(p, h["weight_decay"])
        a = h["alpha"]
        s = self._buffer(i, "square_avg")
        tmp = xp.multiply(g, g)  # the one scratch array of this update
        tmp *= 1.0 - a
        s *= a
        s += tmp
        if h["centered"]:
            gbar = self._buffer(i, "grad_avg")
            xp.multiply(g, 1.0 - a, out=tmp)
            gbar *= a
            gbar += tmp
            xp.multiply(gbar, gbar, out=tmp)
            xp.subtract(s, tmp, out=tmp)
            xp.maximum(tmp, 0.0, out=tmp)
            xp.sqrt(tmp, out=tmp)
        else:
            xp.sqrt(s, out=tmp)
        tmp += h["eps"]
        xp.divide(g, tmp, out=tmp)  # g / a
        if h["momentum"]:
            b = self._buffer(i, "momentum_buffer")
            b *= h["momentum"]
            b += tmp
            xp.multiply(b, h["lr"], out=tmp)
        else:
            tmp *= h["lr"]
        w -= tmp
