"""A stand-in for the parts of CuPy that gpunet's GPU path touches, backed by emulated devices.

Arrays are NumPy arrays (a subclass whose module is "cupy", so gpunet's `is_cupy_array` says
yes) living in guarded host memory: every allocation sits between PROT_NONE pages, either
flush against the page after it (mode "end": the first byte past the end faults) or starting
on a page boundary (mode "start": the byte before faults, and pointers are 4096-aligned like
CuPy's pool, which aligns to 512). Each allocation belongs to the device that was current.

`RawModule(code=..., options=..., name_expressions=...)` compiles `code` with the host
compiler through tests/cuda_emu (the same text NVRTC would get) and `get_function(name)`
returns a kernel whose `__call__(grid, block, args)` checks what CuPy and the driver would
reject, and what would be silently wrong on a GPU, before running the emulator:
  * grid and block must be tuples (CuPy's Function.__call__ types them) of 1-3 positive
    ints within CUDA's limits, and block's threads at most the entry's __launch_bounds__;
  * args must be a tuple or list with one value per kernel parameter;
  * a pointer parameter takes an array of this stand-in, on the current device (CuPy
    rejects a NumPy array with TypeError 'Unsupported type'); a float pointer takes
    exactly that dtype (__half / __half2: float16, __nv_bfloat16 / __nv_bfloat162:
    ml_dtypes.bfloat16), an integer pointer any integer dtype;
  * a scalar parameter takes a NumPy scalar of exactly its type (a Python int goes to the
    GPU as 8 bytes, float as a double, so they only fit `long long` / `double`; __half
    takes np.float16, __nv_bfloat16 ml_dtypes.bfloat16);
  * the module must have been compiled on the current device (CUDA_ERROR_INVALID_HANDLE
    otherwise), and the entry must exist (CUDA_ERROR_NOT_FOUND).
"""
from __future__ import annotations

import bisect
import contextlib
import ctypes
import hashlib
import mmap
import os
import tempfile
import threading
import types
import weakref
from pathlib import Path

import numpy as np

from . import build

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_PROT_NONE = 0


class EmulatorError(RuntimeError):
    """A kernel launch the emulator refused or a kernel that misbehaved (message says which)."""


class CUDADriverError(RuntimeError):
    pass


class CompileException(RuntimeError):
    pass


# ---------------------------------------------------------------- guarded device memory

class _Allocation:
    __slots__ = ("base", "start", "nbytes", "device")


_allocs: dict = {}        # start address -> _Allocation, while its mmap (the arrays' base) lives
_starts: list = []        # sorted start addresses
_state = types.SimpleNamespace(mode="end", current=[0], n_devices=1, schedule=0, launches=[])


def _forget(start):
    _allocs.pop(start, None)
    i = bisect.bisect_left(_starts, start)
    if i < len(_starts) and _starts[i] == start:
        _starts.pop(i)


def _register(a, mm):
    bisect.insort(_starts, a.start)
    _allocs[a.start] = a
    weakref.finalize(mm, _forget, a.start)


