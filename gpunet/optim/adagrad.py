"""Adagrad (Duchi, Hazan & Singer 2011), PyTorch semantics.

At step t (g the gradient, w the weight; s starts at initial_accumulator_value):

    g ← g + weight_decay · w                    (L2 folded into the gradient)
    lr_t = lr / (1 + (t − 1) · lr_decay)
    s ← s + g²
    w ← w − lr_t · g / (√s + eps)

A parameter group's own initial_accumulator_value is honoured (PyTorch fills every
group's accumulator with the constructor's value and ignores the group's).

Each weight's step shrinks with its own accumulated squared gradient: rarely
updated weights (rare features, embedding rows) keep large steps.
"""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, check_number


class Adagrad(Optimizer):
    """Adagrad(params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)."""

    HYPER = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

    def _check_hyper(self, h: dict) -> dict:
        out = super()._check_hyper(h)
        for k in ("lr_decay", "weight_decay", "initial_accumulator_value"):
            out[k] = check_number("Adagrad", k, h[k], lo=0.0)
        out["eps"] = check_number("Adagrad", "eps", h["eps"], lo=0.0, lo_open=True)
        return out

    def _buffer_names(self, hyper: dict) -> tuple:
        return ("sum",)

    def _update(self, i, p, h):
        w, xp = p.data, backend.xp_of(p.data)
        g = self._l2_grad(p, h["weight_decay"])
        s0 = h["initial_accumulator_value"]
        s = self._buffer(i, "sum", None if s0 == 0 else (lambda q: xp.full_like(q.data, s0)))
        tmp = xp.multiply(g, g)  # the one scratch array of this update
        s += tmp
        xp.sqrt(s, out=tmp)
        tmp += h["eps"]
        xp.divide(g, tmp, out=tmp)
        tmp *= h["lr"] / (1.0 + (self.step_count - 1) * h["lr_decay"])  # host float: no sync
        w -= tmp
