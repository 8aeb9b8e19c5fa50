"""Devices, array modules, transfers, random streams and kernel loading.

This is the only module that imports CuPy. Everything else asks a `Device` (or an
array, through `xp_of`) for its array module `xp` and writes its math once
(the DeZero/Chainer `xp` switch).

    dev = gn.device("auto")      # "cpu" | "cuda" | "cuda:N" | "auto"
    dev.xp, dev.name, dev.is_gpu
    x = dev.asarray(host_array)  # host -> device
    h = dev.to_host(x)           # device -> host (a sync)

Random numbers come from two places, on purpose:
- `host_rng()`: one seeded NumPy generator for weight init. Weights are drawn on the
  host and then moved, so the same seed gives the same weights on CPU and GPU.
- `Device.rng`: a seeded generator that lives on the device (dropout masks, shuffles
  that stay on the device). CPU and GPU streams differ; each is reproducible.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import numpy as np

from .errors import DeviceError, GpunetTypeError, GpunetValueError

DEFAULT_DTYPE = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# gpunet is installed from its checkout, so the hint names CuPy alone (works anywhere) and the extra.
INSTALL_HINT = ('pip install cupy-cuda12x  (cupy-cuda13x for CUDA 13 drivers), or from the gpunet '
                'checkout: pip install ".[cuda12]"')
VALID_DEVICE_FORMS = '"cpu", "cuda", "cuda:N" (N a GPU index), "auto"'
# NVRTC options for every raw kernel; flush-to-zero matches what the tests assume.
KERNEL_OPTIONS = ("-std=c++17", "-ftz=true")


# ---------------------------------------------------------------- CuPy probe

@dataclasses.dataclass(frozen=True)
class GpuStatus:
    """Why a GPU can or cannot be used. `missing` is None, "cupy", "driver", "device", or what
    the test kernel found missing: "nvrtc", "headers", "curand" or "kernel"."""
    available: bool
    missing: str | None
    reason: str
    cupy_version: str | None
    devices: tuple = ()


_status_cache: GpuStatus | None = None


def _import_cupy():
    import cupy  # noqa: F401  (the one place gpunet imports CuPy)
    return cupy


def _probe() -> GpuStatus:
    if os.environ.get("GPUNET_FORCE_CPU", "") not in ("", "0"):
        return GpuStatus(False, "device", "GPUNET_FORCE_CPU is set, so GPUs are ignored", None)
    try:
        cupy = _import_cupy()
    except Exception as e:  # ImportError, or a broken CUDA library under it
        return GpuStatus(False, "cupy", f"CuPy is not importable ({type(e).__name__}: {e}). "
                         f"Install it with {INSTALL_HINT}", None)
    version = getattr(cupy, "__version__", "?")
    try:
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception as e:
        driver = 0
        driver_error = f" ({type(e).__name__}: {e})"
    else:
        driver_error = ""
    if not driver:
        return GpuStatus(False, "driver", "CuPy is installed but no NVIDIA driver was found"
                         f"{driver_error}. Install the NVIDIA driver, then {INSTALL_HINT}", version)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return GpuStatus(False, "device", f"the NVIDIA driver reports no usable CUDA device "
                         f"({type(e).__name__}: {e})", version)
    if count == 0:
        return GpuStatus(False, "device", "the NVIDIA driver sees no CUDA device", version)
    devices = []
    for i in range(count):
        try:
            p = cupy.cuda.runtime.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
            devices.append({"index": i, "name": name, "memory_gib": p["totalGlobalMem"] / 2**30,
                            "compute_capability": f"{p['major']}.{p['minor']}"})
        except Exception as e:
            devices.append({"index": i, "name": f"unreadable ({e})", "memory_gib": float("nan"),
                            "compute_capability": "?"})
    problem = _toolchain_problem(cupy)
    if problem is not None:
        missing, why = problem
        return GpuStatus(False, missing, f"{count} CUDA device(s) visible, but {why}", version, tuple(devices))
    return GpuStatus(True, None, f"{count} CUDA device(s) usable (a test kernel compiled with NVRTC and "
                     "ran, so did a CuPy elementwise kernel, and cuRAND drew numbers)", version, tuple(devices))


# A driver and a device are not enough: CuPy compiles every kernel at run time with NVRTC
# (a separate library), gpunet's kernels are compiled with KERNEL_OPTIONS, and Dropout draws
# from cuRAND. Each is loaded lazily by CuPy, so only using them shows whether they are there.
PROBE_KERNEL = 'extern "C" __global__ void gpunet_probe(float* y) { y[threadIdx.x] = 2.0f * threadIdx.x + 1.0f; }'
_HEADER_RE = re.compile(r'(?:cannot|could not) open source file "([^"]+)"')


def _cuda_major(cupy):
    try:
        return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:
        return None


def _wheel(name: str, major) -> str:
    """The pip package carrying a CUDA component: `name-cu12` for CUDA 12, plain `name` for 13+."""
    if major is not None and major <= 12:
        return f"{name}-cu{major}"
    return name


def _toolchain_problem(cupy):
    """None when a one-line kernel compiles, launches and gives the right values, a CuPy
    elementwise kernel does too, and cuRAND draws; else (missing, reason) naming the missing piece and the pip package carrying it."""
    major = _cuda_major(cupy)
    cuda = f"CUDA {major}" if major else "your CUDA version"
    step = "compiling a test kernel with NVRTC"
    try:
        with cupy.cuda.Device(0):
            kernel = cupy.RawKernel(PROBE_KERNEL, "gpunet_probe", options=KERNEL_OPTIONS)
            kernel.compile()
            step = "launching a test kernel"
            y = cupy.zeros(32, dtype=np.float32)
            kernel((1,), (32,), (y,))
            got = cupy.asnumpy(y)  # sync: a launch failure surfaces here
            want = 2.0 * np.arange(32, dtype=np.float32) + 1.0
            if not np.array_equal(got, want):
                return "kernel", (f"a test kernel ran and wrote wrong values ({got[:4]}..., expected {want[:4]}...): "
                                  "the GPU or its driver is not working; check `nvidia-smi`")
            step = "running a CuPy elementwise kernel (compiled with CuPy's and CUDA's headers)"
            if not np.array_equal(cupy.asnumpy(y * 2), want * 2):  # sync
                return "kernel", "a CuPy elementwise kernel wrote wrong values: check `nvidia-smi`"
            step = "drawing random numbers with cuRAND"
            float(cupy.random.RandomState(0).random_sample(4, dtype=np.float32).sum())  # sync
    except Exception as e:  # noqa: BLE001 - classified below, never escapes the probe
        text = f"{type(e).__name__}: {e}"
        low = text.lower()
        header = _HEADER_RE.search(text)
        if header:
            return "headers", (f"{step} failed: the CUDA header {header.group(1)!r} was not found ({_first_line(text)}). "
                               f"Install the CUDA headers for {cuda}: `pip install {_wheel('nvidia-cuda-runtime', major)}`, "
                               "or a CUDA Toolkit with CUDA_PATH pointing at it")
        if "curand" in low:
            return "curand", (f"{step} failed: cuRAND is missing ({_first_line(text)}). "
                              f"Install it for {cuda}: `pip install {_wheel('nvidia-curand', major)}`")
        if "nvrtc" in low and type(e).__name__ != "CompileException":
            return "nvrtc", (f"{step} failed: NVRTC, the CUDA run-time compiler CuPy needs for every kernel, "
                             f"is missing ({_first_line(text)}). Install it for {cuda}: "
                             f"`pip install {_wheel('nvidia-cuda-nvrtc', major)}`")
        return "kernel", (f"{step} failed ({_first_line(text)}). Check that the CUDA components match the driver "
                          f"(`pip install {_wheel('nvidia-cuda-nvrtc', major)} {_wheel('nvidia-cuda-runtime', major)} "
                          f"{_wheel('nvidia-curand', major)}`) and see `nvidia-smi`")
    return None


def _first_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out = " | ".join(lines[:3])
    return out if len(out) <= limit else out[:limit] + "..."


def gpu_status(refresh: bool = False) -> GpuStatus:
    """Probe CuPy, the driver and the devices once; never raises."""
    global _status_cache
    if _status_cache is None or refresh:
        try:
            _status_cache = _probe()
        except Exception as e:  # belt and braces: the probe itself must never escape
            _status_cache = GpuStatus(False, "cupy", f"GPU probe failed ({type(e).__name__}: {e})", None)
    return _status_cache


def is_gpu_available() -> bool:
    """True when CuPy imports, a driver is present, at least one device is visible, and a
    test kernel compiles (NVRTC), launches and gives the right values, and cuRAND draws."""
    try:
        return gpu_status().available
    except Exception:
        return False


# ---------------------------------------------------------------- dtypes and arrays

def resolve_dtype(dtype=None) -> np.dtype:
    """None -> float32; accepts "float32"/"float64"/np.float32/np.float64."""
    if dtype is None:
        return DEFAULT_DTYPE
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    # `dt is None` first: np.dtype(...) == None compares against float64 and would let
    # an unknown string such as "fp16" through as float64/float32.
    if dt is None or dt not in FLOAT_DTYPES:
        raise GpunetValueError(f"dtype: expected float32 or float64, got {dtype!r}")
    return dt


def is_cupy_array(a) -> bool:
    m = type(a).__module__
    return m == "cupy" or m.startswith("cupy.")


def xp_of(*arrays):
    """The array module of the given arrays (cupy if any is a CuPy array, else numpy)."""
    for a in arrays:
        if is_cupy_array(a):
            return _import_cupy()
    return np


def to_numpy(a) -> np.ndarray:
    """Any array (or scalar) to a host NumPy array. A sync when `a` is on a GPU."""
    if is_cupy_array(a):
        return a.get()  # sync
    return np.asarray(a)


def device_of(a) -> "Device":
    """The Device that holds array `a`."""
    if is_cupy_array(a):
        return device(f"cuda:{a.device.id}")
    return device("cpu")


# ---------------------------------------------------------------- devices

class Generator:
    """A seeded uniform stream that lives on one device: NumPy PCG64 on the CPU, CuPy's
    RandomState on a GPU. Anything with `.uniform(shape, dtype)` can feed Dropout."""

    def __init__(self, device: "Device", seed: int):
        self.device, self.seed = device, int(seed)
        if device.is_gpu:
            with device:
                self.rng = device.xp.random.RandomState(self.seed)
        else:
            self.rng = np.random.Generator(np.random.PCG64(self.seed))

    def uniform(self, shape, dtype=None):
        dt = resolve_dtype(dtype)
        if self.device.is_gpu:
            with self.device:
                return self.rng.random_sample(size=shape, dtype=dt)
        return self.rng.random(size=shape, dtype=dt)

    def state(self) -> dict:
        """A JSON-able snapshot (exact on the CPU; on a GPU, CuPy exports no state: seed only)."""
        if self.device.is_gpu:
            return {"device": self.device.name, "seed": self.seed, "kind": "cupy-seed-only"}
        return {"device": self.device.name, "seed": self.seed, "state": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if self.device.is_gpu or "state" not in state:
            self.__init__(self.device, state.get("seed", self.seed))
        else:
            self.rng.bit_generator.state = state["state"]

    # Copying a model copies its Dropout generators. CuPy's RandomState holds a lock and a
    # cuRAND handle and refuses to be copied, so a copy is rebuilt from `state()`: exact on
    # the CPU, the same seed restarted on a GPU (as a checkpoint restores it).
    def __deepcopy__(self, memo):
        new = Generator(self.device, self.seed)
        new.set_state(self.state())
        memo[id(self)] = new
        return new

    def __copy__(self):
        return self.__deepcopy__({})


class Device:
    """One place arrays live: the host CPU (NumPy) or one CUDA GPU (CuPy)."""

    def __init__(self, kind: str, index: int = 0, seed: int = 0):
        self.kind = kind
        self.index = index
        self.is_gpu = kind == "cuda"
        self.name = f"cuda:{index}" if self.is_gpu else "cpu"
        self.xp = _import_cupy() if self.is_gpu else np
        self._modules = {}
        self._ctx_stack = []
        self.seed(seed)

    # -- random streams
    def seed(self, seed: int) -> None:
        """Reseed this device's generator (dropout masks and on-device shuffles)."""
        self._generator = Generator(self, seed)

    @property
    def rng(self):
        return self._generator.rng

    def uniform(self, shape, dtype=None):
        """Uniform [0, 1) samples of `dtype` on this device, from the device's generator."""
        return self._generator.uniform(shape, dtype)

    def generator(self, seed: int) -> "Generator":
        """An independent seeded stream on this device (e.g. one per data-parallel replica)."""
        return Generator(self, seed)

    def rng_state(self) -> dict:
        return self._generator.state()

    def set_rng_state(self, state: dict) -> None:
        self._generator.set_state(state)

    # -- transfers
    def asarray(self, a, dtype=None):
        """Put `a` on this device (copying only when needed), optionally casting.

        From another GPU the copy is ordered against both devices' streams (see `_peer_copy`).
        """
        if self.is_gpu:
            with self:
                if is_cupy_array(a) and a.device.id != self.index:
                    return self._peer_copy(a, dtype)
                return self.xp.asarray(a, dtype=dtype)
        return np.asarray(to_numpy(a), dtype=dtype)

    def _peer_copy(self, a, dtype):
        """Copy `a` from another GPU onto this one (this device is current).

        CuPy queues a peer copy on the destination's current stream only, so by itself it
        neither waits for the work still pending on the source's stream (it could read a
        gradient before the kernel writing it has run) nor holds back the source's later
        work (which could overwrite `a` before the copy has read it). Events order both:

            source stream:       ... writes a ... record(ready) ........ wait(done) ...
            destination stream:  wait(ready) -> copy -> record(done) ...
        """
        cuda = self.xp.cuda
        with cuda.Device(a.device.id):
            if not a.flags.c_contiguous:  # CuPy would do this on the source's stream after `ready`
                a = a.copy()
            ready = cuda.Event(disable_timing=True)  # an event is recorded on its own device's stream
            ready.record()
        cuda.get_current_stream().wait_event(ready)
        out = self.xp.asarray(a, dtype=dtype)
        done = cuda.Event(disable_timing=True)
        done.record()
        with cuda.Device(a.device.id):
            cuda.get_current_stream().wait_event(done)
        return out

    def to_host(self, a) -> np.ndarray:
        return to_numpy(a)  # sync

    def synchronize(self) -> None:
        if self.is_gpu:
            with self:
                self.xp.cuda.Device(self.index).synchronize()

    # -- context: makes this GPU current for allocations and launches. Re-entrant: a Device
    # is a singleton, so `with dev:` nests (a layer's op inside a replica's step); each entry
    # keeps its own CuPy context, since CuPy's Device restores the previous GPU from a stack
    # kept on that one object.
    def __enter__(self):
        if self.is_gpu:
            ctx = self.xp.cuda.Device(self.index)
            ctx.__enter__()
            self._ctx_stack.append(ctx)
        return self

    def __exit__(self, *exc):
        if self.is_gpu:
            self._ctx_stack.pop().__exit__(*exc)
        return False

    # -- raw CUDA kernels
    def raw_module(self, name: str, options=KERNEL_OPTIONS, name_expressions=None):
        """`kernels/<name>.cu` compiled for this GPU, loaded once per device and options."""
        if not self.is_gpu:
            raise DeviceError(f"raw_module({name!r}): raw CUDA kernels need a GPU device, got {self.name}")
        key = (name, tuple(options), tuple(name_expressions or ()))
        mod = self._modules.get(key)
        if mod is None:
            with self:
                mod = self.xp.RawModule(code=kernel_source(name), options=tuple(options),
                                        name_expressions=name_expressions)
                mod.compile()
            self._modules[key] = mod
        return mod

    def memory_info(self) -> dict:
        """Bytes used and held by this device's memory pool (GPU), or {} on CPU."""
        if not self.is_gpu:
            return {}
        with self:   # CuPy's pool answers for the current device
            pool = self.xp.get_default_memory_pool()
            return {"used_bytes": int(pool.used_bytes()), "total_bytes": int(pool.total_bytes())}

    def __repr__(self):
        return f"Device({self.name!r})"

    # A Device is a process-wide singleton (it owns a generator and compiled kernels):
    # copying a model must not copy its device.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __eq__(self, other):
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self):
        return hash(self.name)


