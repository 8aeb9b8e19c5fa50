"""ReduceLROnPlateau: lower the lr when a validation metric stops improving (PyTorch semantics).

After each epoch, step(metric):

    better:  mode "min": metric < best·(1 − threshold)  ("rel")  or  metric < best − threshold  ("abs")
             mode "max": metric > best·(1 + threshold)  ("rel")  or  metric > best + threshold  ("abs")
    better → best = metric, bad = 0;   else bad += 1
    during cooldown bad epochs are not counted
    bad > patience → every group: lr ← max(lr·factor, min_lr), applied only when it lowers the
                     lr by more than eps; then cooldown starts and bad = 0

In a Trainer it steps at each epoch's end with the epoch log's `monitor` value
("val_loss" by default, so pass val= to fit()); a missing metric raises.
"""
from __future__ import annotations

import math
import numbers

from ..errors import CheckpointError, GpunetTypeError, GpunetValueError
from .optimizer import check_number

MODES, THRESHOLD_MODES = ("min", "max"), ("rel", "abs")


class ReduceLROnPlateau:
    """ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
    threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8, monitor="val_loss")."""

    unit = "epoch"

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8, monitor="val_loss"):
        own = "ReduceLROnPlateau"
        groups = getattr(optimizer, "param_groups", None)
        if not groups:
            raise GpunetTypeError(f"{own}: optimizer expected a gn.optim optimizer, got {type(optimizer).__name__}")
        if mode not in MODES or threshold_mode not in THRESHOLD_MODES:
            raise GpunetValueError(f"{own}: mode expected one of {MODES} and threshold_mode one of "
                                   f"{THRESHOLD_MODES}, got {mode!r} and {threshold_mode!r}")
        self.factor = check_number(own, "factor", factor, lo=0.0, hi=1.0, hi_open=True)
        for arg, v in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise GpunetValueError(f"{own}: {arg} expected an int >= 0, got {v!r}")
        self.threshold = check_number(own, "threshold", threshold, lo=0.0)
        self.eps = check_number(own, "eps", eps, lo=0.0)
        mins = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * len(groups)
        if len(mins) != len(groups):
            raise GpunetValueError(f"{own}: min_lr expected a number or one per parameter group "
                                   f"({len(groups)}), got {len(mins)}")
        self.min_lrs = [check_number(own, "min_lr", m, lo=0.0) for m in mins]
        if not isinstance(monitor, str) or not monitor:
            raise GpunetTypeError(f"{own}: monitor expected the name of an epoch-log metric, got {monitor!r}")
        self.optimizer, self.mode, self.threshold_mode = optimizer, mode, threshold_mode
        self.patience, self.cooldown, self.monitor = int(patience), int(cooldown), monitor
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = 0, 0, 0
        self.lr = float(optimizer.lr)
        self._lrs = None  # detached: the groups' lrs as this scheduler set them
        self.writes = True  # False once a Trainer's StepScheduler owns the lr (detach)

    def detach(self) -> "ReduceLROnPlateau":
        """Compute the groups' lrs (`lrs`) only, for the Trainer's StepScheduler to write on
        every replica's optimizer."""
        self.writes = False
        self._lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        return self

    def scale_by(self, factor: float) -> "ReduceLROnPlateau":
        """Multiply the lrs it tracks (and min_lr) by `factor`: linear scaling over replicas."""
        if factor != 1:
            if not self.writes:
                self._lrs = [lr * factor for lr in self._lrs]
            self.min_lrs = [m * factor for m in self.min_lrs]
            self.lr = self.lrs[0]
        return self

    @property
    def lrs(self) -> list:
        """Each group's lr: the optimizer's, or (detached) the ones this scheduler computed."""
        if self.writes:
            return [float(g["lr"]) for g in self.optimizer.param_groups]
        return list(self._lrs)

    def _is_better(self, a) -> bool:
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (self.best * (1.0 - self.threshold) if rel else self.best - self.threshold)
        return a > (self.best * (1.0 + self.threshold) if rel else self.best + self.threshold)

    def step(self, metric) -> float:
        """Record one epoch's metric (a host number, e.g. logs["val_loss"]); returns the first group's lr."""
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise GpunetTypeError(f"ReduceLROnPlateau.step: metric expected a number (the epoch's "
                                  f"{self.monitor}), got {type(metric).__name__} {metric!r}")
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):  # NaN is never better: it counts as a bad epoch
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            if self.writes:
                for g, floor in zip(self.optimizer.param_groups, self.min_lrs):
                    new = max(g["lr"] * self.factor, floor)
                    if g["lr"] - new > self.eps:
                        g["lr"] = new
            else:
                lrs = self.lrs
                for i, floor in enumerate(self.min_lrs):
                    new = max(lrs[i] * self.factor, floor)
                    if lrs[i] - new > self.eps:
                        lrs[i] = new
                self._lrs = lrs
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self.lr = self.lrs[0]
        return self.lr

    def config(self) -> dict:
        return {"name": "plateau", "mode": self.mode, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "threshold_mode": self.threshold_mode, "cooldown": self.cooldown,
                "min_lrs": self.min_lrs, "eps": self.eps, "monitor": self.monitor}

    def state_dict(self) -> dict:
        """JSON-able. The lrs themselves live in the optimizer's state dict."""
        return {"type": "ReduceLROnPlateau", "config": self.config(), "best": self.best,
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                "last_epoch": self.last_epoch, "lrs": None if self.writes else list(self._lrs)}

    def load_state_dict(self, d: dict) -> None:
        self.check_state_dict(d)
        self.best = float(d["best"])
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = (
            int(d[k]) for k in ("num_bad_epochs", "cooldown_counter", "last_epoch"))
        if not self.writes:  # detached: the lrs it computed (older state dicts: the optimizer's)
            lrs = d.get("lrs")
            self._lrs = [float(g["lr"]) for g in self.optimizer.param_groups] if lrs is None else list(lrs)
        self.lr = self.lrs[0]

    def check_state_dict(self, d: dict) -> None:
        """Raise CheckpointError unless `d` fits this scheduler; changes nothing."""
        if not isinstance(d, dict) or d.get("type") != "ReduceLROnPlateau":
            raise CheckpointError(f"ReduceLROnPlateau.load_state_dict: expected its state dict, got {d!r}")
        problems = []
        if d.get("config") != self.config():
            problems.append(f"config: expected {self.config()}, got {d.get('config')}")
        counts = {k: d.get(k) for k in ("num_bad_epochs", "cooldown_counter", "last_epoch")}
        for k, v in counts.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                problems.append(f"{k}: expected an int >= 0, got {v!r}")
        lrs = d.get("lrs")
        if lrs is not None and not (isinstance(lrs, list) and len(lrs) == len(self.min_lrs) and all(
                not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0 for v in lrs)):
            problems.append(f"lrs: expected None or {len(self.min_lrs)} lrs >= 0 (one per group), got {lrs!r}")
        best = d.get("best")
        if isinstance(best, bool) or not isinstance(best, numbers.Real):
            problems.append(f"best: expected a number, got {best!r}")
        if problems:
            raise CheckpointError("ReduceLROnPlateau.load_state_dict: " + "; ".join(problems))

    def __repr__(self):
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, lr={self.lr:g})")
