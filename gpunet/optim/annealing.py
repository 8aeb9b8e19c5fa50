"""More learning-rate schedules, each `lr_at(t, base_lr)` as PyTorch's scheduler of the same
role computes it at its t-th step (checked against torch.optim.lr_scheduler in float64).

    MultiStep(milestones, gamma=0.1)   lr = base · gamma^(number of milestones ≤ t)
    Polynomial(total, power=1.0)       lr = base · (1 − min(t, total)/total)^power
    CosineWarmRestarts(T_0, T_mult=1, eta_min=0.0)
                                       lr = eta_min + (base − eta_min)(1 + cos(π·T_cur/T_i))/2,
                                       restarting after T_0, T_0·T_mult, T_0·T_mult², ... counts
                                       (SGDR: Loshchilov & Hutter 2017)
    OneCycle(total_steps, max_lr=None, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
             final_div_factor=1e4, three_phase=False, cycle_momentum=True,
             base_momentum=0.85, max_momentum=0.95)
                                       warm up from max_lr/div_factor to max_lr over pct_start of
                                       the steps, then anneal to max_lr/(div_factor·final_div_factor)
                                       (Smith & Topin 2019, "Super-convergence"); max_lr=None takes
                                       the optimizer's lr (each group's own) as the peak.

OneCycle also cycles momentum inversely to the lr (SGD's momentum, or Adam's β₁), as
PyTorch does by default; the Scheduler applies it, so it must be the Scheduler's own
schedule (cycle_momentum=False lets it sit inside a Chain or after a warmup).
"""
from __future__ import annotations

import math

from ..errors import GpunetTypeError, GpunetValueError
from .optimizer import check_number
from ..argcheck import positive_int as _check_count
from .schedules import Schedule, _check_t


class MultiStep(Schedule):
    name = "multistep"

    def __init__(self, milestones, gamma: float = 0.1):
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise GpunetTypeError(f"MultiStep: milestones expected a list of ints, got {milestones!r}")
        ms = [_check_count("MultiStep", "milestones[]", m) for m in milestones]
        if not ms:
            raise GpunetValueError("MultiStep: milestones expected at least one int >= 1, got none")
        self.milestones = sorted(ms)  # a repeated milestone decays twice, as in PyTorch
        self.gamma = check_number("MultiStep", "gamma", gamma, lo=0.0, lo_open=True)

    def lr_at(self, t, base_lr):
        t = _check_t(t)
        return float(base_lr) * self.gamma ** sum(1 for m in self.milestones if m <= t)

    def config(self):
        return {"name": self.name, "milestones": list(self.milestones), "gamma": self.gamma}


class Polynomial(Schedule):
    """PyTorch's PolynomialLR: decays to 0 at `total` and stays there."""

    name = "polynomial"

    def __init__(self, total: int, power: float = 1.0):
        self.total = _check_count("Polynomial", "total", total)
        self.power = check_number("Polynomial", "power", power, lo=0.0, lo_open=True)

    def lr_at(self, t, base_lr):
        t = min(_check_t(t), self.total)
        return float(base_lr) * (1.0 - t / self.total) ** self.power

    def config(self):
        return {"name": self.name, "total": self.total, "power": self.power}