_devices: dict[str, Device] = {}
_DEVICE_RE = re.compile(r"^(cpu|cuda|auto)(?::(\d+))?$")


def device(spec="auto") -> Device:
    """Resolve a device spec to a (cached) Device.

    "cpu"; "cuda" (GPU 0); "cuda:N"; "auto" (a usable GPU, else the CPU); or a Device.
    """
    if isinstance(spec, Device):
        return spec
    dev = _devices.get(spec) if isinstance(spec, str) else None
    if dev is not None:   # the per-call path (device_of): no parsing
        return dev
    if spec is None:
        spec = "auto"
    if not isinstance(spec, str) and isinstance(getattr(spec, "type", None), str):
        # torch.device("cuda:0") and alike: the same spec as a string ("cuda:0", "cpu").
        index = getattr(spec, "index", None)
        spec = spec.type if index is None else f"{spec.type}:{index}"
    if not isinstance(spec, str):
        raise GpunetTypeError(f"device: expected a string ({VALID_DEVICE_FORMS}) or a Device, "
                              f"got {type(spec).__name__} {spec!r}")
    m = _DEVICE_RE.match(spec.strip().lower())
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise DeviceError(f"device: expected one of {VALID_DEVICE_FORMS}, got {spec!r}")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "auto":
        kind = "cuda" if is_gpu_available() else "cpu"
    if kind == "cuda":
        status = gpu_status()
        if not status.available:
            raise DeviceError(f"device {spec!r}: no usable GPU: {status.reason}. "
                              f"Use device('cpu') or device('auto') to run on the CPU.")
        if index >= len(status.devices):
            raise DeviceError(f"device {spec!r}: expected a GPU index in [0, {len(status.devices)}), "
                              f"got {index} ({len(status.devices)} GPU(s) visible)")
    name = f"cuda:{index}" if kind == "cuda" else "cpu"
    if name not in _devices:
        _devices[name] = Device(kind, index, seed=_global_seed)
    return _devices[name]