def _allocate(nbytes, device):
    pages = max(1, -(-nbytes // PAGE))
    mm = mmap.mmap(-1, (pages + 2) * PAGE)
    probe = ctypes.c_char.from_buffer(mm)
    base = ctypes.addressof(probe)
    del probe
    for off in (0, (pages + 1) * PAGE):
        if _libc.mprotect(base + off, PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    a = _Allocation()
    a.base, a.nbytes, a.device = base, nbytes, device
    a.start = base + (pages + 1) * PAGE - nbytes if _state.mode == "end" else base + PAGE
    _register(a, mm)
    return a, mm


def allocation_of(ptr):
    """The live allocation holding address `ptr` (its one-past-the-end included), or None."""
    i = bisect.bisect_right(_starts, ptr) - 1
    if i < 0:
        return None
    a = _allocs.get(_starts[i])
    if a is None or ptr > a.start + a.nbytes:
        return None
    return a


def _empty(shape, dtype=float, order="C", device=None):
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    a, mm = _allocate(n, _state.current[-1] if device is None else device)
    arr = np.frombuffer(mm, dtype=np.uint8, count=n, offset=a.start - a.base).view(dtype).reshape(shape)
    if order == "F":
        arr = arr.reshape(shape[::-1]).T
    return arr.view(ndarray)


def _to_device(x):
    """x as a device array: unchanged when it already lives in device memory, else a copy."""
    if isinstance(x, ndarray) and allocation_of(x.__array_interface__["data"][0]) is not None:
        return x
    x = np.asarray(x)
    out = _empty(x.shape, x.dtype)
    np.copyto(out.view(np.ndarray), x, casting="unsafe")
    return out


class _MemoryPointer:
    def __init__(self, ptr):
        self.ptr = ptr


class ndarray(np.ndarray):
    """A NumPy array in emulated device memory (gpunet sees a CuPy array)."""
    __module__ = "cupy"

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        return _to_device(arr)   # CuPy returns 0-d arrays, never scalars

    def __getitem__(self, key):
        r = super().__getitem__(key)
        return r if isinstance(r, np.ndarray) else _to_device(np.asarray(r))

    @property
    def device(self):
        a = allocation_of(self.__array_interface__["data"][0])
        if a is None:
            raise EmulatorError("array is not in emulated device memory")
        return Device(a.device)

    @property
    def data(self):
        return _MemoryPointer(self.__array_interface__["data"][0])

    def get(self, stream=None, order="C", out=None):
        return np.array(self.view(np.ndarray), copy=True, order=order)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        r = self.view(np.ndarray).astype(dtype, order=order, casting=casting, copy=copy)
        return self if r is self.view(np.ndarray) else _to_device(r)

    def copy(self, order="C"):
        return _to_device(self.view(np.ndarray).copy(order=order))


# ---------------------------------------------------------------- the module's functions

def empty(shape, dtype=float, order="C"):
    return _empty(shape, dtype, order)


def empty_like(a, dtype=None):
    return _empty(a.shape, a.dtype if dtype is None else dtype)


def zeros(shape, dtype=float, order="C"):
    out = _empty(shape, dtype, order)
    out.view(np.ndarray)[...] = 0
    return out


def zeros_like(a, dtype=None):
    return zeros(a.shape, a.dtype if dtype is None else dtype)


def ones(shape, dtype=float):
    out = _empty(shape, dtype)
    out.view(np.ndarray)[...] = 1
    return out


def full(shape, fill_value, dtype=None):
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    out = _empty(shape, dtype)
    out.view(np.ndarray)[...] = fill_value
    return out


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        if allocation_of(a.__array_interface__["data"][0]) is not None:
            return a
    return _to_device(np.asarray(a.view(np.ndarray) if isinstance(a, ndarray) else a, dtype=dtype))


array = asarray


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype)
    return a if a.flags.c_contiguous else _to_device(np.ascontiguousarray(a.view(np.ndarray)))


def _wrap(fn):
    def wrapped(*args, **kwargs):
        r = fn(*args, **kwargs)
        if isinstance(r, (np.ndarray, np.generic)):
            return _to_device(r)
        if isinstance(r, tuple) and all(isinstance(x, np.ndarray) for x in r):
            return tuple(_to_device(x) for x in r)
        return r
    wrapped.__name__ = getattr(fn, "__name__", "fn")
    return wrapped


# ---------------------------------------------------------------- devices, pools, random

class Device:
    def __init__(self, device=None):
        self.id = _state.current[-1] if device is None else int(device)
        if not 0 <= self.id < _state.n_devices:
            raise CUDADriverError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")

    def __enter__(self):
        _state.current.append(self.id)
        return self

    def __exit__(self, *exc):
        _state.current.pop()
        return False

    def use(self):
        _state.current[-1] = self.id

    def synchronize(self):
        pass

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id


class MemoryPool:
    def __init__(self):
        self._by_device = {}

    def used_bytes(self):
        dev = _state.current[-1]
        return sum(a.nbytes for a in list(_allocs.values()) if a.device == dev)

    def total_bytes(self):
        return self.used_bytes()


class RandomState:
    """numpy's RandomState on the host, results on the device. Holds a lock, so, like CuPy
    14's, it cannot be deep-copied."""

    def __init__(self, seed=None):
        self._rs = np.random.RandomState(seed)
        self._lock = threading.Lock()

    def random_sample(self, size=None, dtype=float):
        return _to_device(self._rs.random_sample(size).astype(dtype))


# ---------------------------------------------------------------- RawModule / RawKernel

_NVRTC_FLAGS = {"-std=c++11", "-std=c++14", "-std=c++17", "--std=c++11", "--std=c++14", "--std=c++17",
                "-ftz=true", "-ftz=false", "-prec-div=true", "-prec-div=false", "-prec-sqrt=true",
                "-prec-sqrt=false", "-fmad=true", "-fmad=false", "-use_fast_math", "--use_fast_math",
                "-lineinfo", "--device-debug", "-G", "-default-device", "--extensible-whole-program"}
_NVRTC_PREFIXES = ("-D", "-U", "-I", "--gpu-architecture=", "-arch=", "--maxrregcount=", "-maxrregcount=")
_SCALARS = {"int": np.int32, "unsigned int": np.uint32, "long long": np.int64, "unsigned long long": np.uint64,
            "float": np.float32, "double": np.float64, "bool": np.bool_}
_CTYPES = {"int": ctypes.c_int32, "unsigned int": ctypes.c_uint32, "long long": ctypes.c_int64,
           "unsigned long long": ctypes.c_uint64, "float": ctypes.c_float, "double": ctypes.c_double,
           "bool": ctypes.c_bool}
_POINTEES = {"float": np.float32, "double": np.float64, "__half": np.float16, "__half2": np.float16}
try:   # CuPy 14 takes ml_dtypes' bfloat16 arrays (and passes their pointers like any other)
    import ml_dtypes
    _POINTEES.update({"__nv_bfloat16": ml_dtypes.bfloat16, "__nv_bfloat162": ml_dtypes.bfloat16})
    _SCALARS["__nv_bfloat16"] = ml_dtypes.bfloat16
except ImportError:
    pass
_SCALARS["__half"] = np.float16   # 16-bit scalars travel as their bit pattern


def _source_file(code: str) -> Path:
    """The text NVRTC would compile, as a file the host compiler can include."""
    d = build._cache_dir() / "src"
    d.mkdir(exist_ok=True)
    path = d / f"{hashlib.sha256(code.encode()).hexdigest()[:16]}.cu"
    if not path.exists():   # written whole, then renamed: parallel test runs may race here
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(code)
        os.replace(tmp, path)
    return path


class RawModule:
    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if code is None or path is not None:
            raise EmulatorError("RawModule stand-in: expected code= (gpunet compiles sources), got path=")
        if not isinstance(code, str):
            raise TypeError(f"RawModule: code must be str, got {type(code).__name__}")
        if backend != "nvrtc":
            raise EmulatorError(f"RawModule stand-in: only the NVRTC backend, got {backend!r}")
        if not isinstance(options, (tuple, list)) or not all(isinstance(o, str) for o in options):
            raise TypeError(f"RawModule: options must be a tuple of str, got {options!r}")
        for o in options:
            if o not in _NVRTC_FLAGS and not o.startswith(_NVRTC_PREFIXES):
                raise CompileException(f"nvrtc: error: unrecognized option {o!r}")
        if name_expressions:
            raise EmulatorError("RawModule stand-in: name_expressions (templated entries) are not emulated; "
                                "gpunet's entries are extern \"C\"")
        self.code, self.options = code, tuple(options)
        self._lib = None
        self._device = None

    def compile(self, log_stream=None):
        if self._lib is None:
            try:
                self._lib = build.load(_source_file(self.code))
            except build.BuildError as e:
                raise CompileException(str(e)) from None
            self._device = _state.current[-1]
        return self

    def get_function(self, name):
        self.compile()
        if name not in self._lib.entries:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r}; the module has "
                                  f"{sorted(self._lib.entries)})")
        return Function(self, name)


