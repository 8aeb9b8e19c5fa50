"""ReLU and LeakyReLU backward, and the 1-bit ReLU mask (kernels/relu.cu and their twins).

    relu_backward:        dx = dy where y > 0, else 0          (y = max(x, 0), the saved output)
    leaky_relu_backward:  dx = dy where x > 0, else slope · dy
    relu_pack_mask:       mask[w] bit b = (y.flat[32w + b] > 0), ceil(n/32) uint32 words
    relu_backward_mask:   dx = dy where the mask bit is set, else 0

A select rather than dy · (y > 0): dy = NaN or Inf where y <= 0 gives 0, as PyTorch's
threshold_backward does. The mask keeps 1 bit per element instead of y (32× less than
float32), the trick cuDNN-free frameworks use to cut activation memory.

float32, float64, float16 and bfloat16 (ml_dtypes) arrays are taken. The 16-bit types
compare in float32, a selected dy passes through bit for bit, and slope · dy is computed in
float32 and rounded once to the input type, as PyTorch's leaky_relu_backward does.

Each op takes any shape and layout; `out` (when given) must be C-contiguous with dy's shape
and dtype, and may be dy itself. On CuPy arrays the ops run the CUDA kernels (non-contiguous
inputs are copied to contiguous first); elsewhere the `*_xp` twins, written once with `xp`,
run and serve as the kernels' test reference.
"""
from __future__ import annotations

import numpy as np

from .. import backend, threads
from ..errors import GpunetTypeError, ShapeError
from ._kernels import (cdiv, check_contiguous, check_float, check_like, compute_dtype, dtype_suffix, function,
                       is_half, same_offset_mod16, use_kernel)

BLOCK = 256
MAX_BLOCKS = 8192   # grid-stride beyond this: enough blocks to fill any current GPU
CHUNK_MIN = 1 << 16  # CPU: elements per thread below which one thread does it all


def _prepare(name, dy, aux, aux_arg, out):
    check_float(name, "dy", dy)
    if aux is not None:
        check_like(name, aux_arg, aux, dy, "dy")
    if out is not None:
        check_like(name, "out", out, dy, "dy")
        check_contiguous(name, "out", out)


def _result(xp, dy, out):
    return out if out is not None else xp.empty(dy.shape, dtype=dy.dtype)


def _select(xp, res, keep, a, b):
    """res = where(keep, a, b), written into `res` (which may alias a, b or keep's source)."""
    xp.copyto(res, a)
    xp.copyto(res, b, where=~keep)
    return res


def _keep_bits(xp, keep, dtype):
    """keep as integer words of dtype's width: all ones where True, all zeros where False."""
    bits = keep.astype(np.dtype(f"i{np.dtype(dtype).itemsize}"))
    xp.negative(bits, out=bits)  # 1 -> -1 = every bit set
    return bits


def _select_zero(xp, res, keep, a):
    """res = where(keep, a, 0) as a bitwise AND with the keep mask: exact (NaN and Inf in a
    where keep is False give +0), and about 3× faster on the CPU than where/copyto with a
    mask, which NumPy does not vectorise."""
    bits = _keep_bits(xp, keep, a.dtype)
    xp.bitwise_and(a.view(bits.dtype), bits, out=res.view(bits.dtype))
    return res


# ---------------------------------------------------------------- twins (CPU path, reference)

def _positive(a):
    """a > 0 (NaN: False). ml_dtypes' bfloat16 compares raise NumPy's invalid flag on NaN."""
    with np.errstate(invalid="ignore"):
        return a > 0


def relu_backward_xp(dy, y, out=None):
    xp = backend.xp_of(dy)
    return _select_zero(xp, _result(xp, dy, out), _positive(y), dy)


def _slope_scalar(dtype, negative_slope):
    """The slope as the kernel gets it: in the compute type (float32 for float16 / bfloat16)."""
    return compute_dtype(dtype).type(negative_slope)


def leaky_relu_backward_xp(dy, x, negative_slope, out=None):
    xp = backend.xp_of(dy)
    keep = _positive(x)
    slope = _slope_scalar(dy.dtype, negative_slope)
    with np.errstate(over="ignore", invalid="ignore"):   # a product beyond the 16-bit range is inf
        neg = (dy.astype(slope.dtype) * slope).astype(dy.dtype) if is_half(dy.dtype) else dy * slope
    return _select(xp, _result(xp, dy, out), keep, dy, neg)


def relu_pack_mask_xp(y):
    xp = backend.xp_of(y)
    n, nwords = y.size, cdiv(y.size, 32)
    bits = xp.zeros(nwords * 32, dtype=xp.uint32)
    bits[:n] = _positive(y.reshape(-1))
    shifts = xp.arange(32, dtype=xp.uint32)
    return (bits.reshape(nwords, 32) << shifts).sum(axis=1, dtype=xp.uint32)


