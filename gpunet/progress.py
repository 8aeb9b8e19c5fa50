"""A rich progress bar for Trainer.fit: epoch, step, samples/s, loss, accuracy, lr and ETA."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from .callbacks import Callback


class RichProgress(Callback):
    """Updates on every step (cheap: no sync); the numbers refresh at the logging points."""

    def __init__(self, epochs: int, steps_per_epoch: int, console: Console | None = None):
        self.epochs, self.steps = epochs, steps_per_epoch
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                                 BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self.task = None

    def _stats(self, logs):
        parts = []
        if "samples_per_s" in logs:
            parts.append(f"{logs['samples_per_s']:,.0f} samples/s")
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
        if logs.get("accuracy") is not None:
            parts.append(f"acc {logs['accuracy']:.4f}")
        if "val_accuracy" in logs and logs["val_accuracy"] is not None:
            parts.append(f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}")
        parts.append(f"lr {float(self.trainer.optimizer.lr):.3g}")
        return "  ".join(parts)

    def on_train_begin(self, logs=None):
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1,
                                           epochs=self.epochs, stats=self._stats({}))

    def on_batch_end(self, step, logs=None):
        logs = logs or {}
        update = {"completed": logs.get("batch", 0) + 1}
        if "loss" in logs:
            update["stats"] = self._stats(logs)
        self.progress.update(self.task, **update)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.update(self.task, completed=self.steps, stats=self._stats(logs or {}))

    def on_train_end(self, logs=None):
        self.progress.stop()
