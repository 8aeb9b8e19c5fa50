"""Communicators: how replicas agree on a gradient.

One small interface, whatever carries the bytes:

    comm.all_reduce(buffers, op="sum")   # in place, over every replica's flat buffer
    comm.broadcast(buffers, root=0)      # copy the root replica's buffer to all
    comm.barrier(); comm.rank; comm.world_size   (processes, not replicas)

`buffers` lists the flat buffers of the replicas that live in *this* process: N of
them for `local` and `nccl`, one for the multi-process communicators.

- LocalCommunicator: replicas in one process (["cpu"]*N, ["cuda:0"]*N, or GPUs
  without NCCL). Sums in replica order, so results are deterministic.
- NcclCommunicator: one process, several distinct GPUs; NCCL all-reduce of each
  flat buffer inside groupStart/groupEnd.
- Several processes (one per rank, on one node or many): gpunet.parallel.mpi, MPI's
  Allreduce on the CPU and NCCL bootstrapped through MPI on GPUs.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetValueError

OPS = ("sum",)


def _check_op(op):
    if op not in OPS:
        raise GpunetValueError(f"all_reduce: op expected one of {OPS}, got {op!r}")


class Communicator:
    name = "base"
    rank = 0
    world_size = 1

    def all_reduce(self, buffers, op="sum"):
        raise NotImplementedError

    def broadcast(self, buffers, root=0):
        raise NotImplementedError

    def barrier(self):
        pass

    def close(self):
        pass

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class LocalCommunicator(Communicator):
    """Replicas in one process: a deterministic sum in replica order, copied back to each."""
    name = "local"

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        if len(buffers) < 2:
            return
        home = backend.device_of(buffers[0])
        with home:  # every write runs with its buffer's device current (copies are event-ordered)
            total = buffers[0].copy()
            for b in buffers[1:]:
                total += home.asarray(b)
        for b in buffers:
            dev = backend.device_of(b)
            with dev:
                b[...] = dev.asarray(total)

    def broadcast(self, buffers, root=0):
        src = buffers[root]
        for i, b in enumerate(buffers):
            if i != root:
                dev = backend.device_of(b)
                with dev:
                    b[...] = dev.asarray(src)


class NcclCommunicator(Communicator):
    """One process driving several distinct GPUs through NCCL (cupy.cuda.nccl)."""
    name = "nccl"

    def __init__(self, devices):
        self.devices = [backend.device(d) for d in devices]
        if len({d.name for d in self.devices}) != len(self.devices) or not all(d.is_gpu for d in self.devices):
            raise GpunetValueError(f"NcclCommunicator: expected distinct GPUs, got {[d.name for d in self.devices]}")
        self.nccl = backend.nccl_module()  # CuPy 14: not imported by `import cupy`
        if not getattr(self.nccl, "available", False):
            raise GpunetValueError("NcclCommunicator: CuPy's NCCL binding says NCCL is not available; "
                                   "install it with pip install nvidia-nccl-cu12 (or -cu13)")
        self.comms = self.nccl.NcclCommunicator.initAll([d.index for d in self.devices])

    def _dtype(self, buf):
        codes = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64}
        return codes[np.dtype(buf.dtype)]

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        self.nccl.groupStart()
        try:
            for comm, dev, buf in zip(self.comms, self.devices, buffers):
                with dev:
                    stream = dev.xp.cuda.get_current_stream().ptr
                    comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf),
                                   self.nccl.NCCL_SUM, stream)
        finally:
            self.nccl.groupEnd()

    def broadcast(self, buffers, root=0):
        self.nccl.groupStart()
        try:
            for comm, dev, buf in zip(self.comms, self.devices, buffers):
                with dev:
                    stream = dev.xp.cuda.get_current_stream().ptr
                    comm.broadcast(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf), root, stream)
        finally:
            self.nccl.groupEnd()
