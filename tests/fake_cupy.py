"""A stand-in for the parts of CuPy 14 whose behaviour only a GPU would show.

Installed by the tests in place of `cupy` (in `sys.modules` and behind
`backend._import_cupy`), it keeps CuPy's rules where gpunet's GPU path depends on them:

- `cuda.Device(i)` as a context: each object keeps its own stack of previous devices, and
  `__exit__` pops it, exactly as CuPy's Device does (so re-entering one object twice fails).
- Arrays (`FakeArray`, a NumPy subclass that `backend.is_cupy_array` takes for CuPy's)
  live on one device. An elementwise operation (or `a[...] = b`) on an array of another
  device than the current one raises, as CuPy does without peer access; with peer access it would run on
  the current device's stream, unordered against the array's own device.
- `asarray` of another device's array is a peer copy queued on the current (destination)
  device's stream; it waits for nothing on the source's stream.
- `cuda.Event` records on the current stream of the device current at its creation (CUDA
  refuses an event and a stream of different devices); `Stream.wait_event` orders a stream.
- `random.RandomState` holds a `threading.Lock`, so copying or pickling it raises
  `TypeError: cannot pickle '_thread.lock' object`, as CuPy 14's does.
- `RawKernel` compiles through a replaceable hook, so a test can make it raise what CuPy
  raises when NVRTC, the CUDA headers or cuRAND are missing.

`log` records, in order, every device switch, event record/wait, copy and kernel, with
the device current at the time, so a test can check the order of operations.
"""
from __future__ import annotations

import threading
import types

import numpy as np

__version__ = "14.2.0"

log: list = []
_current = [0]  # the process's current device (cudaGetDevice)


def current() -> int:
    return _current[0]


def reset(devices: int = 2, cuda_version: int = 12090) -> None:
    log.clear()
    _current[0] = 0
    runtime.count, runtime.runtime_version = devices, cuda_version
    hooks.update(compile=compile_ok, launch=launch_ok, curand=None)


# ------------------------------------------------------------------ arrays

class _DeviceId:
    def __init__(self, i):
        self.id = i


class FakeArray(np.ndarray):
    """A NumPy array tagged with the GPU it lives on."""

    __module__ = "cupy"

    def __array_finalize__(self, obj):
        self._dev = getattr(obj, "_dev", current())

    @property
    def device(self):
        return _DeviceId(self._dev)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        arrays = [a for a in inputs + tuple(kwargs.get("out", ())) if isinstance(a, FakeArray)]
        devs = sorted({a._dev for a in arrays})
        log.append(("kernel", ufunc.__name__, current(), tuple(devs)))
        for a in arrays:
            if a._dev != current():
                raise ValueError(f"The device where the array resides ({a._dev}) is different from the "
                                 f"current device ({current()}). Peer access is unavailable between these devices.")
        plain = [np.asarray(a) if isinstance(a, FakeArray) else a for a in inputs]
        outs = kwargs.get("out")
        if outs:
            kwargs["out"] = tuple(np.asarray(o) if isinstance(o, FakeArray) else o for o in outs)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if outs:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __setitem__(self, key, value):  # CuPy copies with a kernel on the current device
        devs = {self._dev} | ({value._dev} if isinstance(value, FakeArray) else set())
        log.append(("kernel", "setitem", current(), tuple(sorted(devs))))
        if devs != {current()}:
            raise ValueError(f"The device where the arrays reside ({sorted(devs)}) is different from the "
                             f"current device ({current()}). Peer access is unavailable between these devices.")
        np.asarray(self)[key] = np.asarray(value) if isinstance(value, FakeArray) else value

    def copy(self, order="C"):  # a copy kernel on the current device
        log.append(("copy", current(), self._dev))
        if self._dev != current():
            raise ValueError(f"The device where the array resides ({self._dev}) is different from the "
                             f"current device ({current()}). Peer access is unavailable between these devices.")
        return _on_current(self)

    def get(self):
        return np.array(self)


def _wrap(result):
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, (np.ndarray, np.generic)):  # CuPy gives 0-d arrays, never scalars
        out = np.asarray(result).view(FakeArray)
        out._dev = current()
        return out
    return result


def _on_current(a, dtype=None):
    out = np.array(a, dtype=dtype).view(FakeArray)
    out._dev = current()
    return out


