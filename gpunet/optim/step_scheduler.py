"""StepScheduler: the learning rate of every optimizer step of a fit, and its only writer.

It combines linear scaling over replicas, gradual warmup and the user's schedule (a
Schedule, a Scheduler or a ReduceLROnPlateau, which it adopts and detaches so that they
compute the lr and never write it), and sets every replica's optimizer.
"""
from __future__ import annotations

from ..errors import GpunetTypeError, GpunetValueError
from .optimizer import check_number
from .schedules import Scheduler, set_momentum


class StepScheduler:
    """The learning rate of every optimizer step of a fit, and the only writer of it.

    Built from the three things that shape it: linear scaling and gradual warmup (Goyal et
    al. 2017, as `linear_scaling_warmup`, here with the warmup counted in steps over a
    schedule counted in epochs) and the user's schedule:

        base   = scale · lr0                     lr0: the optimizer's lr at construction;
                                                 scale: the number of replicas under linear scaling, else 1
        target = scheduler.lr, or base           the user's Scheduler, stepped per epoch or per step
        lr     = start + (target − start) · min(1, (step + 1) / (warmup_epochs · steps_per_epoch)),
                 start = target / scale          (warmup_epochs > 0; else lr = target)

    `begin_step(step, steps_per_epoch)` sets the lr of the coming step on *every* optimizer
    in `optimizers` (one per data-parallel replica) whenever the computed value changes, so
    an lr assigned from outside (`set_lr`, or `optimizer.lr = ...` between fits) holds until
    the schedule moves on. `end_step()`/`end_epoch(logs)` advance the user's schedule; a
    schedule with a `monitor` (ReduceLROnPlateau) is stepped with that metric of the epoch's
    logs. A schedule that cycles momentum (OneCycle) has its momentum put on every optimizer too.
    """

    def __init__(self, optimizers, scale=1.0, warmup_epochs=0.0, schedule=None):
        self.optimizers = list(optimizers)
        self.scale = check_number("StepScheduler", "scale", scale, lo=0.0, lo_open=True)
        self.warmup_epochs = check_number("StepScheduler", "warmup_epochs", warmup_epochs, lo=0.0)
        self.unscaled_lrs = [float(g["lr"]) for g in self.optimizers[0].param_groups]
        self.unscaled_lr = self.unscaled_lrs[0]
        self.base_lrs = [lr * self.scale for lr in self.unscaled_lrs]
        self.base_lr = self.base_lrs[0]
        self.scheduler = self._adopt(schedule)
        self._steps_per_epoch, self._step = None, 0
        self._computed = None
        self._write(self.target())

    def _adopt(self, schedule):
        """A Scheduler that computes the user's schedule and leaves writing the lr to this object."""
        if schedule is None:
            return None
        from .plateau import ReduceLROnPlateau  # it imports this floor's optimizer module
        if isinstance(schedule, (Scheduler, ReduceLROnPlateau)):
            return schedule.detach().scale_by(self.scale)  # linear scaling reaches the user's schedule too
        if hasattr(schedule, "step") and hasattr(schedule, "state_dict"):
            raise GpunetTypeError(f"schedule: expected a gn.optim.Scheduler, ReduceLROnPlateau or a Schedule, got "
                                  f"{type(schedule).__name__}")
        return Scheduler(None, schedule, unit="epoch", base_lr=self.base_lrs)

    def target(self) -> list:
        """The scheduled lr of each parameter group (linear scaling included) before warmup."""
        return [float(lr) for lr in self.scheduler.lrs] if self.scheduler is not None else list(self.base_lrs)

    def lr_at_step(self, step: int, steps_per_epoch: int) -> list:
        """Each parameter group's lr at `step`."""
        target = self.target()
        if not self.warmup_epochs:
            return target
        t = min(1.0, (step + 1) / (self.warmup_epochs * steps_per_epoch))
        return [lr / self.scale + (lr - lr / self.scale) * t for lr in target]  # from the unscaled lr

    def _write(self, lrs) -> None:
        self._computed = lrs
        for opt in self.optimizers:
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr
        self._write_momentum()

    def _write_momentum(self) -> None:
        m = getattr(self.scheduler, "momentum", None)
        if m is not None:
            for opt in self.optimizers:
                set_momentum(opt, m)

    def begin_step(self, step: int, steps_per_epoch: int) -> float:
        """Set the lr of step `step` on every optimizer (when it changed); returns the lr in effect."""
        lr = self.lr_at_step(step, steps_per_epoch)
        if lr != self._computed:
            self._write(lr)
        return float(self.optimizers[0].lr)

    def end_step(self) -> None:
        if self.scheduler is not None and self.scheduler.unit == "step":
            self.scheduler.step()
            self._write_momentum()

    def end_epoch(self, logs=None) -> None:
        """Advance an epoch-unit schedule; a monitored one takes its metric from `logs`."""
        if self.scheduler is None or self.scheduler.unit != "epoch":
            return
        monitor = getattr(self.scheduler, "monitor", None)
        if monitor is None:
            self.scheduler.step()
        else:
            value = (logs or {}).get(monitor)
            if value is None:
                raise GpunetValueError(f"{type(self.scheduler).__name__}: monitor {monitor!r} is not in the epoch logs "
                                       f"{sorted(logs or {})}; pass val= to fit() to get val_* metrics")
            self.scheduler.step(value)
        self._write_momentum()

    def set_lr(self, lr) -> None:
        """Put `lr` on every optimizer now (e.g. a lower lr for a resumed run); it holds until
        the schedule or the warmup moves the lr on."""
        lr = check_number("StepScheduler", "lr", lr, lo=0.0)
        for opt in self.optimizers:
            opt.lr = lr

    def share(self) -> None:
        """Give every optimizer the first one's group lrs (an assignment made to it from outside)."""
        first = self.optimizers[0].param_groups
        for opt in self.optimizers[1:]:
            for g0, g in zip(first, opt.param_groups):
                g["lr"] = g0["lr"]

    def state_dict(self):
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state) -> None:
        """Restore the user's schedule (its lr goes on every optimizer, as Scheduler's own load
        does); without one, the optimizer's restored lr stays until the warmup moves it."""
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)
            self._write(self.target())
        else:
            self._computed = self.target()
            self.share()
