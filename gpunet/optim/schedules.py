"""Learning-rate schedules as small composable objects, and the Scheduler that applies one.

A schedule maps a count t = 0, 1, 2, ... (epochs or steps) and a base learning rate to
the learning rate at t: `lr_at(t, base_lr)`; `factor(t)` = lr_at(t, 1.0).

    Constant()                     lr = base
    StepLR(step_size, gamma=0.1)   lr = base · gamma^⌊t / step_size⌋
    Exponential(gamma)             lr = base · gamma^t
    Cosine(total, eta_min=0.0)     lr = eta_min + (base − eta_min)(1 + cos(π·min(t, total)/total))/2
                                   (eta_min is an absolute lr, as PyTorch; held after `total`)
    LinearWarmup(warmup, start_factor=0.0, after=None)
                                   t < warmup: lr = L₀ · (start_factor + (1 − start_factor)·t/warmup)
                                   t ≥ warmup: lr = after.lr_at(t − warmup, base)   (shifted)
                                   with L₀ = after.lr_at(0, base) (base if after is None)
    LinearScaling(k)               lr = k · base   (the linear scaling rule for k replicas)
    Chain(s1, s2, ...)             lr = s_n(...s2(s1(base)))  — each transforms the previous lr;
                                   for multiplicative schedules that is the product of factors

MultiStep, Polynomial, CosineWarmRestarts and OneCycle live in annealing.py, and
ReduceLROnPlateau (driven by a validation metric, not by t) in plateau.py.

The linear scaling rule with gradual warmup (Goyal et al. 2017, "Accurate, Large
Minibatch SGD"): with k replicas use lr·k, reached by a linear warmup from lr:
`linear_scaling_warmup(k, warmup=5, after=StepLR(30))`.

    sched = Scheduler(opt, Cosine(total=90), unit="epoch")
    for epoch in range(90):
        train_one_epoch(); sched.step()      # sets opt.lr; sched.lr is the current value
"""
from __future__ import annotations

import math
import numbers

from ..errors import CheckpointError, GpunetTypeError, GpunetValueError
from ..argcheck import non_negative_int, one_of, positive_int
from .optimizer import check_number

UNITS = ("epoch", "step")


def _check_t(t) -> int:
    return non_negative_int("schedule", "t", t)


class Schedule:
    """Base class: subclasses give `lr_at(t, base_lr)` and `config()` (JSON-able, with "name")."""

    name = "schedule"

    def lr_at(self, t: int, base_lr: float) -> float:
        raise NotImplementedError(f"{type(self).__name__}.lr_at")

    def factor(self, t: int) -> float:
        """The multiplier of the base lr at t (schedules with absolute parts use base 1)."""
        return self.lr_at(t, 1.0)

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    name = "constant"

    def lr_at(self, t, base_lr):
        _check_t(t)
        return float(base_lr)


