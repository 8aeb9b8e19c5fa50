"""RAdam (Liu et al. 2020) and NAdam (Dozat 2016), PyTorch semantics.

Both keep Adam's moments (m, v start at zero; step t = 1, 2, ...):

    m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
    weight decay: L2 (g ← g + wd·w), or with decoupled_weight_decay=True AdamW's
                  w ← w·(1 − lr·wd) before the update

RAdam, "On the variance of the adaptive learning rate and beyond": the adaptive step
is used only once its variance is tractable (ρ_t > 5), rectified by r_t:

    ρ∞ = 2/(1 − β₂) − 1,   ρ_t = ρ∞ − 2t·β₂ᵗ/(1 − β₂ᵗ)
    ρ_t > 5:  w ← w − lr · m/(1 − β₁ᵗ) · r_t · √(1 − β₂ᵗ)/(√v + eps),
              r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t))
    else:     w ← w − lr · m/(1 − β₁ᵗ)                         (SGD with momentum)

NAdam, "Incorporating Nesterov momentum into Adam", with the momentum schedule
μ_t = β₁(1 − ½·0.96^(t·ψ)) (ψ = momentum_decay) and Π_t = μ₁···μ_t:

    d = √(v / (1 − β₂ᵗ)) + eps
    w ← w − lr·(1 − μ_t)/(1 − Π_t) · g/d − lr·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m/d

Π_t is a host float (no device read). It is kept as a running product, as PyTorch
does, and rebuilt from the step count after load_state_dict or a copy; that rebuild
equals PyTorch's product unless β₁ or momentum_decay were changed during the run.
"""
from __future__ import annotations

import math

from .. import backend
from .adam import _AdamMoments
from .optimizer import check_number


class _AdamFamily(_AdamMoments):
    HYPER = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay")
    FLAG = "decoupled_weight_decay"

    def _buffer_names(self, hyper: dict) -> tuple:
        return ("exp_avg", "exp_avg_sq")


class RAdam(_AdamFamily):
    """RAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay)

    def _update(self, i, p, h):
        xp = backend.xp_of(p.data)
        _, m, v, tmp = self._moments(i, p, h, h["decoupled_weight_decay"])
        b1, b2 = h["betas"]
        t = self.step_count
        bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2 ** t / bc2
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            xp.sqrt(v, out=tmp)
            tmp += h["eps"]
            xp.divide(m, tmp, out=tmp)
            tmp *= h["lr"] / bc1 * rect * math.sqrt(bc2)
        else:
            xp.multiply(m, h["lr"] / bc1, out=tmp)
        p.data -= tmp


class NAdam(_AdamFamily):
    """NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
    decoupled_weight_decay=False)."""

    HYPER = _AdamFamily.HYPER + ("momentum_decay",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False):
        self._mu = []  # per group: (step, Π_step), the running product
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay)

    def _check_hyper(self, h: dict) -> dict:
        out = super()._check_hyper(h)
        out["momentum_decay"] = check_number("NAdam", "momentum_decay", h["momentum_decay"], lo=0.0)
        return out

    @staticmethod
    def _mu_t(h, t):
        return h["betas"][0] * (1.0 - 0.5 * 0.96 ** (t * h["momentum_decay"]))

    def step(self) -> None:
        t = self.step_count + 1
        mus = {}
        for k, g in enumerate(self.param_groups):
            if k < len(self._mu) and self._mu[k][0] == t - 1:
                prod = self._mu[k][1] * self._mu_t(g, t)
            else:  # first step, or after a load/copy: rebuild Π_t from the step count
                prod = 1.0
                for s in range(1, t + 1):
                    prod *= self._mu_t(g, s)
            mus[id(g)] = (self._mu_t(g, t), self._mu_t(g, t + 1), prod)
            self._mu[k:k + 1] = [(t, prod)]
        self._step_mu = mus
        super().step()

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        self._mu = []

    def _update(self, i, p, h):
        xp = backend.xp_of(p.data)
        g, m, v, tmp = self._moments(i, p, h, h["decoupled_weight_decay"])
        mu, mu_next, prod = self._step_mu[id(h)]
        t, lr = self.step_count, h["lr"]
        xp.divide(v, 1.0 - h["betas"][1] ** t, out=tmp)
        xp.sqrt(tmp, out=tmp)
        tmp += h["eps"]  # d
        p.data -= xp.divide(g, tmp) * (lr * (1.0 - mu) / (1.0 - prod))
        xp.divide(m, tmp, out=tmp)
        tmp *= lr * mu_next / (1.0 - prod * mu_next)
        p.data -= tmp
