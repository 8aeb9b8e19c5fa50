"""The data-parallel engine: N replicas, one global batch, one reduced gradient.

A global batch of B splits into N contiguous shards of B/N. Replica i runs forward
and backward on shard i, giving the gradient g_i of its shard's mean loss. Then

    reduce="mean":  g = (1/N) Σ g_i   == the gradient of the global-batch mean loss
    reduce="sum":   g =       Σ g_i   == N × that gradient (lr × N under plain SGD)

and every replica applies g with its own optimizer, so parameters and optimizer
state stay bit-identical (`check_replicas` verifies it on demand). Gradients live
in one flat buffer per replica (each Parameter.grad is a view into it), so one
all-reduce moves them all. With a fused optimizer (`fused=True`) that buffer is the
optimizer's own flat gradient buffer (gpunet/nn/flat.py): the all-reduce and the fused
step work on the same storage, with no copy between them.

A last batch whose size N does not divide gets unequal shards; shard i's gradient is
then weighted by N·n_i/n before the sum, so "mean" is still exactly the global-batch
mean gradient and "sum" exactly N times it.

BatchNorm keeps per-replica statistics (each replica normalises its own shard, as the
classic multi-tower setup did); replica 0's running statistics are the model's.
Dropout draws from an independent seeded stream per replica.
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np

from .. import backend
from ..argcheck import one_of
from ..errors import GpunetValueError
from ..step import forward_backward
from .comm import LocalCommunicator, NcclCommunicator

REDUCES = ("mean", "sum")


def flatten_grads(params):
    """Allocate one flat gradient buffer and make each Parameter.grad a view into it."""
    if len({p.grad.dtype for p in params}) > 1:
        raise GpunetValueError(f"data parallel: parameters expected one dtype, got "
                               f"{sorted({str(p.grad.dtype) for p in params})}")
    xp = backend.xp_of(params[0].grad)
    flat = xp.zeros(sum(p.size for p in params), dtype=params[0].grad.dtype)
    offset = 0
    for p in params:
        view = flat[offset:offset + p.size].reshape(p.shape)
        view[...] = p.grad
        p.grad = view
        offset += p.size
    return flat


class Replica:
    def __init__(self, rank, device, model, loss_fn, optimizer, generator_seed):
        self.rank, self.device = rank, device
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        with device:
            model.to(device)
            for m in model.modules():
                if hasattr(m, "generator"):
                    m.generator = device.generator(generator_seed)
            self.params = model.parameters()
            self._flat = _fused_storage(optimizer, self.params)
            if self._flat is not None:  # the fused optimizer's buffer, in its order
                self.params = list(self._flat.groups[0].params)
                self._flat_grad = None
            else:
                self._flat_grad = flatten_grads(self.params)

    @property
    def flat_grad(self):
        """The flat gradient buffer every Parameter.grad of this replica is a view into."""
        if self._flat is not None:
            self.optimizer.flat_parameters()  # views checked (and repaired) first
            return self._flat.groups[0].grad
        return self._flat_grad

    @flat_grad.setter
    def flat_grad(self, value):  # `r.flat_grad *= s` stores the same buffer back; nothing else may
        if value is not self.flat_grad:
            raise GpunetValueError("Replica.flat_grad: the flat gradient buffer is updated in place, "
                                   "not replaced (every Parameter.grad is a view into it)")


def _fused_storage(optimizer, params):
    """The fused optimizer's FlatParameters when it can be the all-reduce buffer too, else None.
    A fused optimizer over other parameters than the model's, or over several dtypes, is refused:
    two owners of the gradient views would each re-view them and one would reduce stale values."""
    if not getattr(optimizer, "fused", False):
        return None
    flat = optimizer.flat_parameters()
    if {id(p) for p in flat.params} != {id(p) for p in params} or len(flat.params) != len(params):
        raise GpunetValueError(f"data parallel: a fused optimizer expected exactly the model's {len(params)} "
                               f"parameters, got {len(flat.params)} of which "
                               f"{len({id(p) for p in flat.params} & {id(p) for p in params})} are the model's")
    if len(flat.groups) != 1:
        raise GpunetValueError(f"data parallel: parameters expected one dtype and device, got {flat!r}")
    return flat


def choose_communicator(devices):
    """local for CPUs or repeated devices; NCCL for distinct GPUs when CuPy has it. (comm, why)."""
    names = [d.name for d in devices]
    if len(devices) == 1:
        return LocalCommunicator(), "local: one replica"
    if len(set(names)) < len(names):
        return LocalCommunicator(), (f"local: devices {names} repeat a device, and NCCL refuses two ranks "
                                     "on one GPU, so the replicas share it in this process")
    if all(d.is_gpu for d in devices) and backend.nccl_available():
        return NcclCommunicator(devices), "nccl: one process, distinct GPUs"
    return LocalCommunicator(), "local: no NCCL for these devices"


class DataParallel:
    """Replicas of (model, loss, optimizer) over `devices`; replica 0 is the caller's own objects."""

    scaler = None  # a gpunet.loss_scale.LossScaler (fp16), set by the Trainer; one for all replicas

    def __init__(self, model, loss_fn, optimizer, devices, reduce="mean", comm=None, seed=0):
        one_of("DataParallel", "reduce", reduce, REDUCES)
        if not devices:
            raise GpunetValueError(f"devices: expected a non-empty list of device specs, got {devices!r}")
        self.devices = [backend.device(d) for d in devices]
        self.reduce, self.n = reduce, len(self.devices)
        if comm is None:
            comm, _ = choose_communicator(self.devices)
        self.comm = comm
        # One global rank per replica: process rank × local replicas + local index.
        base = comm.rank * self.n
        # Copy first, then place: every copy is taken from the caller's objects before any
        # replica moves them or gives their Dropout layers a device generator.
        copies = [(model, loss_fn, optimizer)] + [copy.deepcopy((model, loss_fn, optimizer))
                                                  for _ in self.devices[1:]]
        self.replicas = [Replica(i, dev, m, l, o, generator_seed=seed * 1_000_003 + base + i)
                         for i, (dev, (m, l, o)) in enumerate(zip(self.devices, copies))]
        self.world = self.n * comm.world_size

    # ------------------------------------------------------------- one step
    def shard_sizes(self, batch: int):
        q, r = divmod(batch, self.n)
        return [q + (1 if i < r else 0) for i in range(self.n)]

    @property
    def device(self):
        """Replica 0's device: the home of the step's loss and metrics."""
        return self.devices[0]

    @property
    def optimizers(self):
        """Every replica's optimizer (the Trainer's StepScheduler sets the lr on all of them)."""
        return [r.optimizer for r in self.replicas]

    def train_step(self, x, y, metrics=True, before_step=None):
        """Forward/backward on each shard, reduce, `before_step()`, update.
        Returns (mean loss, correct) on replica 0 (correct is None without metrics)."""
        sizes = self.shard_sizes(x.shape[0])
        if min(sizes) == 0:
            raise GpunetValueError(f"data parallel: batch of {x.shape[0]} expected at least one sample "
                                   f"per replica ({self.n} replicas)")
        home = self.replicas[0].device
        xp = home.xp
        with home:
            loss_sum, correct, start = xp.zeros((), np.float64), xp.zeros((), np.int64), 0
        scale = 1.0 if self.scaler is None else self.scaler.scale
        for r, n in zip(self.replicas, sizes):
            with r.device:
                xs, ys = r.device.asarray(x[start:start + n]), r.device.asarray(y[start:start + n])
                loss, c = forward_backward(r.model, r.loss_fn, xs, ys, metrics, scale)
            with home:  # the sums live on replica 0's device
                loss_sum += home.asarray(loss) * n
                if metrics:
                    correct += home.asarray(c)
            start += n
        self._reduce(sizes)
        ok = self._unscale()
        if before_step is not None:
            before_step()
        for r in self.replicas:
            with r.device:
                if ok:
                    r.optimizer.step()
                r.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.update(ok)
        with home:
            return loss_sum / x.shape[0], (correct if metrics else None)

    def _reduce(self, sizes):
        if self.world == 1:  # one replica: its gradient already is the global one
            return
        total = sum(sizes)
        if len(set(sizes)) > 1:
            for r, n in zip(self.replicas, sizes):  # unequal shards: weight by N·n_i/n
                with r.device:  # each scaling runs on its own GPU's stream, after its backward
                    r.flat_grad *= r.flat_grad.dtype.type(n * self.n / total)
        with self.replicas[0].device:  # a communicator's work without a device of its own runs on replica 0's
            self.comm.all_reduce([r.flat_grad for r in self.replicas], op="sum")
        if self.reduce == "mean":
            scale = self.replicas[0].flat_grad.dtype.type(1.0 / self.world)
            for r in self.replicas:
                with r.device:
                    r.flat_grad *= scale

    def _unscale(self) -> bool:
        """Loss scaling: the reduced gradients are the same on every replica, so replica 0's
        decide the skip for all; then each replica divides its own by the scale."""
        if self.scaler is None:
            return True
        with self.replicas[0].device:
            if not self.scaler.check([self.replicas[0].flat_grad]):
                return False
        for r in self.replicas:
            with r.device:
                self.scaler.unscale_([r.flat_grad])
        return True

    def broadcast_state(self):
        """Copy replica 0's weights, buffers and optimizer state to every other replica."""
        model_state = self.replicas[0].model.state_dict()
        opt_state = self.replicas[0].optimizer.state_dict()
        for r in self.replicas[1:]:
            with r.device:
                r.model.load_state_dict(model_state)
                r.optimizer.load_state_dict(opt_state)

    def rng_states(self):
        return [[m.generator.state() for m in r.model.modules() if getattr(m, "generator", None) is not None]
                for r in self.replicas]

    def set_rng_states(self, states):
        for r, st in zip(self.replicas, states):
            gens = [m.generator for m in r.model.modules() if getattr(m, "generator", None) is not None]
            for g, s in zip(gens, st):
                g.set_state(s)

    # ------------------------------------------------------------- debugging
    def checksums(self):
        """SHA-256 of each replica's parameters and optimizer state (host copies: a sync)."""
        out = []
        for r in self.replicas:
            h = hashlib.sha256()
            for p in r.params:
                h.update(backend.to_numpy(p.data).tobytes())
            for k, v in sorted(r.optimizer.state_dict().get("buffers", {}).items()):
                h.update(k.encode() + backend.to_numpy(v).tobytes())
            out.append(h.hexdigest())
        return out

    def check_replicas(self):
        """Raise if any replica's parameters or optimizer state differ from replica 0's."""
        sums = self.checksums()
        bad = [i for i, s in enumerate(sums) if s != sums[0]]
        if bad:
            raise AssertionError(f"data parallel: replicas {bad} differ from replica 0 "
                                 f"(parameter/optimizer checksums {[s[:12] for s in sums]})")
        return sums[0]
