"""Training callbacks (Keras's surface): on_train_begin/end, on_epoch_begin/end, on_batch_end.

`on_batch_end(step, logs)` fires after every optimizer step. Its `logs` hold
"epoch", "batch" (index in the epoch), "step" (global) and "size" every time;
"loss", "accuracy" and "samples_per_s" (running means over the epoch so far) appear
only at the trainer's logging points, because reading them is a device sync.
`on_epoch_end(epoch, logs)` gets the finished epoch's full record (History fields).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .checkpoint import append_bytes, atomic_write_bytes
from .errors import GpunetValueError


class Callback:
    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_batch_end(self, step, logs=None): ...


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise GpunetValueError(f"callbacks: expected gn.callbacks.Callback instances, "
                                       f"got {type(cb).__name__}")

    def set_trainer(self, trainer):
        for cb in self.callbacks:
            cb.set_trainer(trainer)

    def on_train_begin(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_batch_end(self, step, logs=None):
        for cb in self.callbacks:
            cb.on_batch_end(step, logs)


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise GpunetValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    return mode


def _improved(value, best, mode, min_delta=0.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, monitor="val_loss", patience=3, min_delta=0.0, mode="auto"):
        if patience < 0:
            raise GpunetValueError(f"EarlyStopping: patience expected >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.mode = _monitor_mode(monitor, mode)
        self.best, self.wait, self.stopped_epoch = None, 0, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise GpunetValueError(f"EarlyStopping: monitor {self.monitor!r} is not in the epoch logs "
                                   f"{sorted(logs or {})}; pass val= to fit() to get val_* metrics")
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.stopped_epoch = epoch
                self.trainer.stop_training = True


class ModelCheckpoint(Callback):
    """Write `checkpoint-last.npz` every epoch (and every `every_n_steps` steps, if set)
    and `checkpoint-best.npz` whenever `monitor` improves. Writes are atomic."""

    def __init__(self, dirpath, monitor="val_accuracy", mode="auto", save_best=True, every_n_steps=None):
        self.dir = Path(dirpath)
        self.monitor, self.mode = monitor, _monitor_mode(monitor, mode)
        self.save_best, self.every_n_steps, self.best = save_best, every_n_steps, None
        if every_n_steps is not None and every_n_steps < 1:
            raise GpunetValueError(f"ModelCheckpoint: every_n_steps expected >= 1 or None, got {every_n_steps}")

    @property
    def last_path(self) -> Path:
        return self.dir / "checkpoint-last.npz"

    @property
    def best_path(self) -> Path:
        return self.dir / "checkpoint-best.npz"

    def on_batch_end(self, step, logs=None):
        if self.every_n_steps and (step + 1) % self.every_n_steps == 0 and not self.trainer.stop_training:
            self.trainer.save(self.last_path, best=self.best)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        monitor = self.monitor if self.monitor in logs else self.monitor.replace("val_", "")
        value = logs.get(monitor)
        if self.save_best and _improved(value, self.best, self.mode):
            self.best = value
            self.trainer.save(self.best_path, best=self.best)
        self.trainer.save(self.last_path, best=self.best)


class JSONLLogger(Callback):
    """One JSON line per epoch ({"kind": "epoch", ...}) plus sparse step lines at logging points."""

    def __init__(self, path, append=False):
        self.path = Path(path)
        self.append = append

    def on_train_begin(self, logs=None):
        if not self.append:
            atomic_write_bytes(self.path, b"")

    def _write(self, record):
        append_bytes(self.path, (json.dumps(record) + "\n").encode())

    def on_batch_end(self, step, logs=None):
        if logs and "loss" in logs:
            self._write({"kind": "step", **logs})

    def on_epoch_end(self, epoch, logs=None):
        self._write({"kind": "epoch", **(logs or {})})


class CSVLogger(Callback):
    """One CSV row per epoch with the History fields."""

    def __init__(self, path, append=False):
        self.path = Path(path)
        self.append = append

    def on_train_begin(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.append and self.path.exists():
            self.path.unlink()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(logs))
            if new:
                w.writeheader()
            w.writerow(logs)


class LRScheduleCallback(Callback):
    """Steps an `optim.Scheduler` at the end of each epoch (unit="epoch") or each step."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def on_batch_end(self, step, logs=None):
        if getattr(self.scheduler, "unit", "epoch") == "step":
            self.scheduler.step()

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.scheduler, "unit", "epoch") == "epoch":
            self.scheduler.step()


class History(Callback):
    """Per-epoch records: loss, accuracy, val_loss, val_accuracy, lr, seconds, samples_per_s."""

    FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s")

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs or {}))

    @property
    def history(self) -> dict:
        """Keras-style {field: [value per epoch]}."""
        keys = [k for k in self.FIELDS if any(k in e for e in self.epochs)]
        return {k: [e.get(k) for e in self.epochs] for k in keys}

    def __getattr__(self, name):
        if name in History.FIELDS:
            return [e.get(name) for e in self.__dict__.get("epochs", [])]
        raise AttributeError(name)

    def __len__(self):
        return len(self.epochs)

    def to_json(self, path) -> None:
        atomic_write_bytes(path, json.dumps(self.epochs, indent=1).encode())