class CosineWarmRestarts(Schedule):
    """PyTorch's CosineAnnealingWarmRestarts; eta_min is an absolute lr."""

    name = "cosine_restarts"

    def __init__(self, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        self.T_0 = _check_count("CosineWarmRestarts", "T_0", T_0)
        self.T_mult = _check_count("CosineWarmRestarts", "T_mult", T_mult)
        self.eta_min = check_number("CosineWarmRestarts", "eta_min", eta_min, lo=0.0)

    def _position(self, t):
        """(T_cur, T_i): counts since the last restart and the current period length."""
        T_i = self.T_0
        if self.T_mult == 1:
            return t % T_i, T_i
        while t >= T_i:  # integer arithmetic: exact at any t (PyTorch steps T_cur the same way)
            t -= T_i
            T_i *= self.T_mult
        return t, T_i

    def lr_at(self, t, base_lr):
        T_cur, T_i = self._position(_check_t(t))
        return self.eta_min + (float(base_lr) - self.eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2

    def config(self):
        return {"name": self.name, "T_0": self.T_0, "T_mult": self.T_mult, "eta_min": self.eta_min}


def _anneal_cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start, end, pct):
    return (end - start) * pct + start


class OneCycle(Schedule):
    """The 1cycle policy, step by step (unit="step"); t runs from 0 to total_steps."""

    name = "onecycle"
    ANNEAL = {"cos": _anneal_cos, "linear": _anneal_linear}

    def __init__(self, total_steps: int, max_lr=None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95):
        own = "OneCycle"
        self.total_steps = _check_count(own, "total_steps", total_steps, minimum=2)
        self.max_lr = None if max_lr is None else check_number(own, "max_lr", max_lr, lo=0.0, lo_open=True)
        self.pct_start = check_number(own, "pct_start", pct_start, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if anneal_strategy not in self.ANNEAL:
            raise GpunetValueError(f"{own}: anneal_strategy expected 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.div_factor = check_number(own, "div_factor", div_factor, lo=0.0, lo_open=True)
        self.final_div_factor = check_number(own, "final_div_factor", final_div_factor, lo=0.0, lo_open=True)
        for arg, v in (("three_phase", three_phase), ("cycle_momentum", cycle_momentum)):
            if not isinstance(v, bool):
                raise GpunetTypeError(f"{own}: {arg} expected a bool, got {v!r}")
        self.three_phase, self.cycle_momentum = three_phase, cycle_momentum
        self.base_momentum = check_number(own, "base_momentum", base_momentum, lo=0.0, hi=1.0, hi_open=True)
        self.max_momentum = check_number(own, "max_momentum", max_momentum, lo=0.0, hi=1.0, hi_open=True)
        ends = self._phase_ends()
        if any(b <= a for a, b in zip([0.0] + ends, ends)):
            raise GpunetValueError(f"{own}: pct_start={pct_start} with total_steps={total_steps} leaves an empty "
                                   f"phase (phase ends {ends}); raise total_steps or move pct_start")

    def _phase_ends(self):
        n, p = self.total_steps, self.pct_start
        if self.three_phase:
            return [float(p * n) - 1, float(2 * p * n) - 2, n - 1]
        return [float(p * n) - 1, n - 1]

    def _phase(self, t):
        """(phase index, pct through it), PyTorch's phase search."""
        t = _check_t(t)
        if t > self.total_steps:
            raise GpunetValueError(f"OneCycle: t expected at most total_steps={self.total_steps}, got {t}")
        start = 0.0
        ends = self._phase_ends()
        for i, end in enumerate(ends):
            if t <= end or i == len(ends) - 1:
                return i, (t - start) / (end - start)
            start = end

    def lr_at(self, t, base_lr):
        peak = float(base_lr) if self.max_lr is None else self.max_lr
        initial = peak / self.div_factor
        low = initial / self.final_div_factor
        points = [initial, peak, initial, low] if self.three_phase else [initial, peak, low]
        i, pct = self._phase(t)
        return self.ANNEAL[self.anneal_strategy](points[i], points[i + 1], pct)

    def momentum_at(self, t) -> float:
        """The momentum (or β₁) at t: max → base while the lr rises, back to max as it falls."""
        hi, lo = self.max_momentum, self.base_momentum
        points = [hi, lo, hi, hi] if self.three_phase else [hi, lo, hi]
        i, pct = self._phase(t)
        return self.ANNEAL[self.anneal_strategy](points[i], points[i + 1], pct)

    def config(self):
        return {"name": self.name, "total_steps": self.total_steps, "max_lr": self.max_lr,
                "pct_start": self.pct_start, "anneal_strategy": self.anneal_strategy,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                "three_phase": self.three_phase, "cycle_momentum": self.cycle_momentum,
                "base_momentum": self.base_momentum, "max_momentum": self.max_momentum}


def refuse_momentum_cycle(owner: str, schedule) -> None:
    """A schedule that sets momentum works only as the Scheduler's own schedule."""
    if getattr(schedule, "cycle_momentum", False):
        raise GpunetValueError(f"{owner}: {schedule!r} cycles momentum, which only the Scheduler applies; make it "
                               f"the Scheduler's own schedule or pass cycle_momentum=False")