# ---------------------------------------------------------------- seeding

_global_seed = 0
_host_rng = np.random.Generator(np.random.PCG64(0))


def host_rng() -> np.random.Generator:
    """The host generator that weight initializers draw from (see `manual_seed`)."""
    return _host_rng


def manual_seed(seed: int) -> None:
    """Seed weight init and every device's generator, like torch.manual_seed."""
    global _global_seed, _host_rng
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise GpunetValueError(f"seed: expected a non-negative int, got {seed!r}")
    _global_seed = int(seed)
    _host_rng = np.random.Generator(np.random.PCG64(_global_seed))
    for dev in _devices.values():
        dev.seed(_global_seed)


# ---------------------------------------------------------------- kernel sources

def kernels_dir() -> Path | None:
    """Where the `*.cu` sources are: inside the installed package, or the checkout's kernels/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if candidate.is_dir() and any(candidate.glob("*.cu")):
            return candidate
    return None


def kernel_source(name: str) -> str:
    d = kernels_dir()
    if d is None:
        raise FileNotFoundError("gpunet's CUDA kernel sources (kernels/*.cu) were not found next to "
                                f"the package ({Path(__file__).resolve().parent}); reinstall gpunet")
    path = d / f"{name}.cu"
    if not path.is_file():
        available = sorted(p.stem for p in d.glob("*.cu"))
        raise GpunetValueError(f"kernel: expected one of {available}, got {name!r}")
    return path.read_text()


def versions() -> dict:
    """Python, NumPy and CuPy versions (CuPy None when not importable)."""
    return {"python": sys.version.split()[0], "numpy": np.__version__,
            "cupy": gpu_status().cupy_version}


# ---------------------------------------------------------------- multi-GPU plumbing

def nccl_module():
    """CuPy's NCCL binding, `cupy.cuda.nccl`. CuPy 14's `import cupy` does not import this
    submodule, so attribute access (`cupy.cuda.nccl`) fails: import it explicitly."""
    _import_cupy()
    from cupy.cuda import nccl  # noqa: F401  (CuPy's own submodule; kept behind this module)
    return nccl


def nccl_available() -> bool:
    """True when a GPU is usable and CuPy's NCCL binding imports and says it is available."""
    if not is_gpu_available():
        return False
    try:
        return bool(getattr(nccl_module(), "available", False))
    except Exception:
        return False


