"""NCCL wiring checked on the CPU against a stand-in `cupy` package shaped like CuPy 14.

In CuPy 14 `import cupy` does not import `cupy.cuda.nccl`: the submodule exists but is
an attribute of `cupy.cuda` only after `from cupy.cuda import nccl`. The stand-in below
keeps that property, records which GPU is current when each NCCL call is made, and is
installed with monkeypatch (sys.path and sys.modules), so nothing leaks into other tests.
What only real GPUs can show is in the gpu-marked tests at the end.
"""
import os
import sys
import textwrap

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend

FAKE = {
    "cupy/__init__.py": """
        __version__ = "14.2.0-fake"
        from . import cuda, random   # like CuPy: cuda is imported, cuda.nccl is not
        from .cuda import Device
        def asarray(a, dtype=None):
            import numpy
            return numpy.asarray(a, dtype=dtype)
    """,
    "cupy/random.py": """
        class RandomState:
            def __init__(self, seed=0):
                self.seed = seed
    """,
    "cupy/cuda/__init__.py": """
        from . import runtime
        current = [0]
        log = []
        class Device:
            def __init__(self, index=0):
                self.id = index
                self._prev = []
            def use(self):
                current[0] = self.id
                log.append(("use", self.id))
            def __enter__(self):
                self._prev.append(current[0])
                current[0] = self.id
                return self
            def __exit__(self, *exc):
                current[0] = self._prev.pop()
            def synchronize(self):
                pass
        class Stream:
            def __init__(self, non_blocking=False):
                self.device = current[0]
                self.ptr = 1000 + current[0]
                self.waits = []
            def wait_event(self, event):
                self.waits.append(event)
        class Event:
            def __init__(self):
                self.device = current[0]
                self.done = False
            def record(self, stream=None):
                self.stream = stream
                self.done = True
        _default = {}
        def get_current_stream():
            return _default.setdefault(current[0], Stream())
    """,
    "cupy/cuda/runtime.py": """
        def driverGetVersion():
            return 12040
        def getDeviceCount():
            return 2
        def getDeviceProperties(i):
            return {"name": b"Fake GPU", "totalGlobalMem": 2**34, "major": 9, "minor": 0}
    """,
    "cupy/cuda/nccl.py": """
        from . import current, log
        available = True
        NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
        def get_unique_id():
            return tuple(range(128))
        def groupStart():
            log.append(("groupStart",))
        def groupEnd():
            log.append(("groupEnd",))
        class NcclCommunicator:
            def __init__(self, ndev, uid, rank):
                self.device, self.ndev, self.rank = current[0], ndev, rank
                log.append(("comm", ndev, rank, current[0]))
            @classmethod
            def initAll(cls, devices):
                log.append(("initAll", list(devices)))
                return [cls.__new__(cls) for _ in devices]
            def allReduce(self, send, recv, count, dtype, op, stream):
                log.append(("allReduce", current[0], count, dtype, stream))
            def broadcast(self, send, recv, count, dtype, root, stream):
                log.append(("broadcast", current[0], count, dtype, root, stream))
            def abort(self):
                log.append(("abort",))
    """,
}