class Function:
    def __init__(self, module, name):
        self.module, self.name = module, name
        self.entry = module._lib.entries[name]

    def _fail(self, what):
        raise EmulatorError(f"{self.name}: {what}")

    def _dims(self, label, v, limits):
        if not isinstance(v, tuple):
            raise TypeError(f"Argument '{label}' has incorrect type (expected tuple, got {type(v).__name__})")
        if not 1 <= len(v) <= 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in v):
            self._fail(f"{label} expected 1 to 3 ints, got {v!r}")
        dims = [int(d) for d in v] + [1] * (3 - len(v))
        for d, lim, axis in zip(dims, limits, "xyz"):
            if not 1 <= d <= lim:
                self._fail(f"{label}.{axis} expected in [1, {lim}], got {d} (from {v!r})")
        return dims

    def _arg(self, k, ctype, a, dev):
        where = f"argument {k} ({ctype})"
        if ctype.endswith("*"):
            if a is None:
                return ctypes.c_void_p(0)
            if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
                raise TypeError(f"{self.name}: {where}: Unsupported type {type(a)} (a host NumPy array)")
            if not isinstance(a, ndarray):
                self._fail(f"{where}: expected a device array, got {type(a).__name__} {a!r}")
            ptr = a.__array_interface__["data"][0]
            alloc = allocation_of(ptr)
            if alloc is None:
                self._fail(f"{where}: the array is not in device memory")
            if alloc.device != dev:
                self._fail(f"{where}: array on cuda:{alloc.device}, launched on cuda:{dev} (the current device)")
            pointee = ctype.replace("const ", "").rstrip("*").strip()
            if pointee in _POINTEES and a.dtype != _POINTEES[pointee]:
                self._fail(f"{where}: expected a {np.dtype(_POINTEES[pointee])} array, got {a.dtype}")
            if pointee not in _POINTEES and a.dtype.kind not in "iu":
                self._fail(f"{where}: expected an integer array, got {a.dtype}")
            return ctypes.c_void_p(ptr)
        if ctype not in _SCALARS:
            self._fail(f"{where}: parameter type not emulated")
        want = _SCALARS[ctype]
        if isinstance(a, ndarray):
            self._fail(f"{where}: expected a scalar, got a device array")
        if isinstance(a, bool) or isinstance(a, np.bool_):
            got = np.bool_
        elif type(a) is int:
            got = np.int64     # CuPy passes a Python int as 8 bytes
        elif type(a) is float:
            got = np.float64
        elif isinstance(a, np.generic):
            got = type(a)
        else:
            raise TypeError(f"{self.name}: {where}: Unsupported type {type(a)}")
        if np.dtype(got) != np.dtype(want):
            self._fail(f"{where}: expected a {np.dtype(want)} value, got {np.dtype(got)} "
                       f"({type(a).__name__} {a!r}): the kernel would read the wrong bytes")
        if np.dtype(want).itemsize == 2 and np.dtype(want).kind != "i":   # __half, __nv_bfloat16
            return ctypes.c_uint16(int(np.asarray(a).view(np.uint16)))
        return _CTYPES[ctype](a.item() if isinstance(a, np.generic) else a)

    def __call__(self, grid, block, args, shared_mem=0, stream=None, enable_cooperative_groups=False):
        dev = _state.current[-1]
        if self.module._device != dev:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_HANDLE: {self.name} was loaded on cuda:{self.module._device}, "
                                  f"launched with cuda:{dev} current")
        g = self._dims("grid", grid, (2**31 - 1, 65535, 65535))
        b = self._dims("block", block, (1024, 1024, 64))
        threads = b[0] * b[1] * b[2]
        if threads > self.entry.bounds:
            self._fail(f"block of {threads} threads exceeds the entry's __launch_bounds__({self.entry.bounds}) "
                       f"(CUDA_ERROR_INVALID_VALUE)")
        if shared_mem:
            self._fail(f"dynamic shared memory ({shared_mem} bytes) is not emulated")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        params = self.entry.params
        if len(args) != len(params):
            self._fail(f"expected {len(params)} arguments ({', '.join(params)}), got {len(args)}")
        holders = [self._arg(k, p, a, dev) for k, (p, a) in enumerate(zip(params, args))]
        ptrs = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        _state.launches.append((self.name, tuple(g), tuple(b), tuple(args)))
        rc, msg, fault = self.module._lib.launch(self.entry.index, g, b, ptrs, _state.schedule)
        if rc:
            if fault:
                msg += _describe_fault(fault, params, args)
            raise EmulatorError(f"{self.name}<<<{tuple(g)}, {tuple(b)}>>>: {msg}")


