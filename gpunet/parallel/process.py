"""Data parallel across processes: one replica per rank, gradients reduced in buckets
while backward is still running.

Exactness. Every rank iterates the same global batches (the same seeded permutation,
no sample dropped) and takes its contiguous part of each: rank r of N gets
q + (1 if r < b mod N else 0) of a batch of b, q = b // N (a part may be empty).
Rank r's gradient g_r is of its part's mean loss. The part sizes n_r are summed at
the start of each step (a tiny all-reduce that completes during forward); when they
differ, each g_r is multiplied by n_r before the sum, so after the reduction

    reduce="mean":  g = Σ n_r g_r / Σ n_r      == the gradient of the global batch's mean loss
    reduce="sum":   g = N · Σ n_r g_r / Σ n_r  == N × that gradient

(with equal parts, simply Σ g_r / N and Σ g_r). N processes therefore compute what
one process computes with the same global batch; only the order of the float
additions differs (1e-12 in float64 after two epochs: tests/test_mpi.py).

Overlap (Goyal et al. 2017; PyTorch DDP). Parameters are grouped into buckets of
about `bucket_bytes`, in reverse layer order, each a contiguous slice of the flat
gradient buffer. When the backward of the layers owning a bucket's parameters has
returned, that bucket's all-reduce starts (Iallreduce or NCCL on its own stream)
and runs while earlier layers are still in backward. All are waited for (with the
job's timeout) before the optimizer step.

Agreement. At start the ranks compare digests of gpunet's code and the model's and
optimizer's shapes and settings, then rank 0's weights and optimizer state are
broadcast, then a checksum of the parameters and optimizer state is compared; the
`ProcessSync` callback repeats the checksum at every checkpoint point and compares
the run's config at the start of fit. A mismatch stops the job naming the ranks.
"""
from __future__ import annotations

import os

import numpy as np

from .. import backend
from ..callbacks import Callback
from ..errors import GpunetValueError
from ..step import forward_backward, unscale_or_skip
from .engine import REDUCES, Replica
from .agree import agree, checksum, compare_checksums, source_digest
from .mpi import STOP_SIGNALS, JobStopped, stop_requested

DEFAULT_BUCKET_BYTES = 1 << 20


def default_bucket_bytes() -> int:
    """GPUNET_BUCKET_BYTES, else 1 MiB: the gradient bytes per all-reduce bucket."""
    value = os.environ.get("GPUNET_BUCKET_BYTES", "")
    if not value:
        return DEFAULT_BUCKET_BYTES
    if not value.isdigit() or int(value) < 1:
        raise GpunetValueError(f"GPUNET_BUCKET_BYTES: expected a positive int (bytes), got {value!r}")
    return int(value)


class Bucket:
    __slots__ = ("lo", "hi", "ids")

    def __init__(self, lo, hi, ids):
        self.lo, self.hi, self.ids = lo, hi, frozenset(ids)


def plan_buckets(params, bucket_bytes):
    """Buckets of consecutive parameters, last layer first, each about `bucket_bytes`."""
    offsets, o = [], 0
    for p in params:
        offsets.append(o)
        o += p.size
    buckets, ids, hi, nbytes = [], [], None, 0
    for i in range(len(params) - 1, -1, -1):
        p = params[i]
        if hi is None:
            hi = offsets[i] + p.size
        ids.append(id(p))
        nbytes += p.size * p.dtype.itemsize
        if nbytes >= bucket_bytes or i == 0:
            buckets.append(Bucket(offsets[i], hi, ids))
            ids, hi, nbytes = [], None, 0
    return buckets


