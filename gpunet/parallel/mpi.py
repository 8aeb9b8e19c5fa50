"""Several processes, one job: MPI ranks, timed collectives, agreement and faults.

The ChainerMN design. Ranks are started by an MPI launcher (`mpiexec`, `srun`, or
`gpunet launch`, a thin front to the mpiexec installed next to this Python). MPI
carries the gradients between CPU processes (Allreduce on flat buffers) and is the
control plane everywhere: NCCL's unique id, the start-up agreement, checksums and
the stop flag all travel over it.

    rank, world, local_rank = env_rank()        # from OMPI_*, PMI_*, SLURM_* or RANK/...
    comm = MpiCommunicator(timeout=120)          # after bind_device(): GPU before MPI/NCCL

No hang. Every collective is nonblocking (Iallreduce, Ibcast, Iallgather) and polled
against a deadline (`timeout`, default 120 s, GPUNET_TIMEOUT or --timeout). A rank
that misses it is named: the ranks still alive exchange a note on a separate
communicator (who they are and which collective they wait in); whoever sent none is
stopped, hung or too slow. The lowest live rank reports one line and calls MPI_Abort,
which ends every rank of the job.

One line per failure. `rank_guard()` wraps a rank's work: an exception becomes the
line "gpunet: rank R: <cause>" on standard error (and, under `gpunet launch`, a file
in the job folder the launcher reads, so the cause reaches the user even when the
abort cuts the other ranks' output short), then MPI_Abort.

Stop requests. SIGTERM, SIGHUP and SIGINT set a flag; the engine sums the flags of all
ranks with every step's gradients, so every rank sees the request at the same step,
rank 0 checkpoints, and all exit with 128 + the signal's number.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend
from ..errors import DistributedError, GpunetError, GpunetValueError
from .agree import agree, checksum, compare_checksums, source_digest  # noqa: F401  (re-exported)
from .comm import Communicator, _check_op

DEFAULT_TIMEOUT = 120.0
# (rank, size, local rank) variables, in the order launchers are recognised.
RANK_VARS = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
             ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),                                     # MPICH hydra
             ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),
             ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),                              # srun
             ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
INSTALL_MPI = 'pip install "gpunet[mpi]"  (mpi4py and an MPI library from PyPI)'


def env_rank() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment (0, 1, 0 when none)."""
    for rank_var, size_var, local_var in RANK_VARS:
        if rank_var in os.environ and size_var in os.environ:
            try:
                rank, size = int(os.environ[rank_var]), int(os.environ[size_var])
                local = int(os.environ.get(local_var, os.environ.get("MPI_LOCALRANKID", "-1")))
            except ValueError:
                raise GpunetValueError(f"{rank_var}/{size_var}: expected integers, got "
                                       f"{os.environ[rank_var]!r}/{os.environ[size_var]!r}") from None
            return rank, size, (local if local >= 0 else rank)
    return 0, 1, 0


def default_timeout() -> float:
    value = os.environ.get("GPUNET_TIMEOUT", "")
    try:
        t = float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        raise GpunetValueError(f"GPUNET_TIMEOUT: expected seconds (a number > 0), got {value!r}") from None
    if not t > 0:
        raise GpunetValueError(f"GPUNET_TIMEOUT: expected seconds > 0, got {value!r}")
    return t


def mpi_module():
    """mpi4py's MPI, initialised (MPI_Init) on first use; a clear error when missing."""
    try:
        import mpi4py
        mpi4py.rc.threads = False      # one thread drives MPI; no THREAD_MULTIPLE locking
        from mpi4py import MPI
    except ImportError as e:
        raise GpunetValueError(f"multi-process data parallel needs MPI: {e}. Install it with {INSTALL_MPI}") from None
    return MPI


def mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401  (only whether it is there)
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------- stop requests

_stop = {"signal": None}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _on_stop_signal(signum, frame):
    if _stop["signal"] is None:
        _stop["signal"] = signum


