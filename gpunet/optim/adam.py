"""Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019), PyTorch semantics.

At step t (g the gradient, w the weight; m and v start at zero):

    Adam:  g ← g + weight_decay · w                 (L2 folded into the gradient)
    AdamW: w ← w − lr · weight_decay · w            (decoupled decay, before the update)
    m ← β₁ m + (1 − β₁) g
    v ← β₂ v + (1 − β₂) g²
    w ← w − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)
    amsgrad:  v̂max ← max(v̂max, v), used in place of v in the step  (Reddi et al. 2018,
              "On the convergence of Adam and beyond"; PyTorch's form, v̂max starts at 0)

With Adam's L2 the decay term is divided by √v like the gradient, so weights with
large gradients are decayed less; AdamW's decoupled decay shrinks every weight by the
same factor (1 − lr·weight_decay) per step.
"""
from __future__ import annotations

import math

from .. import backend
from ..errors import GpunetTypeError
from ..ops.optim_step import adam_moments_xp, adam_step_unchecked
from .optimizer import Optimizer, check_number


def check_betas(name, h, out):
    betas = h["betas"]
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise GpunetTypeError(f"{name}: betas expected a pair (beta1, beta2), got {betas!r}")
    # A list, not a tuple: the state dict round-trips through JSON unchanged.
    out["betas"] = [check_number(name, f"betas[{k}]", b, lo=0.0, hi=1.0, hi_open=True)
                    for k, b in enumerate(betas)]
    out["eps"] = check_number(name, "eps", h["eps"], lo=0.0, lo_open=True)
    out["weight_decay"] = check_number(name, "weight_decay", h["weight_decay"], lo=0.0)
    return out


def check_bool(name, arg, value):
    if not isinstance(value, bool):
        raise GpunetTypeError(f"{name}: {arg} expected a bool, got {value!r}")
    return value


class _AdamMoments(Optimizer):
    """What Adam, AdamW, RAdam and NAdam share: betas, eps and weight_decay plus one bool
    hyperparameter (FLAG), the weight decay and the m and v updates."""

    FLAG = "amsgrad"

    def _check_hyper(self, h: dict) -> dict:
        name = type(self).__name__
        out = check_betas(name, h, super()._check_hyper(h))
        out[self.FLAG] = check_bool(name, self.FLAG, h[self.FLAG])
        return out

    def _moments(self, i, p, h, decoupled):
        """Weight decay (decoupled: w ← w·(1 − lr·wd) now; else L2 into g), then m and v
        updated in place; returns (g, m, v, tmp), tmp the one scratch array of the update."""
        w = p.data
        if decoupled and h["weight_decay"]:
            w *= 1.0 - h["lr"] * h["weight_decay"]
        g = p.grad if decoupled else self._l2_grad(p, h["weight_decay"])
        m, v = self._buffer(i, "exp_avg"), self._buffer(i, "exp_avg_sq")
        return g, m, v, adam_moments_xp(g, m, v, *h["betas"])


class Adam(_AdamMoments):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, fused=False);
    L2 decay. fused=True: flat buffers and one fused update per parameter group (see fused.py)."""

    HYPER = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    ADDED_HYPER = {"amsgrad": False}
    DECOUPLED = False
    FUSABLE = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 fused=False):
        super().__init__(params, lr, fused=fused, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

    def _buffer_names(self, hyper: dict) -> tuple:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if hyper["amsgrad"] else ())

    def _update(self, i, p, h):
        w, xp = p.data, backend.xp_of(p.data)
        _, m, v, tmp = self._moments(i, p, h, self.DECOUPLED)
        b1, b2 = h["betas"]
        # Bias corrections are host floats from the step count: no device value is read.
        t = self.step_count
        step_size = h["lr"] / (1.0 - b1 ** t)
        if h["amsgrad"]:
            vmax = self._buffer(i, "max_exp_avg_sq")
            xp.maximum(vmax, v, out=vmax)
            v = vmax
        xp.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - b2 ** t)
        tmp += h["eps"]
        xp.divide(m, tmp, out=tmp)
        tmp *= step_size
        w -= tmp


    def _fused_update(self, layout, h, gi, w, g, state):
        adam_step_unchecked(w, g, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                            lr=h["lr"], betas=h["betas"], eps=h["eps"], weight_decay=h["weight_decay"],
                            decoupled=self.DECOUPLED, step=self.step_count)


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, fused=False);
    decoupled."""

    DECOUPLED = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 fused=False):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         fused=fused)