class ProcessDataParallel:
    """One replica of (model, loss, optimizer) in this process, `comm.world_size` in the job."""

    scaler = None  # a gpunet.loss_scale.LossScaler (fp16), set by the Trainer; every rank decides alike

    def __init__(self, model, loss_fn, optimizer, device, comm, reduce="mean", seed=0,
                 bucket_bytes=None, overlap=True):
        if reduce not in REDUCES:
            raise GpunetValueError(f"reduce: expected one of {REDUCES}, got {reduce!r}")
        bucket_bytes = default_bucket_bytes() if bucket_bytes is None else bucket_bytes
        if isinstance(bucket_bytes, bool) or not (isinstance(bucket_bytes, int) and bucket_bytes >= 1):
            raise GpunetValueError(f"bucket_bytes: expected an int >= 1, got {bucket_bytes!r}")
        dev = backend.device(device)
        self.devices, self.n, self.reduce = [dev], 1, reduce
        self.comm = comm
        self.control = getattr(comm, "control", comm)  # MPI: counts, stop flags, agreement
        self.world = comm.world_size
        self.replicas = [Replica(0, dev, model, loss_fn, optimizer, generator_seed=seed * 1_000_003 + comm.rank)]
        r = self.replicas[0]
        self.staged = dev.is_gpu and not hasattr(comm, "stream")  # MPI on a GPU: through the host
        self.buckets = plan_buckets(r.params, bucket_bytes)
        self.overlap = bool(overlap) and self._install_hooks(r.model)
        self.meta = np.zeros(1 + len(STOP_SIGNALS), dtype=np.float64)  # [count, one slot per stop signal]
        self.steps, self.stop_signal, self.check_every = 0, None, None
        agree(self.control, self.fingerprint())
        self.broadcast_state()
        self.verify("at start")

    # ------------------------------------------------------------- agreement
    def fingerprint(self) -> dict:
        r = self.replicas[0]
        opt = r.optimizer.state_dict()
        return {"gpunet code": source_digest(),
                "model (parameter names, shapes, dtype)": [(k, list(p.shape), str(p.dtype))
                                                           for k, p in r.model.named_parameters()],
                "optimizer": [opt["type"], opt["hyper"]], "reduce": self.reduce,
                "precision": sorted({repr(getattr(m, "precision", None)) for m in r.model.modules()}),
                "device kind": r.device.kind}

    def checksum(self) -> int:
        r = self.replicas[0]
        bufs = r.optimizer.state_dict().get("buffers", {})
        return checksum([p.data for p in r.params] + [bufs[k] for k in sorted(bufs)])

    def verify(self, where: str) -> None:
        """Compare the parameter/optimizer checksum of every rank with rank 0's."""
        compare_checksums(self.control, self.checksum(), where)

    def broadcast_state(self):
        """Rank 0's weights, buffers and optimizer state on every rank."""
        r = self.replicas[0]
        state = None
        if self.control.rank == 0:
            opt = r.optimizer.state_dict()
            opt["buffers"] = {k: backend.to_numpy(v) for k, v in opt["buffers"].items()}
            state = ({k: backend.to_numpy(v) for k, v in r.model.state_dict().items()}, opt)
        state = self.control.broadcast_object(state)
        if self.control.rank != 0:
            with r.device:
                r.model.load_state_dict(state[0])
                r.optimizer.load_state_dict(state[1])

    def callbacks(self):
        return [ProcessSync(self)]

    # ------------------------------------------------------------- overlap hooks
    def _install_hooks(self, model) -> bool:
        """Wrap the backward of every module that owns parameters, to start buckets early.
        Returns False (no overlap: every bucket starts after backward) when a parameter is
        shared by several modules, since its gradient is final only at the very end."""
        owners = {}
        for m in model.modules():
            for p in m._params.values():
                owners.setdefault(id(p), set()).add(id(m))
        if any(len(v) > 1 for v in owners.values()):
            return False
        for m in model.modules():
            if not m._params:
                continue
            ids = [id(p) for p in m._params.values()]

            def backward(*args, _orig=m.backward, _ids=ids, **kwargs):
                out = _orig(*args, **kwargs)
                self._ready(_ids)
                return out
            object.__setattr__(m, "backward", backward)
        return True

    def _ready(self, ids):
        if self._pending is None:  # a backward outside train_step (e.g. a probe): nothing to do
            return
        self._done.update(ids)
        while self._next < len(self.buckets) and self.buckets[self._next].ids <= self._done:
            self._launch(self.buckets[self._next])
            self._next += 1
        if self._pending:
            self.comm.test([h for h, _, _ in self._pending])  # drive MPI's progress

    def _parts(self):
        """(total samples, all parts equal) of this step, from the counts all-reduce started with
        the step (long done by the time backward reaches the first bucket)."""
        if self._total is None:
            self.control.wait([self._meta_req], "the gradient all-reduce")
            self._total = float(self.meta[0])
        return self._total, self._total == self._count * self.world

    def _launch(self, b):
        seg = self.replicas[0].flat_grad[b.lo:b.hi]
        total, equal = self._parts()
        if not equal:  # unequal parts: weight each rank's mean gradient by its count
            seg *= seg.dtype.type(self._count)
        if self.staged:
            host = backend.to_numpy(seg)
            self._pending.append((self.control.iall_reduce(host), seg, host))
        else:
            self._pending.append((self.comm.iall_reduce(seg), None, None))

    # ------------------------------------------------------------- one step
    @property
    def device(self):
        return self.devices[0]

    @property
    def optimizers(self):
        """This rank's optimizer (the Trainer's StepScheduler sets its lr)."""
        return [self.replicas[0].optimizer]

    def train_step(self, x, y, metrics=True, before_step=None):
        """Forward/backward on this rank's part, bucketed all-reduce, `before_step()`, update.
        Returns (mean loss of this rank's part, correct count or None without metrics) as
        device values."""
        if self.stop_signal is not None:
            raise JobStopped(self.stop_signal, self.steps)
        r = self.replicas[0]
        n = int(x.shape[0])
        self.control.step = self.steps
        asked = stop_requested()
        self.meta[:] = 0
        self.meta[0] = n
        if asked is not None:
            self.meta[1 + STOP_SIGNALS.index(asked)] = 1
        self._meta_req = self.control.iall_reduce(self.meta)
        self._count, self._done, self._next, self._pending, self._total = n, set(), 0, [], None
        try:
            with r.device:
                xp = r.device.xp
                if n:
                    loss, correct = forward_backward(r.model, r.loss_fn, x, y, metrics,
                                                     1.0 if self.scaler is None else self.scaler.scale)
                else:  # an empty part (a last batch smaller than the job): it still joins the sum
                    loss, correct = xp.zeros((), np.float64), xp.zeros((), np.int64)
                while self._next < len(self.buckets):
                    self._launch(self.buckets[self._next])
                    self._next += 1
                total, equal = self._parts()
                self.comm.wait([h for h, _, _ in self._pending], "the gradient all-reduce")
                for _, seg, host in self._pending:
                    if seg is not None:
                        seg[...] = r.device.asarray(host)
                # equal parts: Σ g_r is N × the global mean gradient; unequal: Σ n_r g_r is total × it
                factor = (self.world if self.reduce == "sum" else 1) / (self.world if equal else total)
                if factor != 1:
                    r.flat_grad *= r.flat_grad.dtype.type(factor)
                ok = unscale_or_skip(self.scaler, [r.flat_grad])  # the reduced gradient: the same on every rank
                if before_step is not None:
                    before_step()
                if ok:
                    r.optimizer.step()
                r.optimizer.zero_grad()
                if self.scaler is not None:
                    self.scaler.update(ok)
        finally:
            self._pending = None
        stops = [s for s, v in zip(STOP_SIGNALS, self.meta[1:]) if v > 0]
        if stops:
            self.stop_signal = stops[0]
        self.steps += 1
        return loss, (correct if metrics else None)

    _pending = None

    # ------------------------------------------------------------- the DataParallel surface
    def rng_states(self):
        return [[m.generator.state() for m in r.model.modules() if getattr(m, "generator", None) is not None]
                for r in self.replicas]

    def set_rng_states(self, states):
        r = self.replicas[0]
        gens = [m.generator for m in r.model.modules() if getattr(m, "generator", None) is not None]
        for g, s in zip(gens, states[0] if states else []):
            g.set_state(s)

    def check_replicas(self):
        self.verify("(check_replicas)")
        return self.checksum()