def asarray(a, dtype=None):
    if isinstance(a, FakeArray):
        if a._dev == current():
            return a if dtype is None or a.dtype == dtype else _on_current(a, dtype)
        log.append(("peer_copy", current(), a._dev))  # queued on the destination's stream
        return _on_current(a, dtype)
    log.append(("h2d", current()))
    return _on_current(a, dtype)


def zeros(shape, dtype=float):
    return _on_current(np.zeros(shape, dtype=dtype))


def asnumpy(a):
    return np.array(a)


def __getattr__(name):  # everything else: NumPy's, results placed on the current device
    attr = getattr(np, name)
    if callable(attr) and not isinstance(attr, type):
        def on_device(*args, **kwargs):
            return _wrap(attr(*args, **kwargs))
        return on_device
    return attr


# ------------------------------------------------------------------ cuda

class _Runtime:
    count = 2
    driver = 13000
    runtime_version = 12090

    def driverGetVersion(self):
        return self.driver

    def runtimeGetVersion(self):
        return self.runtime_version

    def getDeviceCount(self):
        return self.count

    def getDeviceProperties(self, i):
        return {"name": b"Fake GPU", "totalGlobalMem": 2**34, "major": 9, "minor": 0}

    def getDevice(self):
        return current()

    def setDevice(self, i):
        if i != current():
            log.append(("set_device", i))
        _current[0] = i


runtime = _Runtime()


class Device:
    """CuPy's cuda.Device: the previous device is kept on a stack of this object."""

    def __init__(self, device=None):
        self.id = current() if device is None else int(device)
        self._device_stack = []

    def __enter__(self):
        self._device_stack.append(current())
        runtime.setDevice(self.id)
        return self

    def __exit__(self, *exc):
        runtime.setDevice(self._device_stack.pop())

    def synchronize(self):
        log.append(("synchronize", self.id))


class Stream:
    def __init__(self, device_id):
        self.device_id = device_id

    def wait_event(self, event):
        log.append(("wait", self.device_id, event.name))


_events = [0]


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        _events[0] += 1
        self.name = f"e{_events[0]}"
        self.device_id = current()

    def record(self, stream=None):
        stream = stream or get_current_stream()
        if stream.device_id != self.device_id:
            raise RuntimeError("cudaErrorInvalidResourceHandle: event and stream are on different devices")
        log.append(("record", stream.device_id, self.name))


def get_current_stream():
    return Stream(current())


class CompileException(Exception):
    """cupy.cuda.compiler.CompileException: NVRTC's log as the message."""

    def __init__(self, msg, source="", name="", options=(), backend="nvrtc"):
        super().__init__(msg)


compiler = types.ModuleType("cupy.cuda.compiler")
compiler.CompileException = CompileException
CompileException.__module__ = "cupy.cuda.compiler"

cuda = types.SimpleNamespace(runtime=runtime, Device=Device, Event=Event, Stream=Stream,
                             get_current_stream=get_current_stream, compiler=compiler)


# ------------------------------------------------------------------ kernels and cuRAND

def compile_ok(code, name, options):
    """The compile hook: a test replaces it to raise what CuPy raises."""
    log.append(("compile", name, tuple(options)))


class RawKernel:
    def __init__(self, code, name, options=(), backend="nvrtc", **kw):
        self.code, self.name, self.options = code, name, tuple(options)

    def compile(self, log_stream=None):
        hooks["compile"](self.code, self.name, self.options)

    def __call__(self, grid, block, args):
        log.append(("launch", self.name, current()))
        (y,) = args
        y[...] = hooks["launch"](y.size).astype(y.dtype)


def launch_ok(n):
    return 2.0 * np.arange(n) + 1.0


hooks = {"compile": compile_ok, "launch": launch_ok, "curand": None}


class RandomState:
    """CuPy 14's RandomState: a lock and a cuRAND handle, neither of which can be copied."""

    def __init__(self, seed=None, method=None):
        if hooks["curand"] is not None:
            raise hooks["curand"]
        self._lock = threading.Lock()
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def random_sample(self, size=None, dtype=float):
        with self._lock:
            return _on_current(self._rng.random(size=size, dtype=dtype))


random = types.SimpleNamespace(RandomState=RandomState)