def install_stop_handlers() -> None:
    """SIGTERM/SIGHUP/SIGINT ask the job to stop at the next step (see the module docstring)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)


def stop_requested():
    """The signal number a stop was asked with on this rank, or None."""
    return _stop["signal"]


class JobStopped(Exception):
    """Every rank agreed to stop at this step (a rank got SIGTERM, SIGHUP or SIGINT)."""

    def __init__(self, signum, step):
        self.signum, self.step = int(signum), int(step)
        super().__init__(signum, step)

    def __str__(self):
        return f"stopped by {signal.Signals(self.signum).name} at step {self.step}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# ---------------------------------------------------------------- the communicator

class MpiCommunicator(Communicator):
    """MPI across processes: one flat buffer per process, every collective timed.

    The communicator duplicates COMM_WORLD twice: one for the job's collectives, one
    for the notes ranks exchange when a collective times out (so they never match).
    """
    name = "mpi"

    def __init__(self, timeout=None, world=None):
        self.MPI = mpi_module()
        world = world if world is not None else self.MPI.COMM_WORLD
        self.comm, self.diag = world.Dup(), world.Dup()
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout) if timeout is not None else default_timeout()
        if not self.timeout > 0:
            raise GpunetValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        self.count = 0      # collectives started: the number in timeout messages
        self.step = None    # the training step, when the engine sets it

    # -- timed waits
    def wait(self, requests, what):
        """Wait for `requests` until the deadline; past it, name the ranks that did not come."""
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        while not self.MPI.Request.Testall(requests):
            if time.monotonic() > deadline:
                self._missed(what)
            if pause:
                time.sleep(pause)
            pause = min(0.002, pause + 2e-5)  # spin first (latency), then back off (CPU)

    def test(self, requests) -> bool:
        """Drive MPI's progress (nonblocking collectives advance inside MPI calls)."""
        return self.MPI.Request.Testall(requests)

    def _missed(self, what):
        """Past a deadline: find out which ranks are alive and in which collective."""
        grace = min(5.0, max(1.0, self.timeout / 2))
        mine = np.array([self.rank, self.count, -1 if self.step is None else self.step], dtype=np.int64)
        others = [r for r in range(self.world_size) if r != self.rank]
        notes = {r: np.zeros(3, dtype=np.int64) for r in others}
        recvs = [self.diag.Irecv(notes[r], source=r, tag=77) for r in others]
        sends = [self.diag.Isend(mine, dest=r, tag=77) for r in others]
        heard, end = {}, time.monotonic() + grace
        while len(heard) < len(others) and time.monotonic() < end:
            for r, req in zip(others, recvs):
                if r not in heard and req.Test():
                    heard[r] = notes[r]
            time.sleep(0.01)
        del sends  # left pending: the job is about to end
        missing = [r for r in others if r not in heard]
        live = sorted([self.rank, *heard])
        where = f"{what}" + (f" of step {self.step}" if self.step is not None else "") + f" (collective #{self.count})"
        if missing:
            names = ", ".join(str(r) for r in missing)
            msg = (f"rank{'s' if len(missing) > 1 else ''} {names} did not reach {where} within the "
                   f"{self.timeout:g} s timeout (stopped, hung or far slower than the others); "
                   f"rank{'s' if len(live) > 1 else ''} {', '.join(map(str, live))} waited")
        else:
            places = "; ".join(f"rank {int(n[0])} in collective #{int(n[1])}, step {int(n[2])}"
                               for n in heard.values())
            msg = (f"the ranks are in different collectives: rank {self.rank} in {where}; {places}: "
                   "they run different code or settings")
        raise DistributedError(msg, ranks=missing or others, reporter=live[0])

    # -- collectives (host NumPy buffers; device buffers go through the host)
    def _host(self, buf):
        return buf if isinstance(buf, np.ndarray) else backend.to_numpy(buf)

    def iall_reduce(self, buf, op="sum"):
        """Start an in-place sum (MAX for op="max") of a contiguous host buffer; returns the request."""
        self.count += 1
        mpi_op = self.MPI.MAX if op == "max" else self.MPI.SUM
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=mpi_op)

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        for buf in buffers:
            host = np.ascontiguousarray(self._host(buf))
            self.wait([self.iall_reduce(host)], "all-reduce")
            if host is not buf:
                buf[...] = backend.device_of(buf).asarray(host)

    def all_reduce_max(self, values):
        host = np.ascontiguousarray(values, dtype=np.float64)
        self.wait([self.iall_reduce(host, op="max")], "all-reduce (max)")
        return host

    def broadcast(self, buffers, root=0):
        for buf in buffers:
            host = np.ascontiguousarray(self._host(buf))
            self.count += 1
            self.wait([self.comm.Ibcast(host, root=root)], "broadcast")
            if host is not buf:
                buf[...] = backend.device_of(buf).asarray(host)

    def broadcast_object(self, obj, root=0):
        """Rank `root`'s picklable `obj` on every rank (arrays must be host arrays)."""
        payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == root else None
        size = np.array([payload.size if payload is not None else 0], dtype=np.int64)
        self.broadcast([size], root)
        buf = payload.copy() if payload is not None else np.empty(int(size[0]), dtype=np.uint8)
        self.broadcast([buf], root)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def allgather(self, row):
        """Every rank's fixed-size uint8/int64 `row`, stacked in rank order."""
        row = np.ascontiguousarray(row)
        out = np.empty((self.world_size, *row.shape), dtype=row.dtype)
        self.count += 1
        self.wait([self.comm.Iallgather(row, out)], "all-gather")
        return out

    def barrier(self):
        self.count += 1
        self.wait([self.comm.Ibarrier()], "barrier")

    def abort(self, code=1):
        self.MPI.COMM_WORLD.Abort(int(code))

    def close(self):
        for c in (self.comm, self.diag):
            try:
                c.Free()
            except Exception:
                pass


