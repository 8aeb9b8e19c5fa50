"""Mixed precision: the compute precision of matrix products and convolutions.

    precision   storage of weights, grads,      GEMM operands (x, W, dy)      GEMM result
                optimizer state, activations
    fp32        float32                         float32                       float32
    tf32        float32                         TF32 (10-bit mantissa)        float32 (fp32 accumulate)
    bf16        float32 (master weights)        bfloat16                      rounded to bfloat16
    fp16        float32 (master weights)        float16                       rounded to float16

Autocast at the GEMM (as torch.autocast's "lower precision" op list): parameters stay
float32 and are the optimizer's master weights; Linear and Conv cast their input and
weight to the compute dtype just before the matrix product (the weight's copy is kept for
backward, so it is cast once per step), multiply with float32 accumulation, and hand on
the result as float32 holding low-precision values. Everything else — bias adds,
BatchNorm statistics, softmax cross-entropy, reductions, the optimizer — runs in float32
on those values. An fp16 result beyond ±65504 becomes ±Inf, exactly as on a GPU: that is
what dynamic loss scaling (gpunet.loss_scale) watches for.

On CuPy the operands are real float16/bfloat16 arrays and cuBLAS runs the product on
tensor cores (float32 accumulation); tf32 switches cuBLAS's float32 compute type to TF32
around the product (backend.matmul_tf32). On NumPy low-precision GEMMs are very slow
(no BLAS for them), so the CPU *emulates* the tensor-core semantics: the operands are
rounded to the low precision (round to nearest even) but stay float32, the product runs
in float32 BLAS (= float32 accumulation) and its result is rounded again. That gives the
numbers a GPU's bf16/fp16 GEMM with float32 accumulation gives, up to summation order.
On the CPU tf32 is emulated the same way (operands rounded to a 10-bit mantissa; cuBLAS's
own conversion may differ in the last bit): a tf32 run on the CPU shows TF32's numerics,
never its speed.

bf16 needs `ml_dtypes` (`pip install "gpunet[bf16]"`); without it, bf16 is refused.
"""
from __future__ import annotations

import numpy as np

from . import backend, threads
from .errors import GpunetValueError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def _ml_dtypes():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


# ---------------------------------------------------------------- rounding (the CPU's emulation)

def round_bf16(a, out=None):
    """float32 `a` rounded to the nearest bfloat16 (ties to even), kept as float32."""
    r = a.astype(_ml_dtypes().bfloat16)
    if out is None:
        return r.astype(np.float32)
    np.copyto(out, r, casting="unsafe")
    return out


def round_fp16(a, out=None):
    """float32 `a` rounded to the nearest float16 (ties to even; beyond ±65504 -> ±Inf), as float32."""
    with np.errstate(over="ignore"):  # the overflow to Inf is the point (loss scaling watches for it)
        r = a.astype(np.float16)
    if out is None:
        return r.astype(np.float32)
    np.copyto(out, r, casting="unsafe")
    return out


