"""Loading and launching gpunet's raw CUDA kernels (kernels/<op>.cu) from the op wrappers.

Each op dispatches to its kernel when its arrays are CuPy arrays and `kernels_available`
says yes; otherwise it runs its NumPy/CuPy twin. Setting GPUNET_NO_KERNELS=1 forces the
twins everywhere (for A/B checks on a GPU).
"""
from __future__ import annotations

import os

import numpy as np

from .. import backend
from ..errors import DeviceError, GpunetTypeError, GpunetValueError, ShapeError

try:   # bfloat16 arrays: NumPy and CuPy 14 take ml_dtypes' dtype (the gpunet[bf16] extra)
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:   # pragma: no cover - bfloat16 inputs then cannot exist
    BFLOAT16 = None
# What the kernels read and write: float32 and float64, and float16 / bfloat16 (computed in
# float32, results rounded to the input type).
KERNEL_DTYPES = backend.FLOAT_DTYPES + (np.dtype(np.float16),) + ((BFLOAT16,) if BFLOAT16 is not None else ())
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.float16): "f16"}
if BFLOAT16 is not None:
    _SUFFIX[BFLOAT16] = "bf16"
KERNEL_DTYPE_NAMES = "float32, float64, float16 or bfloat16"

_functions: dict = {}   # (device name, module, entry) -> compiled kernel, loaded once per device
_root: list = []        # [kernels folder or None], looked up once: no filesystem work per call


def kernels_root():
    """The folder of the *.cu sources (backend.kernels_dir), found on first use and then kept."""
    if not _root:
        _root.append(backend.kernels_dir())
    return _root[0]


def _forced_off() -> bool:
    return os.environ.get("GPUNET_NO_KERNELS", "") not in ("", "0")


def kernels_available(device) -> bool:
    """True when `device` is a usable GPU and gpunet's kernel sources are installed."""
    try:
        dev = backend.device(device)
    except DeviceError:
        return False
    if not dev.is_gpu or _forced_off():
        return False
    return kernels_root() is not None


def use_kernel(a) -> bool:
    """Dispatch rule: CuPy array (always on a GPU), kernels not forced off, sources installed."""
    return backend.is_cupy_array(a) and not _forced_off() and kernels_root() is not None


def function(dev, module: str, name: str):
    """Kernel `name` of kernels/<module>.cu on `dev`, compiled once per device (backend caches)."""
    key = (dev.name, module, name)
    fn = _functions.get(key)
    if fn is None:
        fn = dev.raw_module(module).get_function(name)
        _functions[key] = fn
    return fn


def reset_caches() -> None:
    """Forget the kernels folder and every loaded kernel (tests that swap devices or sources)."""
    _root.clear()
    _functions.clear()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def same_offset_mod16(*arrays) -> bool:
    """True when every array's data pointer has the same offset modulo 16 bytes, so one
    scalar head brings all of them to a float4/double2 boundary at once."""
    ptrs = [a.data.ptr for a in arrays]
    return all((p - ptrs[0]) % 16 == 0 for p in ptrs)


def dtype_suffix(dtype) -> str:
    """The kernels' entry suffix for an element type: f32, f64, f16 or bf16."""
    return _SUFFIX[np.dtype(dtype)]


def is_half(dtype) -> bool:
    """float16 or bfloat16: stored in 16 bits, computed in float32."""
    return np.dtype(dtype).itemsize == 2


def compute_dtype(dtype):
    """The type the kernels and twins compute in: float32 for float16 / bfloat16, else dtype."""
    return np.dtype(np.float32) if is_half(dtype) else np.dtype(dtype)


def check_float(name: str, arg: str, a) -> None:
    """`a` must be a float32, float64, float16 or bfloat16 array."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise GpunetTypeError(f"{name}: expected {arg} to be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype not in KERNEL_DTYPES:
        raise GpunetTypeError(f"{name}: expected {arg} of dtype {KERNEL_DTYPE_NAMES}, got {a.dtype}")


def check_like(name: str, arg: str, a, ref, ref_arg: str) -> None:
    """`a` must match `ref` in array module, device, shape and dtype."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise GpunetTypeError(f"{name}: expected {arg} to be an array like {ref_arg}, got {type(a).__name__}")
    if backend.is_cupy_array(a) != backend.is_cupy_array(ref) or \
            (backend.is_cupy_array(a) and a.device.id != ref.device.id):
        raise GpunetTypeError(f"{name}: expected {arg} on the same device as {ref_arg} "
                              f"({backend.device_of(ref).name}), got {backend.device_of(a).name}")
    if tuple(a.shape) != tuple(ref.shape):
        raise ShapeError(f"{name}: expected {arg} of shape {tuple(ref.shape)} (the shape of {ref_arg}), "
                         f"got {tuple(a.shape)}")
    if a.dtype != ref.dtype:
        raise GpunetTypeError(f"{name}: expected {arg} of dtype {ref.dtype} (the dtype of {ref_arg}), got {a.dtype}")


def check_contiguous(name: str, arg: str, a) -> None:
    if not a.flags.c_contiguous:
        raise GpunetValueError(f"{name}: expected a C-contiguous {arg} (use xp.ascontiguousarray), "
                               f"got strides {tuple(a.strides)} for shape {tuple(a.shape)}")