# ---------------------------------------------------------------- failures

def job_dir():
    path = os.environ.get("GPUNET_JOB_DIR", "")
    return Path(path) if path else None


def note_pid(rank: int) -> None:
    """Under `gpunet launch`: record this rank's pid, so the launcher can name a rank that dies."""
    d = job_dir()
    if d is not None:
        try:
            (d / f"rank{rank}.pid").write_text(f"{os.getpid()}\n")
        except OSError:
            pass


def report(rank: int, line: str, code: int) -> None:
    """One line on standard error, and the job folder's copy for the launcher."""
    text = f"gpunet: rank {rank}: {line}"
    d = job_dir()
    if d is not None:
        try:
            tmp = d / f".rank{rank}.error.tmp"
            tmp.write_text(json.dumps({"time": time.time(), "rank": rank, "line": text, "code": code}))
            tmp.replace(d / f"rank{rank}.error")
        except OSError:
            d = None
    if d is None or os.environ.get("GPUNET_JOB_VERBOSE"):
        print(text, file=sys.stderr, flush=True)


def _cause(exc) -> str:
    if isinstance(exc, (GpunetError, DistributedError)):
        return f"{type(exc).__name__}: {exc}"
    import traceback
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


class rank_guard:
    """`with rank_guard(comm): ...` — any exception ends the whole job with one line.

    The rank at fault (or, for a failure every rank sees alike, the reporter the
    error names) prints the line and aborts; the others wait a little for that abort
    (so the line is not cut off) and then abort themselves.
    """

    def __init__(self, comm):
        self.comm = comm

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or self.comm is None or self.comm.world_size == 1:
            return False
        if isinstance(exc, (SystemExit, JobStopped)):
            return False
        rank = self.comm.rank
        code = getattr(exc, "exit_code", 2 if isinstance(exc, GpunetError) else 1)
        reporter = getattr(exc, "reporter", None)
        if isinstance(exc, KeyboardInterrupt):
            report(rank, "interrupted", 130)
            self.comm.abort(130)
        if reporter is None or reporter == rank:
            step = f" at step {self.comm.step}" if self.comm.step is not None else ""
            report(rank, f"failed{step}: {_cause(exc)}" if reporter is None else _cause(exc), code)
            self.comm.abort(code)
        time.sleep(min(10.0, self.comm.timeout))  # the reporter's abort ends this process first
        self.comm.abort(code)
        return False


def bind_device(spec: str, local_rank: int):
    """The Device of this rank: "cuda"/"auto" with a GPU bind cuda:LOCAL_RANK, made current
    before MPI or NCCL exist (so neither creates a context on GPU 0); "cuda:N" binds N."""
    if spec in ("auto", "cuda") and (spec == "cuda" or backend.is_gpu_available()):
        return backend.bind_gpu(local_rank)
    dev = backend.device(spec)
    if dev.is_gpu:
        backend.bind_gpu(dev.index)
    return dev


def make_process_communicator(device, timeout=None):
    """The communicator for this rank: NCCL over MPI on a GPU (when CuPy has NCCL), MPI on
    the CPU. Returns (comm, why)."""
    dev = backend.device(device)
    control = MpiCommunicator(timeout=timeout)
    rank, world, _ = env_rank()
    if world > 1 and control.world_size != world:
        raise DistributedError(f"the launcher says {world} ranks but MPI sees {control.world_size}: start the "
                               "ranks with an MPI launcher (gpunet launch, mpiexec or srun --mpi=pmi2/pmix)")
    if dev.is_gpu:
        if backend.nccl_available():
            from .nccl import NcclProcessCommunicator
            return NcclProcessCommunicator(dev, control), f"nccl: NCCL on {dev.name}, started through MPI"
        return control, f"mpi: no NCCL for {dev.name} (install nvidia-nccl-cu12), gradients go through the host"
    return control, "mpi: MPI Allreduce between CPU processes"