def round_tf32(a, out=None):
    """float32 `a` with its mantissa rounded to TF32's 10 bits (ties to even), as float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = ((u + np.uint32(0xFFF) + ((u >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)).view(np.float32)
    r = np.where(np.isnan(a), a, r)  # a NaN's payload could round into an Inf pattern
    if out is None:
        return r.reshape(a.shape)
    out[...] = r.reshape(a.shape)
    return out


_ROUND = {"tf32": round_tf32, "bf16": round_bf16, "fp16": round_fp16}


# ---------------------------------------------------------------- the policy

class Precision:
    """The compute precision of a model's GEMM layers (Linear, Conv1d/2d).

    name: "tf32", "bf16" or "fp16" ("fp32" needs no policy: layers then hold None).
    emulate: None (NumPy emulates by rounding, CuPy uses real low-precision arrays), or True
    / False to force one way (False on NumPy runs real float16/bfloat16 arrays: slow, for
    tests of the GPU's code path on the CPU).
    Immutable and shared: a deep copy (data-parallel replicas) returns the same object.
    """

    __slots__ = ("name", "emulate")

    def __init__(self, name, emulate=None):
        if name not in _ROUND:
            raise GpunetValueError(f"Precision: name expected one of {tuple(_ROUND)}, got {name!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "emulate", emulate)

    def __setattr__(self, name, value):
        raise AttributeError("Precision is immutable")

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (Precision, (self.name, self.emulate))

    def __repr__(self):
        return f"Precision({self.name!r})"

    def _emulated(self, a) -> bool:
        return self.emulate if self.emulate is not None else not backend.is_cupy_array(a)

    def dtype(self):
        """The real low-precision dtype of the GEMM operands (float32 for tf32)."""
        if self.name == "fp16":
            return np.dtype(np.float16)
        if self.name == "bf16":
            return np.dtype(_ml_dtypes().bfloat16)
        return np.dtype(np.float32)

    def cast(self, a):
        """A GEMM operand in the compute precision: a float32 array of rounded values
        (emulated) or an array of the real low-precision dtype."""
        if a.dtype != np.float32:  # float64 models (and anything else) are left alone
            return a
        if self._emulated(a):
            return _ROUND[self.name](a)
        return a.astype(self.dtype(), copy=False)

    def matmul(self, a, b, out=None):
        """a @ b of two `cast` operands, float32 accumulation; the result as float32 (rounded to
        the compute dtype for bf16/fp16), into `out` (float32) when given."""
        xp = backend.xp_of(a)
        if a.dtype == np.float64:  # a float64 model: no compute precision
            return xp.matmul(a, b, out=out)
        if self._emulated(a):
            with np.errstate(invalid="ignore", over="ignore"):  # Inf operands of an overflowed fp16 step
                r = xp.matmul(a, b, out=out)
            return r if self.name == "tf32" or r.dtype != np.float32 else _ROUND[self.name](r, out=r)
        if self.name == "tf32":
            return backend.matmul_tf32(a, b, out=out)
        r = xp.matmul(a, b)
        if out is None:
            return r.astype(np.float32)
        out[...] = r
        return out


def resolve(precision) -> Precision | None:
    """A Precision (None for "fp32" or None) from a name or a Precision; bf16 without ml_dtypes is refused."""
    if precision is None:
        return None
    if isinstance(precision, Precision):
        name = precision.name
    elif precision in PRECISIONS:
        name = precision
    else:
        raise GpunetValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if name == "bf16" and _ml_dtypes() is None:
        raise GpunetValueError("precision: 'bf16' needs the ml_dtypes package (NumPy's and CuPy's bfloat16), "
                               "which is not installed; pip install \"gpunet[bf16]\" (or ml_dtypes)")
    if name == "fp32":
        return None
    return precision if isinstance(precision, Precision) else Precision(name)


def gemm_layers(model):
    """The layers of `model` that take a compute precision (they call `cast`/`matmul`)."""
    return [m for m in model.modules() if getattr(type(m), "takes_precision", False)]


def apply(model, precision) -> Precision | None:
    """Set the compute precision of every GEMM layer of `model` ("fp32" clears it); returns the policy.

    A float64 model stays float64: any precision but fp32 is refused for it."""
    policy = resolve(precision)
    if policy is not None and model.dtype != np.float32:
        raise GpunetValueError(f"precision: {policy.name!r} expected a float32 model (float32 master weights), "
                               f"got a {model.dtype} model; keep float64 models at precision='fp32'")
    for m in gemm_layers(model):
        object.__setattr__(m, "precision", policy)
    return policy


def cast(policy, a):
    """`policy.cast(a)`, or `a` itself without a policy (fp32)."""
    return a if policy is None else policy.cast(a)


def matmul(policy, a, b, out=None, split=True):
    """`policy.matmul(a, b, out)`, or a plain matmul without a policy (fp32): on NumPy over
    gpunet's workers when gpunet splits GEMMs (threads.matmul; split=False: a Linear layer's,
    threads.matmul(linear=True))."""
    if policy is None:
        xp = backend.xp_of(a)
        if xp is not np:
            return xp.matmul(a, b, out=out)
        return threads.matmul(a, b, out=out, linear=not split)
    return policy.matmul(a, b, out=out)