def unpack_mask_xp(mask, shape):
    """The boolean array of `shape` whose flat element i is bit i%32 of mask[i//32]."""
    xp = backend.xp_of(mask)
    n = int(np.prod(shape, dtype=np.int64))
    bits = (mask[:, None] >> xp.arange(32, dtype=xp.uint32)) & xp.uint32(1)
    return bits.reshape(-1)[:n].reshape(shape).astype(bool)


def relu_backward_mask_xp(dy, mask, out=None):
    xp = backend.xp_of(dy)
    return _select_zero(xp, _result(xp, dy, out), unpack_mask_xp(mask, dy.shape), dy)


# ---------------------------------------------------------------- CUDA path

def _grid(n, dtype):
    per_thread = 16 // np.dtype(dtype).itemsize   # one 16-byte vector
    return max(1, min(cdiv(n, BLOCK * per_thread), MAX_BLOCKS))


def _launch_elementwise(kernel, dy, aux, out, extra=()):
    """dx = op(dy, aux) with kernels/relu.cu's `<kernel>_<f32|f64|f16|bf16>`; aux is y, x or the mask."""
    dev = backend.device_of(dy)
    xp = dev.xp
    with dev:
        dy = xp.ascontiguousarray(dy)
        aux = xp.ascontiguousarray(aux)
        dx = _result(xp, dy, out)
        n = dy.size
        if n == 0:
            return dx
        vec = same_offset_mod16(dy, dx) and (aux.dtype != dy.dtype or same_offset_mod16(dy, aux))
        fn = function(dev, "relu", f"{kernel}_{dtype_suffix(dy.dtype)}")
        args = (dy, aux, dx) + tuple(extra) + (np.int64(n), np.int32(vec))
        fn((_grid(n, dy.dtype),), (BLOCK,), args)
    return dx


# ---------------------------------------------------------------- public ops

def relu_backward(dy, y, out=None):
    """dx = dy where y > 0 else 0. `y` is the forward output (x works too)."""
    _prepare("relu_backward", dy, y, "y", out)
    if use_kernel(dy):
        return _launch_elementwise("relu_backward", dy, y, out)
    if backend.is_cupy_array(dy) or dy.ndim == 0 or threads.workers() == 1 or dy.size < CHUNK_MIN:
        return relu_backward_xp(dy, y, out)
    res = _result(np, dy, out)  # over batch chunks on the CPU threads
    threads.parallel_chunks(lambda lo, hi: relu_backward_xp(dy[lo:hi], y[lo:hi], res[lo:hi]),
                            dy.shape[0], max(1, -(-CHUNK_MIN * dy.shape[0] // dy.size)))
    return res


def leaky_relu_backward(dy, x, negative_slope, out=None):
    """dx = dy where x > 0 else negative_slope · dy. `x` is the forward input."""
    _prepare("leaky_relu_backward", dy, x, "x", out)
    slope = float(negative_slope)
    if use_kernel(dy):
        return _launch_elementwise("leaky_relu_backward", dy, x, out, extra=(_slope_scalar(dy.dtype, slope),))
    return leaky_relu_backward_xp(dy, x, slope, out)


def relu_pack_mask(y):
    """uint32 words, ceil(y.size/32) of them: bit i%32 of word i//32 is y.flat[i] > 0."""
    check_float("relu_pack_mask", "y", y)
    if not use_kernel(y):
        return relu_pack_mask_xp(y)
    dev = backend.device_of(y)
    xp = dev.xp
    with dev:
        y = xp.ascontiguousarray(y)
        nwords = cdiv(y.size, 32)
        mask = xp.empty(nwords, dtype=xp.uint32)
        if nwords:
            fn = function(dev, "relu", f"relu_pack_mask_{dtype_suffix(y.dtype)}")
            grid = max(1, min(cdiv(nwords, BLOCK // 32), MAX_BLOCKS))
            fn((grid,), (BLOCK,), (y, mask, np.int64(y.size)))
    return mask


def relu_backward_mask(dy, mask, out=None):
    """dx = dy where the mask bit (from relu_pack_mask) is set, else 0."""
    name = "relu_backward_mask"
    _prepare(name, dy, None, "", out)
    if not hasattr(mask, "dtype") or mask.dtype != np.uint32:
        raise GpunetTypeError(f"{name}: expected a uint32 mask from relu_pack_mask, "
                              f"got {getattr(mask, 'dtype', type(mask).__name__)}")
    words = cdiv(dy.size, 32)
    if tuple(mask.shape) != (words,):
        raise ShapeError(f"{name}: expected a mask of shape ({words},) for dy of shape {tuple(dy.shape)} "
                         f"({dy.size} elements), got {tuple(mask.shape)}")
    if backend.is_cupy_array(mask) != backend.is_cupy_array(dy) or \
            (backend.is_cupy_array(dy) and mask.device.id != dy.device.id):
        raise GpunetTypeError(f"{name}: expected mask on the same device as dy "
                              f"({backend.device_of(dy).name}), got {backend.device_of(mask).name}")
    if use_kernel(dy):
        return _launch_elementwise("relu_backward_mask", dy, mask, out)
    return relu_backward_mask_xp(dy, mask, out)
