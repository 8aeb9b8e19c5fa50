"""What a benchmark result must name about the machine it ran on.

A CPU number means little without the CPU model, the BLAS thread count and how busy
the machine was: two training processes sharing 2 cores halve each other's speed.
`blas_threads` reads OpenBLAS's own setting (the library NumPy wheels bundle) through
threadpoolctl when it is installed, else through the library's exported C function,
so that PyTorch can be given the same count (`torch.set_num_threads`).
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list:
    """The 1-, 5- and 15-minute load averages, or [] where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def _openblas_lib():
    """NumPy's bundled OpenBLAS (numpy.libs/ or numpy/.dylibs), loaded without re-init."""
    base = Path(np.__file__).resolve().parent
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy.libs/*blas*"):
        for path in glob.glob(str(base / pattern)):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def blas_threads():
    """(threads, library) NumPy's BLAS uses, or (None, reason) when it cannot be read."""
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                return int(info["num_threads"]), f"{info.get('internal_api')} {info.get('version')}"
    except Exception:  # noqa: BLE001 - optional helper; fall back to the C symbol
        pass
    lib = _openblas_lib()
    if lib is not None:
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return int(fn()), "openblas"
    return None, "unknown BLAS (install threadpoolctl to read its thread count)"


def gpu_name(dev) -> str:
    """The GPU's name from gpunet's probe (only called for a GPU device)."""
    from .. import backend
    return backend.gpu_status().devices[dev.index]["name"]


def device_name(dev) -> str:
    """What a benchmark runs on: the GPU's name, or the CPU model."""
    return gpu_name(dev) if dev.is_gpu else cpu_model()


def slug(text: str) -> str:
    """'AMD EPYC 7B13 64-Core' -> 'amd-epyc-7b13-64-core' (for result file names)."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "unknown"


def write_json(path, obj, indent: int = 1) -> Path:
    """Write a benchmark's JSON result to `path` (folders created), atomically: a crash while
    writing keeps the previous file, so a benchmark can save after every case."""
    import json
    from ..fileio import atomic_write_bytes
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())
    return path
