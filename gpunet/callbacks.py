"""Training callbacks (Keras's surface): on_train_begin/end, on_epoch_begin/end, on_batch_end,
and on_before_optimizer_step. RichProgress is the progress bar of `fit(verbose=True)` in a
terminal; PlainProgress prints plain lines instead when stdout is a pipe or a log file.
CSVLogger and TensorBoardLogger write the epoch records for plotting tools.

`on_before_optimizer_step(step)` fires once per step when the gradients are final (after
the data-parallel reduction) and the optimizer has not yet applied them: the place to
read or change gradients. `on_batch_end(step, logs)` fires after every optimizer step. Its `logs` hold
"epoch", "batch" (index in the epoch), "step" (global) and "size" every time;
"loss", "accuracy" and "samples_per_s" (running means over the epoch so far) appear
only at the trainer's logging points, because reading them is a device sync.
`on_epoch_end(epoch, logs)` gets the finished epoch's full record (History fields).
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

from .fileio import append_bytes, atomic_write_bytes
from .errors import GpunetValueError


class Callback:
    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_before_optimizer_step(self, step, logs=None): ...
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

    def on_before_optimizer_step(self, step, logs=None):
        for cb in self.callbacks:
            cb.on_before_optimizer_step(step, logs)

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


def _hms(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _RunClock:
    """The whole run's ETA: seconds per step so far times the steps left in every epoch."""

    def __init__(self, epochs: int, steps_per_epoch: int, clock=time.monotonic):
        self.epochs, self.steps, self.clock = epochs, steps_per_epoch, clock
        self.t0, self.done = None, 0

    def start(self):
        self.t0, self.done = self.clock(), 0

    def step(self):
        self.done += 1

    def eta(self, epoch: int, batch_done: int):
        """Seconds left after `batch_done` batches of epoch `epoch` (0-based); None before a step."""
        if not self.done:
            return None
        left = (self.epochs - epoch - 1) * self.steps + (self.steps - batch_done)
        return (self.clock() - self.t0) / self.done * max(left, 0)


def epoch_line(epoch: int, epochs: int, logs: dict, eta=None) -> str:
    """One epoch as a plain line of at most 80 columns (up to 999 epochs)."""
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key, label in (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc")):
        if logs.get(key) is not None:
            parts.append(f"{label} {logs[key]:.4f}")
    if eta is not None and epoch + 1 < epochs:
        parts.append(f"eta {_hms(eta)}")
    return " ".join(parts)


class PlainProgress(Callback):
    """Plain lines for pipes, CI logs and files: one per epoch, and one every `every_s`
    seconds inside a long epoch (step, running loss when known, throughput, whole-run ETA).
    No device sync: it prints what the trainer's logging points already read."""

    def __init__(self, epochs: int, steps_per_epoch: int, stream=None, every_s: float = 10.0,
                 clock=time.monotonic):
        self.epochs, self.steps, self.every_s, self.clock = epochs, steps_per_epoch, every_s, clock
        self.stream = stream if stream is not None else sys.stdout
        self.run = _RunClock(epochs, steps_per_epoch, clock)
        self.last_line, self.last_loss = None, None

    def _print(self, text):
        print(text, file=self.stream, flush=True)
        self.last_line = self.clock()

    def on_train_begin(self, logs=None):
        self.run.start()
        self.last_line = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self.last_loss = None

    def on_batch_end(self, step, logs=None):
        logs = logs or {}
        self.run.step()
        if "loss" in logs:
            self.last_loss = logs["loss"]
        if self.clock() - self.last_line >= self.every_s:
            batch, epoch = logs.get("batch", 0) + 1, logs.get("epoch", 0)
            rate = self.run.done / max(self.clock() - self.run.t0, 1e-9)
            loss = f" loss {self.last_loss:.4f}" if self.last_loss is not None else ""
            self._print(f"epoch {epoch + 1}/{self.epochs} step {batch}/{self.steps}{loss} "
                        f"{rate:,.1f} steps/s eta {_hms(self.run.eta(epoch, batch))}")

    def on_epoch_end(self, epoch, logs=None):
        self._print(epoch_line(epoch, self.epochs, logs or {}, self.run.eta(epoch, self.steps)))


class RichProgress(Callback):
    """Updates on every step (cheap: no sync); the numbers refresh at the logging points.
    The bar fits 80 columns; the ETA is the whole run's; each finished epoch leaves a plain line."""

    def __init__(self, epochs: int, steps_per_epoch: int, console=None):
        from rich.console import Console  # here: `import gpunet.callbacks` stays light
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        self.epochs, self.steps = epochs, steps_per_epoch
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                                 BarColumn(bar_width=16), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TextColumn("eta {task.fields[eta]}"), console=self.console, transient=False)
        self.run = _RunClock(epochs, steps_per_epoch)
        self.task, self.epoch = None, 0

    def _stats(self, logs):
        parts = []
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
        if logs.get("accuracy") is not None:
            parts.append(f"acc {logs['accuracy']:.4f}")
        return " ".join(parts)

    def on_train_begin(self, logs=None):
        self.run.start()
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs,
                                           stats=self._stats({}), eta=_hms(self.run.eta(epoch, 0)))

    def on_batch_end(self, step, logs=None):
        logs = logs or {}
        self.run.step()
        batch = logs.get("batch", 0) + 1
        update = {"completed": batch, "eta": _hms(self.run.eta(self.epoch, batch))}
        if "loss" in logs:
            update["stats"] = self._stats(logs)
        self.progress.update(self.task, **update)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.remove_task(self.task)
        self.progress.console.print(epoch_line(epoch, self.epochs, logs or {}, self.run.eta(epoch, self.steps)),
                                    highlight=False)

    def on_train_end(self, logs=None):
        self.progress.stop()


class ClipGradNorm(Callback):
    """Clip the global gradient norm of the trainer's model to `max_norm` before every step
    (optim.clip_grad_norm: on the device, no host sync)."""

    def __init__(self, max_norm: float):
        if not (isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0):
            raise GpunetValueError(f"ClipGradNorm: max_norm expected a finite number > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def on_before_optimizer_step(self, step, logs=None):
        from .optim import clip_grad_norm
        clip_grad_norm(self.trainer.model.parameters(), self.max_norm)


class CSVLogger(Callback):
    """One row per epoch (History.FIELDS) in a CSV file, for spreadsheets and pandas."""

    def __init__(self, path, append=False):
        self.path, self.append = Path(path), append

    def on_train_begin(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.append and self.path.is_file()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(History.FIELDS)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(["" if logs.get(k) is None else logs[k] for k in History.FIELDS])


class TensorBoardLogger(Callback):
    """TensorBoard event files (tensorboardX's writer): epoch scalars under epoch/, the running
    step loss under step/. `tensorboard --logdir runs/` plots them."""

    def __init__(self, logdir):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise GpunetValueError("TensorBoardLogger: tensorboardX is not installed: pip install tensorboardX "
                                   "(or, from the gpunet checkout, pip install \".[tensorboard]\")") from None
        self.writer = SummaryWriter(logdir=str(logdir))

    def on_batch_end(self, step, logs=None):
        if logs and "loss" in logs:
            self.writer.add_scalar("step/loss", logs["loss"], step + 1)

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(f"epoch/{k}", v, epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()