def bind_gpu(index: int) -> "Device":
    """Make GPU `index` current for this process (before any communicator exists) and
    return its Device. One rank per GPU: rank r on a node binds cuda:LOCAL_RANK."""
    dev = device(f"cuda:{int(index)}")
    dev.xp.cuda.Device(dev.index).use()
    return dev


# ---------------------------------------------------------------- TF32 matrix products

def matmul_tf32(a, b, out=None):
    """a @ b (float32 CuPy arrays) with cuBLAS allowed TF32 tensor cores for this product only.

    CuPy's switch is its float32 GEMM compute type (`CUPY_TF32=1` sets it for the whole
    process at the first float32 GEMM); gpunet sets it around each tf32 product and puts the
    previous one back, so fp32 layers and other code keep exact float32 GEMMs. NumPy has no
    TF32 (gpunet.precision emulates it by rounding the operands)."""
    if not is_cupy_array(a):
        raise GpunetTypeError(f"matmul_tf32: expected CuPy arrays (TF32 is a cuBLAS mode), got {type(a).__name__}")
    cupy = _import_cupy()
    from cupy._core import _routines_linalg as linalg  # noqa: F401  (CuPy's compute-type switch)
    before = linalg.get_compute_type(a.dtype)
    linalg.set_compute_type(a.dtype, linalg.COMPUTE_TYPE_TF32)
    try:
        return cupy.matmul(a, b, out=out)
    finally:
        linalg.set_compute_type(a.dtype, before)