class ProcessSync(Callback):
    """On every rank of a multi-process job: compare the run config at the start of fit,
    agree on stopping at each epoch's end (a rank's doctor or early stop stops all), and
    compare parameter checksums at each checkpoint point (epoch ends, and every
    `engine.check_every` steps) before rank 0's checkpoint is written."""

    def __init__(self, engine):
        self.engine = engine

    def on_train_begin(self, logs=None):
        config = getattr(self.trainer, "config", None) or {}
        agree(self.engine.control, {f"config field {k!r}": v for k, v in config.items()})

    def on_batch_end(self, step, logs=None):
        every = self.engine.check_every
        if every and (step + 1) % every == 0:
            self.engine.verify(f"at step {step + 1}")

    def on_epoch_end(self, epoch, logs=None):
        stop = self.engine.control.all_reduce_max([float(bool(self.trainer.stop_training))])
        self.trainer.stop_training = bool(stop[0])
        self.engine.verify(f"at the end of epoch {epoch + 1}")


def make_engine(model, loss_fn, optimizer, devices, reduce="mean", comm=None, seed=0):
    """DataParallel for replicas in this process; ProcessDataParallel when `comm` joins processes."""
    from .engine import DataParallel
    from .mpi import MpiCommunicator
    from .nccl import NcclProcessCommunicator
    if isinstance(comm, (MpiCommunicator, NcclProcessCommunicator)):
        if not devices or len(devices) != 1:
            raise GpunetValueError(f"devices: expected one device per process with a multi-process "
                                   f"communicator, got {devices!r}")
        return ProcessDataParallel(model, loss_fn, optimizer, devices[0], comm, reduce=reduce, seed=seed)
    return DataParallel(model, loss_fn, optimizer, devices, reduce=reduce, comm=comm, seed=seed)
