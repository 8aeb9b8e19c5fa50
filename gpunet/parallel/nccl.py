"""NCCL between processes, one GPU each, bootstrapped through MPI (the ChainerMN way).

Rank 0 draws NCCL's unique id; MPI broadcasts it (timed); every rank then creates its
communicator with its own GPU current (bound before MPI or NCCL existed, see
mpi.bind_device), so no rank puts a context or a communicator on GPU 0 by accident.

Gradients go on a stream of their own: an all-reduce waits for the compute stream's
work so far (an event), runs beside the rest of backward, and records an event the
optimizer's stream waits on. A wait polls that event against the deadline; past it the
NCCL communicator is aborted and MPI names the rank that did not come.
"""
from __future__ import annotations

import time

import numpy as np

from .. import backend
from .comm import Communicator, _check_op


class NcclProcessCommunicator(Communicator):
    name = "nccl"

    def __init__(self, device, control):
        self.device, self.control = device, control
        self.rank, self.world_size, self.timeout = control.rank, control.world_size, control.timeout
        self.nccl = backend.nccl_module()  # CuPy 14: `import cupy` does not import cupy.cuda.nccl
        with device:  # this rank's GPU is current while the communicator is made
            uid = self.nccl.get_unique_id() if self.rank == 0 else None
            uid = control.broadcast_object(uid)
            self.comm = self.nccl.NcclCommunicator(self.world_size, uid, self.rank)
            self.stream = device.xp.cuda.Stream(non_blocking=True)

    @property
    def step(self):
        return self.control.step

    @step.setter
    def step(self, value):
        self.control.step = value

    @property
    def count(self):
        return self.control.count

    def _dtype(self, buf):
        codes = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64}
        return codes[np.dtype(buf.dtype)]

    def _after_compute(self):
        xp = self.device.xp
        ready = xp.cuda.Event()
        ready.record(xp.cuda.get_current_stream())
        self.stream.wait_event(ready)

    def _done(self):
        done = self.device.xp.cuda.Event()
        done.record(self.stream)
        return done

    def iall_reduce(self, buf, op="sum"):
        """Start an in-place NCCL sum of device buffer `buf`; returns an event."""
        _check_op(op)
        self.control.count += 1
        with self.device:
            self._after_compute()
            self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf), self.nccl.NCCL_SUM,
                                self.stream.ptr)
            return self._done()

    def test(self, handles) -> bool:
        return all(h.done for h in handles)

    def wait(self, handles, what):
        deadline = time.monotonic() + self.timeout
        while not self.test(handles):
            if time.monotonic() > deadline:
                abort = getattr(self.comm, "abort", None)
                if abort is not None:
                    abort()  # frees this rank's GPU from the hung kernel
                self.control._missed(what)
            time.sleep(5e-5)
        with self.device:
            current = self.device.xp.cuda.get_current_stream()
            for h in handles:
                current.wait_event(h)

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        self.wait([self.iall_reduce(b) for b in buffers], "NCCL all-reduce")

    def broadcast(self, buffers, root=0):
        handles = []
        for buf in buffers:
            self.control.count += 1
            with self.device:
                self._after_compute()
                self.comm.broadcast(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf), root, self.stream.ptr)
                handles.append(self._done())
        self.wait(handles, "NCCL broadcast")

    def barrier(self):
        self.control.barrier()

    def abort(self, code=1):
        self.control.abort(code)