@pytest.fixture
def fake_cupy(tmp_path, monkeypatch):
    for rel, text in FAKE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for name in [m for m in sys.modules if m == "cupy" or m.startswith("cupy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("GPUNET_FORCE_CPU", raising=False)
    monkeypatch.setattr(backend, "_status_cache", None)
    monkeypatch.setattr(backend, "_devices", {})
    # This stand-in models NCCL and devices only; the probe's compile-and-launch check has
    # its own tests (test_gpu_path.py) against a stand-in that compiles.
    monkeypatch.setattr(backend, "_toolchain_problem", lambda cupy: None)
    import cupy
    yield cupy
    for name in [m for m in sys.modules if m == "cupy" or m.startswith("cupy.")]:
        sys.modules.pop(name, None)


class Buf:
    """A device buffer as NCCL sees it: a pointer, a size and a dtype."""

    def __init__(self, n, dtype=np.float32):
        self.size, self.dtype = n, np.dtype(dtype)
        self.data = type("Mem", (), {"ptr": 4096})()


class Control:
    """The MPI control plane of rank `rank` of 2: broadcast_object hands rank 0's value over."""

    def __init__(self, rank, log):
        self.rank, self.world_size, self.timeout, self.count, self.step, self.log = rank, 2, 5.0, 0, None, log

    def broadcast_object(self, obj, root=0):
        self.log.append(("bcast-uid",))
        return tuple(range(128)) if obj is None else obj


def test_the_stand_in_is_faithful_to_cupy_14(fake_cupy):
    assert not hasattr(fake_cupy.cuda, "nccl")  # the property that hid NCCL from gpunet


def test_nccl_is_found_although_import_cupy_does_not_import_it(fake_cupy):
    assert gn.is_gpu_available()
    assert backend.nccl_available()
    from gpunet.parallel.engine import choose_communicator
    comm, why = choose_communicator([gn.device("cuda:0"), gn.device("cuda:1")])
    assert why == "nccl: one process, distinct GPUs"
    assert ("initAll", [0, 1]) in fake_cupy.cuda.log


def test_nccl_unavailable_flag_is_respected(fake_cupy):
    from cupy.cuda import nccl
    nccl.available = False
    assert not backend.nccl_available()
    from gpunet.parallel import NcclCommunicator
    with pytest.raises(gn.GpunetValueError, match="NCCL is not available"):
        NcclCommunicator(["cuda:0", "cuda:1"])


def test_each_rank_binds_its_gpu_before_the_communicator_exists(fake_cupy, monkeypatch):
    """Rank 1 on a node (LOCAL_RANK=1) binds cuda:1 before NCCL's communicator is created,
    and every NCCL call it makes runs with cuda:1 current, on cuda:1's stream."""
    from gpunet.parallel import mpi
    from gpunet.parallel.nccl import NcclProcessCommunicator
    log = fake_cupy.cuda.log
    dev = mpi.bind_device("cuda", local_rank=1)
    assert dev.name == "cuda:1" and log[-1] == ("use", 1) and fake_cupy.cuda.current[0] == 1
    fake_cupy.cuda.current[0] = 0  # something else made GPU 0 current: the communicator must not care
    comm = NcclProcessCommunicator(dev, Control(1, log))
    made = [e for e in log if e[0] == "comm"]
    assert made == [("comm", 2, 1, 1)]  # world 2, rank 1, created with GPU 1 current
    assert log.index(("bcast-uid",)) < log.index(made[0])  # the unique id came over MPI first
    buf = Buf(10)
    comm.wait([comm.iall_reduce(buf)], "test")
    reduce = [e for e in log if e[0] == "allReduce"][-1]
    assert reduce == ("allReduce", 1, 10, 7, 1001)  # on GPU 1, float32, its own comm stream (ptr 1000+1)
    comm.broadcast([Buf(3, np.float64)])
    assert [e for e in log if e[0] == "broadcast"][-1] == ("broadcast", 1, 3, 8, 0, 1001)
    assert fake_cupy.cuda.current[0] == 0  # the caller's current device is restored


def test_an_explicit_device_binds_that_gpu(fake_cupy):
    from gpunet.parallel import mpi
    dev = mpi.bind_device("cuda:1", local_rank=0)
    assert dev.name == "cuda:1" and fake_cupy.cuda.log[-1] == ("use", 1)


def test_a_rank_on_the_cpu_binds_no_gpu(fake_cupy):
    from gpunet.parallel import mpi
    assert mpi.bind_device("cpu", local_rank=1).name == "cpu"
    assert not [e for e in fake_cupy.cuda.log if e[0] == "use"]


# ---------------------------------------------------------------- only real GPUs can show these

def _gpus():
    return len(gn.gpu_status().devices) if gn.is_gpu_available() else 0


@pytest.mark.gpu
def test_gpu_nccl_two_gpus_in_one_process_sum():
    if _gpus() < 2 or not backend.nccl_available():
        pytest.skip(f"needs 2 GPUs with NCCL, found {_gpus()}")
    from gpunet.parallel import NcclCommunicator
    devs = [gn.device("cuda:0"), gn.device("cuda:1")]
    comm = NcclCommunicator(devs)
    bufs = [d.asarray(np.arange(1000, dtype=np.float32) * (i + 1)) for i, d in enumerate(devs)]
    comm.all_reduce(bufs)
    for d, b in zip(devs, bufs):
        np.testing.assert_array_equal(d.to_host(b), np.arange(1000, dtype=np.float32) * 3)


def _gpu_launch(tmp_path, nproc, *args, timeout=10):
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    return subprocess.run([sys.executable, "-m", "gpunet", "launch", "--nproc", str(nproc), "--timeout",
                           str(timeout), "--", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.gpu
def test_gpu_nccl_processes_bind_their_gpu_and_equal_one_process(tmp_path):
    """2 ranks on 2 GPUs (NCCL through MPI, each on cuda:LOCAL_RANK) equal one GPU with the
    same global batch, float64, to 1e-12."""
    if _gpus() < 2 or not backend.nccl_available():
        pytest.skip(f"needs 2 GPUs with NCCL, found {_gpus()}")
    import subprocess
    common = ["--quiet", "--epochs", "2", "--dtype", "float64", "--batch-size", "48", "--device", "cuda",
              "--out", str(tmp_path / "runs")]
    r = _gpu_launch(tmp_path, 2, "gpunet", "train", "--name", "two", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0 of 2: nccl: NCCL on cuda:0" in r.stdout
    one = subprocess.run([sys.executable, "-m", "gpunet", "train", "--name", "one", *common], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    a = gn.checkpoint.read_checkpoint(tmp_path / "runs" / "one" / "checkpoint-last.npz")[1]
    b = gn.checkpoint.read_checkpoint(tmp_path / "runs" / "two" / "checkpoint-last.npz")[1]
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a if k.startswith("model/")) < 1e-12


@pytest.mark.gpu
def test_gpu_nccl_frozen_rank_is_named_within_the_timeout(tmp_path):
    """A rank stopped with SIGSTOP while its peer waits in NCCL: the NCCL communicator is
    aborted and MPI names the rank, within the timeout plus 10 s."""
    if _gpus() < 2 or not backend.nccl_available():
        pytest.skip(f"needs 2 GPUs with NCCL, found {_gpus()}")
    fault = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_fault.py")
    r = _gpu_launch(tmp_path, 2, sys.executable, fault, "stop", "1", "5", "train", "--quiet", "--device", "cuda",
                    "--epochs", "3", "--out", str(tmp_path / "runs"), timeout=5)
    assert r.returncode != 0
    assert "rank 1 did not reach" in r.stderr.strip().splitlines()[-1], r.stderr