class StepLR(Schedule):
    name = "step"

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = positive_int("StepLR", "step_size", step_size)
        self.gamma = check_number("StepLR", "gamma", gamma, lo=0.0, lo_open=True)

    def lr_at(self, t, base_lr):
        return float(base_lr) * self.gamma ** (_check_t(t) // self.step_size)

    def config(self):
        return {"name": self.name, "step_size": self.step_size, "gamma": self.gamma}


class Exponential(Schedule):
    name = "exponential"

    def __init__(self, gamma: float):
        self.gamma = check_number("Exponential", "gamma", gamma, lo=0.0, lo_open=True)

    def lr_at(self, t, base_lr):
        return float(base_lr) * self.gamma ** _check_t(t)

    def config(self):
        return {"name": self.name, "gamma": self.gamma}


class Cosine(Schedule):
    """Cosine annealing (Loshchilov & Hutter 2017, SGDR) from base to eta_min over `total`."""

    name = "cosine"

    def __init__(self, total: int, eta_min: float = 0.0):
        self.total = positive_int("Cosine", "total", total)
        self.eta_min = check_number("Cosine", "eta_min", eta_min, lo=0.0)

    def lr_at(self, t, base_lr):
        t = min(_check_t(t), self.total)
        return self.eta_min + (float(base_lr) - self.eta_min) * (1.0 + math.cos(math.pi * t / self.total)) / 2.0

    def config(self):
        return {"name": self.name, "total": self.total, "eta_min": self.eta_min}


class LinearWarmup(Schedule):
    """Linear ramp over `warmup` counts, then `after` shifted by `warmup` (Goyal et al. 2017)."""

    name = "warmup"

    def __init__(self, warmup: int, start_factor: float = 0.0, after: Schedule | None = None):
        self.warmup = positive_int("LinearWarmup", "warmup", warmup, 0)
        self.start_factor = check_number("LinearWarmup", "start_factor", start_factor, lo=0.0, hi=1.0)
        if isinstance(after, dict):
            after = from_config(after)
        if after is not None and not isinstance(after, Schedule):
            raise GpunetTypeError(f"LinearWarmup: after expected a Schedule or None, got {type(after).__name__}")
        from .annealing import refuse_momentum_cycle
        refuse_momentum_cycle("LinearWarmup", after)
        self.after = after

    def _after(self, t, base_lr):
        return float(base_lr) if self.after is None else self.after.lr_at(t, base_lr)

    def lr_at(self, t, base_lr):
        t = _check_t(t)
        if t >= self.warmup:
            return self._after(t - self.warmup, base_lr)
        # Ramp towards where `after` starts, so the curve is continuous at t = warmup.
        frac = self.start_factor + (1.0 - self.start_factor) * t / self.warmup
        return self._after(0, base_lr) * frac

    def config(self):
        return {"name": self.name, "warmup": self.warmup, "start_factor": self.start_factor,
                "after": None if self.after is None else self.after.config()}


class LinearScaling(Schedule):
    """The linear scaling rule: lr × k for k replicas (k times the global batch)."""

    name = "linear_scaling"

    def __init__(self, k: float):
        self.k = check_number("LinearScaling", "k", k, lo=0.0, lo_open=True)

    def lr_at(self, t, base_lr):
        _check_t(t)
        return linear_scaling(base_lr, self.k)

    def config(self):
        return {"name": self.name, "k": self.k}


class Chain(Schedule):
    """Schedules applied in turn, each to the lr the previous one produced."""

    name = "chain"

    def __init__(self, *schedules: Schedule):
        if len(schedules) == 1 and isinstance(schedules[0], (list, tuple)):
            schedules = tuple(schedules[0])
        if not schedules:
            raise GpunetValueError("Chain: expected at least one schedule, got none")
        parts = []
        for i, s in enumerate(schedules):
            s = from_config(s) if isinstance(s, dict) else s
            if not isinstance(s, Schedule):
                raise GpunetTypeError(f"Chain: schedules[{i}] expected a Schedule, got {type(s).__name__}")
            from .annealing import refuse_momentum_cycle
            refuse_momentum_cycle("Chain", s)
            parts.append(s)
        self.schedules = tuple(parts)

    def lr_at(self, t, base_lr):
        lr = float(base_lr)
        for s in self.schedules:
            lr = s.lr_at(t, lr)
        return lr

    def config(self):
        return {"name": self.name, "schedules": [s.config() for s in self.schedules]}


Compose = Chain


def linear_scaling(lr: float, k: float) -> float:
    """lr × k: the learning rate for k replicas (or a k times larger batch), Goyal et al. 2017."""
    lr = check_number("linear_scaling", "lr", lr, lo=0.0)
    return lr * check_number("linear_scaling", "k", k, lo=0.0, lo_open=True)


def linear_scaling_warmup(k: float, warmup: int, after: Schedule | None = None) -> Chain:
    """Goyal et al.'s recipe: scale the lr by k, and warm up linearly from the unscaled lr."""
    k = check_number("linear_scaling_warmup", "k", k, lo=0.0, lo_open=True)
    return Chain(LinearScaling(k), LinearWarmup(warmup, start_factor=min(1.0, 1.0 / k), after=after))


# ---------------------------------------------------------------- by name

SCHEDULES = {"constant": Constant, "step": StepLR, "exponential": Exponential, "cosine": Cosine,
             "warmup": LinearWarmup, "linear_scaling": LinearScaling, "chain": Chain}


def get(name: str, **kw) -> Schedule:
    """A schedule by name (a key of SCHEDULES: "constant", "step", "multistep", "cosine", ...)."""
    cls = SCHEDULES[one_of("schedule", "name", name.lower() if isinstance(name, str) else name, sorted(SCHEDULES))]
    if cls is Chain:
        return Chain(*kw.pop("schedules", ()), **kw)
    return cls(**kw)


def from_config(cfg: dict) -> Schedule:
    """Rebuild a schedule from its `config()` dict."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise GpunetValueError(f"schedule config: expected a dict with a 'name', got {cfg!r}")
    kw = {k: v for k, v in cfg.items() if k != "name"}
    return get(cfg["name"], **kw)


# ---------------------------------------------------------------- applying a schedule

def set_momentum(optimizer, m) -> None:
    """Put a cycled momentum on every parameter group: `momentum`, or Adam's β₁."""
    for g in optimizer.param_groups:
        if "betas" in g:
            g["betas"] = [m, g["betas"][1]]
        else:
            g["momentum"] = m


class Scheduler:
    """Sets each parameter group's lr to `schedule.lr_at(t, base_lr)`; `step()` advances t by one.

    base_lrs are the groups' lrs at construction (base_lr the first), so groups keep
    their own scale, as PyTorch's schedulers do; with optimizer=None, `base_lr=` (a number, or
    one per group) gives the base lrs of a schedule that only computes `lrs` (and `momentum`),
    as the Trainer's StepScheduler uses it. `unit` ("epoch" or "step") tells the
    trainer when to call `step()`: after each epoch or after each optimizer step.
    The lr for t = 0 is applied at construction, as PyTorch's schedulers do. A schedule
    that cycles momentum (OneCycle) also sets each group's momentum, or Adam's β₁.
    """

    def __init__(self, optimizer, schedule, unit: str = "epoch", *, base_lr=None):
        if optimizer is None and base_lr is None:
            raise GpunetValueError("Scheduler: base_lr expected a number when optimizer is None, got None")
        if optimizer is not None and not hasattr(optimizer, "lr"):
            raise GpunetTypeError(f"Scheduler: optimizer expected an object with an lr, got {type(optimizer).__name__}")
        if isinstance(schedule, str):
            schedule = get(schedule)
        if not isinstance(schedule, Schedule):
            raise GpunetTypeError(f"Scheduler: schedule expected a Schedule or a name, got {type(schedule).__name__}")
        one_of("Scheduler", "unit", unit, UNITS)
        groups = getattr(optimizer, "param_groups", None)
        if optimizer is not None and getattr(schedule, "cycle_momentum", False) and not (
                groups and all("momentum" in g or "betas" in g for g in groups)):
            raise GpunetValueError(f"Scheduler: {schedule!r} cycles momentum, so the optimizer expected a "
                                   f"momentum or betas hyperparameter, got {type(optimizer).__name__}; "
                                   f"pass cycle_momentum=False")
        self.optimizer, self.schedule, self.unit = optimizer, schedule, unit
        if base_lr is not None and optimizer is None:
            bases = list(base_lr) if isinstance(base_lr, (list, tuple)) else [base_lr]
            self.base_lrs = [float(check_number("Scheduler", "base_lr", b, lo=0.0)) for b in bases]
        else:
            self.base_lrs = [float(g["lr"]) for g in groups] if groups else [float(optimizer.lr)]
        self.base_lr = self.base_lrs[0]
        self.t = 0
        self._apply()

    def _apply(self) -> None:
        self.lrs = lrs = [self.schedule.lr_at(self.t, b) for b in self.base_lrs]
        self.lr = lrs[0]
        self.momentum = self.schedule.momentum_at(self.t) if getattr(self.schedule, "cycle_momentum", False) \
            else None
        if self.optimizer is None:
            return
        groups = getattr(self.optimizer, "param_groups", None)
        if groups:
            for g, lr in zip(groups, lrs):
                g["lr"] = lr
        else:
            self.optimizer.lr = lrs[0]
        if self.momentum is not None:
            set_momentum(self.optimizer, self.momentum)

    def scale_by(self, factor: float) -> "Scheduler":
        """Multiply the base lrs by `factor` (linear scaling over replicas) and re-apply."""
        if factor != 1:
            self.base_lrs = [b * factor for b in self.base_lrs]
            self.base_lr = self.base_lrs[0]
            self._apply()
        return self

    def detach(self) -> "Scheduler":
        """Stop writing the optimizer's lr and momentum: a `StepScheduler` (the Trainer's)
        reads `lr` and `momentum` instead and writes them on every replica's optimizer."""
        self.optimizer = None
        return self

    def step(self) -> float:
        """Advance one epoch/step and set the optimizer's lr; returns the new lr (the first group's)."""
        self.t += 1
        self._apply()
        return self.lr

    def state_dict(self) -> dict:
        return {"type": "Scheduler", "unit": self.unit, "t": self.t, "base_lr": self.base_lr,
                "base_lrs": list(self.base_lrs), "schedule": self.schedule.config()}

    def load_state_dict(self, d: dict) -> None:
        """Restore t and the base lrs (and re-apply the lr). The schedule and unit must match."""
        self.check_state_dict(d)
        bases = d.get("base_lrs", [d.get("base_lr")])  # older state dicts hold base_lr only
        self.t, self.base_lrs = int(d["t"]), [float(b) for b in bases]
        self.base_lr = self.base_lrs[0]
        self._apply()

    def check_state_dict(self, d: dict) -> None:
        """Raise CheckpointError unless `d` fits this scheduler; changes nothing."""
        problems = []
        if not isinstance(d, dict) or d.get("type") != "Scheduler":
            raise CheckpointError(f"Scheduler.load_state_dict: expected a Scheduler state dict, got {d!r}")
        if d.get("schedule") != self.schedule.config():
            problems.append(f"schedule: expected {self.schedule.config()}, got {d.get('schedule')}")
        if d.get("unit") != self.unit:
            problems.append(f"unit: expected {self.unit!r}, got {d.get('unit')!r}")
        t = d.get("t")
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            problems.append(f"t: expected a non-negative int, got {t!r}")
        bases = d.get("base_lrs", [d.get("base_lr")])  # older state dicts hold base_lr only
        if not isinstance(bases, list) or len(bases) != len(self.base_lrs):
            problems.append(f"base_lrs: expected {len(self.base_lrs)} (one per parameter group), got {bases!r}")
        elif not all(not isinstance(b, bool) and isinstance(b, numbers.Real) and b >= 0 and math.isfinite(b)
                     for b in bases):
            problems.append(f"base_lr: expected finite non-negative numbers, got {bases!r}")
        if problems:
            raise CheckpointError("Scheduler.load_state_dict: " + "; ".join(problems))

    def __repr__(self):
        return f"Scheduler({self.schedule!r}, unit={self.unit!r}, t={self.t}, lr={self.lr:g})"


from .annealing import CosineWarmRestarts, MultiStep, OneCycle, Polynomial  # noqa: E402  (they subclass Schedule)

SCHEDULES.update({"multistep": MultiStep, "polynomial": Polynomial, "cosine_restarts": CosineWarmRestarts,
                  "onecycle": OneCycle})

from .step_scheduler import StepScheduler  # noqa: E402,F401  (the Trainer's lr writer; it uses Scheduler)