def _describe_fault(addr, params, args):
    for k, (p, a) in enumerate(zip(params, args)):
        if not isinstance(a, ndarray):
            continue
        al = allocation_of(a.__array_interface__["data"][0])
        if al is None:
            continue
        end = al.start + al.nbytes
        if end <= addr < end + PAGE + PAGE:
            return f" ({addr - end} bytes past the end of argument {k} ({p}), an allocation of {al.nbytes} bytes)"
        if al.start - PAGE <= addr < al.start:
            return f" ({al.start - addr} bytes before the start of argument {k} ({p}), an allocation of {al.nbytes} bytes)"
    return " (outside every argument's allocation)"


# ---------------------------------------------------------------- the module object

def make_module(n_devices=1):
    """A fresh `cupy` module object for `n_devices` emulated GPUs."""
    _state.n_devices, _state.current, _state.launches, _state.schedule = n_devices, [0], [], 0
    m = types.ModuleType("cupy")
    m.__version__ = "14.2.0+gpunet-emulator"
    explicit = dict(ndarray=ndarray, empty=empty, empty_like=empty_like, zeros=zeros, zeros_like=zeros_like,
                    ones=ones, full=full, asarray=asarray, array=array, ascontiguousarray=ascontiguousarray,
                    RawModule=RawModule, get_default_memory_pool=lambda: _pool)
    m.__dict__.update(explicit)

    def getattr_(name):
        v = getattr(np, name)
        if callable(v) and not isinstance(v, type):
            return _wrap(v)
        return v
    m.__getattr__ = getattr_
    runtime = types.SimpleNamespace(
        driverGetVersion=lambda: 12080, getDeviceCount=lambda: _state.n_devices,
        getDeviceProperties=lambda i: {"name": b"gpunet CUDA emulator", "totalGlobalMem": 16 * 2**30,
                                       "major": 9, "minor": 0})
    m.cuda = types.SimpleNamespace(Device=Device, runtime=runtime,
                                   driver=types.SimpleNamespace(CUDADriverError=CUDADriverError),
                                   compiler=types.SimpleNamespace(CompileException=CompileException))
    m.random = types.SimpleNamespace(RandomState=RandomState)
    m.emulator = _state
    return m


_pool = MemoryPool()


@contextlib.contextmanager
def allocation_mode(mode):
    """Place new allocations flush against the guard page after them ("end") or before ("start")."""
    if mode not in ("end", "start"):
        raise ValueError(mode)
    old, _state.mode = _state.mode, mode
    try:
        yield
    finally:
        _state.mode = old
