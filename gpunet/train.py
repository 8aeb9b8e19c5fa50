"""Trainer: Keras's `fit` ergonomics over gpunet's explicit forward/backward.

One step (through an engine: step.LocalEngine on one device, parallel.DataParallel over replicas):
           logits = model(x); loss = loss_fn.forward(logits, y);
           model.backward(loss_fn.backward()); callbacks.on_before_optimizer_step;
           optimizer.step(); optimizer.zero_grad()

The learning rate has one writer, the StepScheduler (optim/step_scheduler.py): linear
scaling, warmup and the user's schedule in one place, set on every replica.

Loss sums and correct counts accumulate **on the device**; the host reads them only
at logging points (`log_every` steps, default ~10 per epoch) and at epoch end, so the
hot loop never waits for the GPU. The reported loss includes regularization
penalties. Checkpoints carry everything `resume` needs to continue bit-exactly on
the CPU: weights, optimizer and scheduler state, epoch/step, the device RNG, History.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from . import backend
from . import precision as _precision
from .argcheck import non_negative, one_of
from .callbacks import CallbackList, History, RichProgress
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DataLoader, Dataset
from .errors import CheckpointError, GpunetError, GpunetTypeError, GpunetValueError, NonFiniteError
from .loss_scale import make_loss_scaler
from .optim.step_scheduler import StepScheduler
from .parallel.engine import REDUCES
from .parallel.process import make_engine
from .step import LocalEngine

METRICS = ("accuracy",)
LR_SCALINGS = ("none", "linear")


class Trainer:
    """Fit `model` with `loss` and `optimizer`; every step goes through an engine
    (step.LocalEngine on one device, parallel.DataParallel with `devices=`).

    schedule: an `optim.Scheduler` (stepped per its unit), or a Schedule (stepped per epoch).
    The Trainer's `lr` (an optim.StepScheduler) is the only writer of the learning rate: it
    combines linear scaling, warmup and the schedule, and sets every replica's optimizer.
    `set_lr(lr)` puts a new lr on all of them (it holds until the schedule moves on).
    log_every: steps between host syncs for progress and live checks (None: ~10 per epoch).

    Data parallel: `devices=[...]` makes one replica per entry (see gpunet.parallel);
    `reduce` is "mean" or "sum"; `lr_scaling="linear"` multiplies the lr by the number
    of replicas (Goyal et al. 2017) and `warmup_epochs` ramps it there linearly from
    the unscaled lr, step by step. `comm` overrides the communicator.

    accumulate: K > 1 runs each batch as K micro-batches whose gradients add up to the
    batch's (gradient accumulation: the same step, a K-th of the activation memory).

    doctor: add a `gn.doctor.LiveDoctor` (live checks at logging points; it stops a
    diverged run before a checkpoint of diverged weights is written); `doctor_ignore`
    silences codes. It goes right after History, before the user's callbacks.

    precision: "fp32" (default), "tf32", "bf16" or "fp16" — the compute precision of matrix
    products and convolutions (gpunet.precision); weights, gradients and optimizer state stay
    float32 (the master weights). A float64 model stays float64 (only "fp32" is accepted).
    loss_scale: "auto" (dynamic loss scaling for fp16, none otherwise), "dynamic", None (no
    scaling) or a `gn.LossScaler(...)` with its own settings (gpunet.loss_scale). Its state is
    checkpointed; steps whose scaled gradients are not finite are skipped.
    """

    def __init__(self, model, loss, optimizer, device="auto", metrics=("accuracy",), callbacks=(),
                 schedule=None, seed=0, log_every=None, devices=None, reduce="mean", lr_scaling="none",
                 warmup_epochs=0, comm=None, doctor=True, doctor_ignore=(), accumulate=1, precision="fp32",
                 loss_scale="auto"):
        for m in metrics:
            one_of("Trainer", "metrics", m, METRICS)
        if log_every is not None and (isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1):
            raise GpunetValueError(f"Trainer: log_every expected a positive int or None, got {log_every!r}")
        one_of("Trainer", "lr_scaling", lr_scaling, LR_SCALINGS)
        non_negative("Trainer", "warmup_epochs", warmup_epochs)
        one_of("Trainer", "reduce", reduce, REDUCES)
        if comm is not None and devices is None:
            raise GpunetValueError("Trainer: comm expected devices=[...] with it (a communicator joins "
                                   "data-parallel replicas), got a communicator and devices=None")
        policy = _precision.resolve(precision)  # refuses unknown names and bf16 without ml_dtypes
        self.precision = "fp32" if policy is None else policy.name
        self.loss_scaler = make_loss_scaler(loss_scale, self.precision, model)
        _precision.apply(model, policy)  # before the engine: data-parallel replicas copy the policy
        if devices is not None:
            if accumulate != 1:
                raise GpunetValueError(f"Trainer: accumulate expected 1 with devices=[...] (data parallel does "
                                       f"not accumulate yet), got {accumulate!r}")
            self.engine = make_engine(model, loss, optimizer, devices, reduce=reduce, comm=comm, seed=seed)
        else:
            self.engine = LocalEngine(model, loss, optimizer, device, accumulate=accumulate)
        self.engine.scaler = self.loss_scaler
        self.device = self.engine.device
        self.model, self.loss_fn, self.optimizer = model, loss, optimizer
        self.replicas, self.reduce = self.engine.world, reduce
        self.lr_scaling, self.warmup_epochs = lr_scaling, warmup_epochs
        self.lr = StepScheduler(self.engine.optimizers, scale=self.replicas if lr_scaling == "linear" else 1,
                                warmup_epochs=warmup_epochs, schedule=schedule)
        self.metrics, self.seed, self.log_every = tuple(metrics), int(seed), log_every
        self.history = History()
        live = []
        if doctor:
            from .doctor import LiveDoctor
            if not any(isinstance(cb, LiveDoctor) for cb in callbacks):
                live = [LiveDoctor(ignore=doctor_ignore)]
        # History first: checkpoints see the epoch; LiveDoctor before checkpoints: a diverged
        # run stops before its weights overwrite the last good checkpoint.
        self.callbacks = CallbackList([self.history, *live, *self._engine_callbacks(), *callbacks])
        self.callbacks.set_trainer(self)
        self.epoch, self.global_step, self.stop_training = 0, 0, False
        self._batch_done, self._acc = 0, None  # progress inside the current epoch
        self._resume_batch, self._resume_acc = 0, None
        self.config = None  # JSON-able run config, stored in checkpoints (evaluate rebuilds from it)

    @property
    def scheduler(self):
        """The user's schedule (an optim.Scheduler that computes, never writes, the lr), or None."""
        return self.lr.scheduler

    @property
    def base_lr(self) -> float:
        """The lr after linear scaling, before schedule and warmup."""
        return self.lr.base_lr

    @property
    def unscaled_lr(self) -> float:
        return self.lr.unscaled_lr

    def set_lr(self, lr) -> None:
        """Put `lr` on every replica's optimizer now; it holds until the schedule or warmup moves on."""
        self.lr.set_lr(lr)

    def _engine_callbacks(self):
        """A multi-process engine's own callbacks (agreement, checksums), before the user's."""
        return list(self.engine.callbacks()) if hasattr(self.engine, "callbacks") else []

    # ------------------------------------------------------------- data
    def loader(self, data, batch_size, shuffle=True, drop_last=False):
        """A DataLoader on this trainer's device and dtype (a DataLoader passes through)."""
        if isinstance(data, DataLoader):
            return data
        if not isinstance(data, Dataset):
            raise GpunetTypeError(f"Trainer: data expected a gn.data.Dataset or DataLoader, got {type(data).__name__}")
        rank, world = self._process_rank()
        if shuffle and world > 1:  # one process per rank: each takes its part of every global batch
            return DataLoader(data, batch_size, shuffle=True, drop_last=drop_last, device=self.device,
                              seed=self.seed, dtype=self.model.dtype, rank=rank, world_size=world,
                              split_batches=True)
        return DataLoader(data, batch_size, shuffle=shuffle, drop_last=drop_last, device=self.device,
                          seed=self.seed, dtype=self.model.dtype)

    def _process_rank(self):
        comm = self.engine.comm
        return (comm.rank, comm.world_size) if comm is not None else (0, 1)

    # ------------------------------------------------------------- fit
    def fit(self, train, epochs, batch_size=128, val=None, verbose=False) -> History:
        """Train until `epochs` epochs are done in total (a resumed trainer continues)."""
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise GpunetValueError(f"Trainer.fit: epochs expected a positive int, got {epochs!r} ({type(epochs).__name__})")
        if isinstance(batch_size, bool):  # other bad values: the DataLoader's check
            raise GpunetValueError(f"Trainer.fit: batch_size expected an int >= 1, got {batch_size!r} (bool)")
        epochs = int(epochs)
        if self.replicas > 1 and (not isinstance(batch_size, int) or batch_size % self.replicas):
            raise GpunetValueError(f"Trainer.fit: batch_size expected a global batch divisible by the {self.replicas} "
                                   f"replicas (equal shards), got {batch_size!r}")
        loader = self.loader(train, batch_size)
        val_loader = self.loader(val, max(batch_size, 1024), shuffle=False) if val is not None else None
        for name, ds in (("train", train), ("val", val)):
            if isinstance(ds, Dataset) and len(ds):
                self._check_fits(name, ds)
        callbacks = self.callbacks
        if verbose:  # a bar in a terminal; plain lines in pipes, CI logs and files
            from .callbacks import PlainProgress, RichProgress
            bar = RichProgress if sys.stdout.isatty() else PlainProgress
            callbacks = CallbackList([bar(epochs, len(loader)), *self.callbacks.callbacks])
            callbacks.set_trainer(self)
        self.stop_training = False
        self.lr.share()  # an lr assigned to self.optimizer between fits reaches every replica
        callbacks.on_train_begin({"epochs": epochs, "steps_per_epoch": len(loader)})
        try:
            while self.epoch < epochs and not self.stop_training:
                callbacks.on_epoch_begin(self.epoch)
                logs = self._train_epoch(loader, callbacks)
                if val_loader is not None:
                    v = self.evaluate(val_loader)
                    logs.update(val_loss=v["loss"], val_accuracy=v.get("accuracy"))
                self.epoch += 1
                self.lr.end_epoch(logs)  # before the callbacks: a checkpoint holds the stepped schedule
                callbacks.on_epoch_end(self.epoch - 1, logs)
        finally:
            callbacks.on_train_end({"epoch": self.epoch, "global_step": self.global_step})
        return self.history

    def _check_fits(self, name, ds) -> None:
        """One sample of `ds` through the model and loss in eval mode, and its labels against
        the model's output width, before any update: a dataset that does not fit the model
        (sample shape, a label beyond the logits) is refused now, not after some steps or a
        whole epoch have already changed the weights."""
        from .losses import SoftmaxCrossEntropy
        was_training = self.model.training
        self.model.eval()
        try:
            x, y = next(iter(self.loader(ds.subset([0]), 1, shuffle=False).iterate(0)))
            logits = self.model.forward(x)
            self.loss_fn.forward(logits, y)
        except GpunetError as e:
            raise type(e)(f"{name}: the dataset does not fit the model: {e}") from None
        finally:
            self.model.train(was_training)
        if isinstance(self.loss_fn, SoftmaxCrossEntropy) and logits.ndim == 2:
            ignore = self.loss_fn.ignore_index
            labels = ds.y if ignore is None else ds.y[ds.y != ignore]
            if labels.size and int(labels.max()) >= logits.shape[1]:
                row = int(np.flatnonzero(ds.y == labels.max())[0])
                raise GpunetValueError(f"{name}: expected class labels in [0, {logits.shape[1]}) (the model's "
                                       f"outputs), got {int(labels.max())} at index {row}")

    def _train_epoch(self, loader, callbacks) -> dict:
        xp, model = self.device.xp, self.model
        model.train()
        steps = len(loader)
        log_every = self.log_every or max(1, steps // 10)
        loss_sum, correct, seen = self._epoch_accumulators(xp)
        lr = self.lr.begin_step(self.global_step, steps)  # the epoch's first step (schedules step at epoch end)
        start = self._resume_batch
        self._resume_batch, self._resume_acc = 0, None
        t0 = time.perf_counter()
        before_step = lambda: callbacks.on_before_optimizer_step(self.global_step)  # noqa: E731
        metrics = bool(self.metrics)
        for batch, (x, y) in enumerate(loader.iterate(self.epoch, start_batch=start), start=start):
            self.lr.begin_step(self.global_step, steps)
            loss, batch_correct = self.engine.train_step(x, y, metrics, before_step)
            n = x.shape[0]
            loss_sum += loss * n
            if self.metrics:
                correct += batch_correct
            seen += n
            self.global_step += 1
            logs = {"epoch": self.epoch, "batch": batch, "step": self.global_step, "size": n}
            self._batch_done, self._acc = batch + 1, (loss_sum, correct, seen)
            if (batch + 1) % log_every == 0 and batch + 1 < steps:
                logs.update(self._read(loss_sum, correct, seen, t0, batch + 1 - start))
            callbacks.on_batch_end(self.global_step - 1, logs)
            self.lr.end_step()
        record = {"epoch": self.epoch, **self._read(loss_sum, correct, seen, t0, None)}
        record.update(lr=lr, seconds=time.perf_counter() - t0)
        record["samples_per_s"] = (seen - self._start_seen) / max(record["seconds"], 1e-9)
        self._batch_done, self._acc = 0, None
        return record

    def _epoch_accumulators(self, xp):
        self._start_seen = 0
        if self._resume_acc is not None:  # a mid-epoch resume continues the epoch's sums
            loss_sum, correct, seen = self._resume_acc
            self._start_seen = seen
            return xp.asarray(loss_sum, dtype=np.float64), xp.asarray(correct, dtype=np.int64), seen
        return xp.zeros((), dtype=np.float64), xp.zeros((), dtype=np.int64), 0

    def _read(self, loss_sum, correct, seen, t0, steps_done) -> dict:
        """Host copies of the running epoch means (a sync). Stops the run on NaN/Inf."""
        self.loss_fn.raise_deferred_errors(self.device)
        loss_sum, correct, seen = self._across_processes(loss_sum, correct, seen)
        loss = float(loss_sum) / max(seen, 1)  # sync
        if not math.isfinite(loss):
            self.stop_training = True
            raise NonFiniteError(f"training diverged: loss is {loss} at epoch {self.epoch}, "
                                 f"step {self.global_step}; lower the learning rate "
                                 f"(lr={float(self.optimizer.lr):g}). The last checkpoint written "
                                 "before this point is intact.")
        out = {"loss": loss}
        if self.metrics:
            out["accuracy"] = int(correct) / max(seen, 1)  # sync
        if steps_done is not None:
            out["samples_per_s"] = (seen - self._start_seen) / max(time.perf_counter() - t0, 1e-9)
        return out

    def _across_processes(self, loss_sum, correct, seen):
        """Under `gpunet launch`, sum the epoch's running totals over the ranks (3 numbers)."""
        if self._process_rank()[1] == 1:
            return loss_sum, correct, seen
        buf = self.device.xp.asarray([float(loss_sum), float(correct), float(seen)])  # sync
        self.engine.comm.all_reduce([buf])
        total = backend.to_numpy(buf)
        return total[0], int(total[1]), int(total[2])

    # ------------------------------------------------------------- evaluate
    def evaluate(self, data, batch_size=1024) -> dict:
        """Mean loss (penalties included) and accuracy over `data`, in eval mode.

        Forward only: the loss's `evaluate` entry (the fused eval kernel for cross-entropy)
        gives each batch's loss sum, count and correct count; no gradient is written.
        """
        loader = self.loader(data, batch_size, shuffle=False)
        xp, model = self.device.xp, self.model
        was_training = model.training
        model.eval()
        loss_sum, count, correct = xp.zeros((), np.float64), xp.zeros((), np.int64), xp.zeros((), np.int64)
        try:
            for x, y in loader.iterate(0):
                s, n, c = self.loss_fn.evaluate(model.forward(x), y)
                loss_sum += s
                count += n
                correct += c
        finally:
            model.train(was_training)
        self.loss_fn.raise_deferred_errors(self.device)
        penalty = float(model.regularization_loss())  # sync
        seen = max(int(count), 1)  # sync
        out = {"loss": float(loss_sum) / seen + penalty}  # sync
        if self.metrics:
            out["accuracy"] = int(correct) / seen  # sync
        return out

    # ------------------------------------------------------------- checkpoints
    def save(self, path, **extra):
        """Checkpoint everything a resume needs (atomic)."""
        acc = None
        if self._batch_done:  # mid-epoch: keep the epoch's running sums so its record is exact
            loss_sum, correct, seen = self._acc
            acc = [float(loss_sum), int(correct), int(seen)]  # sync
        meta = {"epoch": self.epoch, "global_step": self.global_step, "seed": self.seed,
                "batch_in_epoch": self._batch_done, "accumulators": acc,
                "rng": self.device.rng_state(), "history": self.history.epochs,
                "scheduler": self.lr.state_dict(), "config": self.config,
                "replica_rng": self.engine.rng_states(), "precision": self.precision,
                "loss_scaler": None if self.loss_scaler is None else self.loss_scaler.state_dict(), **extra}
        return save_checkpoint(path, self.model, self.optimizer, **meta)

    def _check_meta(self, meta) -> None:
        """The schema of a checkpoint's meta, checked before anything is assigned (so a
        resume that fails here changes nothing)."""
        problems = []

        def count(key, required=True):
            v = meta.get(key)
            if v is None and not required:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                problems.append(f"{key}: expected a non-negative int, got {v!r:.60}")

        count("epoch"), count("global_step"), count("seed", False), count("batch_in_epoch", False)
        history = meta.get("history", [])
        if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
            problems.append(f"history: expected a list of epoch records, got {history!r:.60}")
        acc = meta.get("accumulators")
        if meta.get("batch_in_epoch") and not (
                isinstance(acc, list) and len(acc) == 3 and all(isinstance(v, (int, float)) and
                                                                not isinstance(v, bool) for v in acc)
                and isinstance(acc[1], int) and isinstance(acc[2], int)):
            problems.append(f"accumulators: expected [loss_sum, correct, seen] for a mid-epoch checkpoint, "
                            f"got {acc!r:.60}")
        for key, kind in (("scheduler", dict), ("rng", dict), ("replica_rng", list), ("config", dict)):
            if meta.get(key) is not None and not isinstance(meta[key], kind):
                problems.append(f"{key}: expected a JSON {'object' if kind is dict else 'list'} or null, "
                                f"got {type(meta[key]).__name__}")
        rng = meta.get("rng")
        if isinstance(rng, dict) and "state" in rng and not self.device.is_gpu:
            try:  # a throwaway generator: the real one changes only after every check passed
                np.random.Generator(np.random.PCG64()).bit_generator.state = rng["state"]
            except (TypeError, ValueError, KeyError) as e:
                problems.append(f"rng: expected a PCG64 state, got an unusable one ({type(e).__name__}: {e})")
        sched = meta.get("scheduler")
        if self.scheduler is not None and isinstance(sched, dict) and hasattr(self.scheduler, "check_state_dict"):
            try:
                self.scheduler.check_state_dict(sched)
            except CheckpointError as e:
                problems.append(f"scheduler: {e}")
        problems += self._check_precision_meta(meta)
        if problems:
            raise CheckpointError("meta: " + "; ".join(problems))

    def _check_precision_meta(self, meta) -> list:
        """A resume continues exactly only at the checkpoint's precision and with its loss-scaler state."""
        written = meta.get("precision", "fp32")  # checkpoints from before precision= ran fp32
        if written != self.precision:
            return [f"precision: the checkpoint was written at precision {written!r}, this trainer runs "
                    f"{self.precision!r}; resume with precision={written!r}"]
        state = meta.get("loss_scaler")
        if (state is None) != (self.loss_scaler is None):
            have = "has no loss-scaler state" if state is None else "holds a loss scaler's state"
            mine = "scales the loss" if self.loss_scaler is not None else "has no loss scaler (loss_scale=None)"
            return [f"loss_scaler: the checkpoint {have}, this trainer {mine}; resume with the run's loss_scale"]
        if state is not None:
            try:
                self.loss_scaler.check_state_dict(state)
            except CheckpointError as e:
                return [str(e)]
        return []

    def resume(self, path) -> dict:
        """Restore a checkpoint written by `save`; the next `fit` continues where it stopped."""
        meta = load_checkpoint(path, self.model, self.optimizer, check_meta=self._check_meta)
        self.epoch, self.global_step = int(meta["epoch"]), int(meta["global_step"])
        self.seed = int(meta.get("seed", self.seed))  # the data order comes from the run's seed
        self.history.epochs = list(meta.get("history", []))
        if meta.get("rng"):
            self.device.set_rng_state(meta["rng"])
        self.engine.broadcast_state()
        if meta.get("replica_rng"):
            self.engine.set_rng_states(meta["replica_rng"])
        self.lr.load_state_dict(meta.get("scheduler"))
        if self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(meta["loss_scaler"])
        self._resume_batch = int(meta.get("batch_in_epoch", 0))
        self._resume_acc = meta.get("accumulators") if self._resume_batch else None
        return meta
