"""A CUDA host emulator for gpunet's kernels: kernels/*.cu compiled unmodified by the host C++
compiler (cuda_shim.h, harness.cpp, build.py) and launched through a stand-in for CuPy
(fake_cupy.py) that the tests install in place of the real one:

    fake = cuda_emu.install(monkeypatch)       # gn.device("cuda") is now an emulated GPU
    x = gn.device("cuda").asarray(host)        # arrays in guarded memory
    ops.softmax_cross_entropy(x, y)            # the real wrapper launches the real kernel
"""
from __future__ import annotations

import sys

from . import build, fake_cupy  # noqa: F401
from .fake_cupy import EmulatorError, allocation_mode  # noqa: F401


def install(monkeypatch, n_devices=1):
    """Make gpunet see `n_devices` emulated GPUs for one test; returns the `cupy` stand-in
    (its `.emulator` holds the launch log and the scheduling order, 0 forward or 1 reverse)."""
    from gpunet import backend
    from gpunet.ops import _kernels
    fake = fake_cupy.make_module(n_devices)
    monkeypatch.delenv("GPUNET_FORCE_CPU", raising=False)
    monkeypatch.delenv("GPUNET_NO_KERNELS", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake)
    monkeypatch.setattr(backend, "_status_cache", None)
    # The stand-in runs gpunet's own kernels; the probe's NVRTC/cuRAND toolchain check has its
    # own tests (tests/test_gpu_path.py) against a stand-in built for it.
    monkeypatch.setattr(backend, "_toolchain_problem", lambda cupy: None)
    monkeypatch.setattr(backend, "_devices", {k: v for k, v in backend._devices.items() if k == "cpu"})
    monkeypatch.setattr(_kernels, "_functions", {})
    monkeypatch.setattr(_kernels, "_root", [])
    # ce._err_buffers is left alone: tests/conftest.py resets it around every test.
    return fake
