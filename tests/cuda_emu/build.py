"""Compile one kernels/*.cu, unmodified, with the host C++ compiler into an emulator library.

    lib = load(path_to_cu)            # cached by content hash under $GPUNET_EMU_CACHE or the temp dir
    lib.entries -> {name: Entry(index, params, bounds)}

The entries are the `extern "C" __global__` functions of the file, found by preprocessing it
with EMU_SCAN (the shim then turns __global__ and __launch_bounds__(n) into markers), exactly
the names NVRTC exports without name_expressions. Their parameter types come from the
compiler (decltype of each entry), not from parsing.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = HERE / "cuda_shim.h"   # also reached as <cuda_fp16.h> / <cuda_bf16.h> (forwarders in HERE, on -I)
HARNESS = HERE / "harness.cpp"
CXX = os.environ.get("CXX", "g++")
# -fsanitize=alignment traps (SIGILL) on a misaligned float4/double2 access, as the GPU faults.
CXXFLAGS = ["-std=c++17", "-O1", "-g0", "-fPIC", "-shared", "-fno-strict-aliasing", "-fno-fast-math",
            "-ffp-contract=off", "-fsanitize=alignment", "-fsanitize-undefined-trap-on-error",
            "-U_FORTIFY_SOURCE", "-Wno-unknown-pragmas", "-Wno-attributes"]
ENTRY_RE = re.compile(r'extern\s+"C"\s+EMU_GLOBAL\s+void\s+(?:EMU_LB\(\s*(\d+)[^)]*\)\s*)?(\w+)\s*\(')


class BuildError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Entry:
    index: int
    params: tuple   # C types as the compiler spells them: "const float*", "long long", ...
    bounds: int     # __launch_bounds__ max threads, or 1024


def compiler_available() -> bool:
    return shutil.which(CXX) is not None


def host_supported() -> bool:
    """The fibers' context switch is x86-64 assembly; the guard pages need Linux mprotect."""
    return platform.machine() in ("x86_64", "AMD64") and sys.platform.startswith("linux")


def scan_entries(cu: Path) -> list[tuple[str, int]]:
    """(name, launch bound) of every extern "C" __global__ function, in file order."""
    r = subprocess.run([CXX, "-std=c++17", "-E", "-P", "-DEMU_SCAN", f"-I{HERE}", "-include", str(SHIM), "-x", "c++",
                        str(cu)],
                       capture_output=True, text=True)
    if r.returncode:
        raise BuildError(f"preprocessing {cu} failed:\n{r.stderr}")
    return [(m.group(2), int(m.group(1) or 1024)) for m in ENTRY_RE.finditer(r.stdout)]


def _cache_dir() -> Path:
    d = Path(os.environ.get("GPUNET_EMU_CACHE", Path(tempfile.gettempdir()) / f"gpunet-cuda-emu-{os.getuid()}"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class Library:
    def __init__(self, so: Path, cu: Path):
        self.path, self.cu = so, cu
        self.dll = ctypes.CDLL(str(so))
        d = self.dll
        d.emu_count.restype = ctypes.c_int
        d.emu_name.restype = d.emu_sig.restype = ctypes.c_char_p
        d.emu_name.argtypes = d.emu_sig.argtypes = d.emu_bounds.argtypes = [ctypes.c_int]
        d.emu_launch.restype = ctypes.c_int
        d.emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_ulonglong)]
        self.entries = {}
        for i in range(d.emu_count()):
            sig = d.emu_sig(i).decode()
            self.entries[d.emu_name(i).decode()] = Entry(i, tuple(sig.split(",")) if sig else (), d.emu_bounds(i))

    def launch(self, index, grid, block, arg_ptrs, schedule=0):
        """Run entry `index`; returns (rc, message, fault address)."""
        g = (ctypes.c_uint * 3)(*grid)
        b = (ctypes.c_uint * 3)(*block)
        buf = ctypes.create_string_buffer(4096)
        fault = ctypes.c_ulonglong(0)
        rc = self.dll.emu_launch(index, g, b, arg_ptrs, schedule, buf, len(buf), ctypes.byref(fault))
        return rc, buf.value.decode(errors="replace"), fault.value


_loaded: dict = {}


def load(cu, extra_flags=()) -> Library:
    """The emulator library for the .cu file `cu` (built once per content and flags)."""
    cu = Path(cu).resolve()
    src = cu.read_bytes()
    headers = b"".join(h.read_bytes() for h in sorted(HERE.glob("*.h")))   # the shim, cuda_fp16.h, cuda_bf16.h
    key = hashlib.sha256(src + headers + HARNESS.read_bytes() + Path(__file__).read_bytes()
                         + " ".join(CXXFLAGS + list(extra_flags)).encode()).hexdigest()[:16]
    if key in _loaded:
        return _loaded[key]
    d = _cache_dir()
    so = d / f"{cu.stem}-{key}.so"
    if not so.exists():
        entries = scan_entries(cu)
        if not entries:
            raise BuildError(f'{cu}: no extern "C" __global__ entry found')
        work = Path(tempfile.mkdtemp(dir=d))
        klist = work / "entries.inc"
        klist.write_text("".join(f"EMU_KERNEL({n}, {b})\n" for n, b in entries))
        tmp = work / so.name
        cmd = [CXX, *CXXFLAGS, *extra_flags, f'-DEMU_CU="{cu}"', f'-DEMU_KLIST="{klist}"', f"-I{HERE}",
               str(HARNESS), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise BuildError(f"compiling {cu.name} for the emulator failed:\n{' '.join(cmd)}\n{r.stderr[-6000:]}")
        os.replace(tmp, so)
        shutil.rmtree(work, ignore_errors=True)
    lib = Library(so, cu)
    _loaded[key] = lib
    return lib
