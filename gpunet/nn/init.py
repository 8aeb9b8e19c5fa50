"""Weight initializers: by name, by factory, or any callable `(shape, xp, rng) -> array`.

    Linear(784, 256, init="he_normal")
    Linear(784, 256, init=gn.nn.init.constant(0.1))      # parametrised: call the factory
    Linear(784, 256, init=gn.nn.init.get("uniform", low=-0.1, high=0.1))
    Linear(784, 256, init=lambda shape, xp, rng: rng.standard_normal(shape) * 0.01)

Every initializer draws on the HOST from `backend.host_rng()` (seeded by
`gn.manual_seed`) in float64 and is then cast to the layer dtype, so one seed gives
the same weights on CPU and GPU. Layers create their parameters on the CPU;
`model.to(dev)` moves them.

Fans follow PyTorch: for a weight of shape (out, in, *kernel), receptive = prod(kernel),
fan_in = in · receptive and fan_out = out · receptive (Linear (out, in): fan_in = in).
A 1-d shape has fan_in = fan_out = shape[0].

    zeros, ones, constant(value)        w = value
    uniform(low=-0.05, high=0.05)       w ~ U(low, high)                    (Keras defaults)
    normal(mean=0.0, std=0.05)          w ~ N(mean, std²)                   (Keras defaults)
    truncated_normal(mean=0, std=0.05)  N(mean, std²) redrawn outside mean ± 2·std
    glorot_uniform                      U(±sqrt(6 / (fan_in + fan_out)))    Glorot & Bengio 2010
    glorot_normal                       N(0, 2 / (fan_in + fan_out))
    he_uniform                          U(±sqrt(6 / fan_in))                He et al. 2015
    he_normal                           N(0, 2 / fan_in)
    lecun_normal                        N(0, 1 / fan_in)                    LeCun et al. 1998
    torch_default                       U(±1/sqrt(fan_in))                  PyTorch's Linear/Conv default

torch_default is PyTorch's kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + a²)) = sqrt(1/3),
bound gain·sqrt(3 / fan_in) = 1/sqrt(fan_in). PyTorch draws the bias from U(±1/sqrt(fan_in))
with the weight's fan_in: `bias_init="torch_default"` (or bias_init=None with
init="torch_default") on Linear and Conv2d does that (see bias_initializer).

The *_normal variants are plain (untruncated) normals, as in PyTorch's xavier_normal_
and kaiming_normal_ (Keras truncates them and rescales the std instead).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..argcheck import finite
from ..errors import GpunetTypeError, GpunetValueError


def compute_fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape, PyTorch-style (see the module docstring)."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan_checked(name, shape, which):
    fan_in, fan_out = compute_fans(shape)
    fan = fan_in + fan_out if which == "sum" else fan_in
    if fan <= 0:
        raise GpunetValueError(f"{name}: shape {tuple(shape)} has a zero fan; the scale would be infinite")
    return fan


# ---------------------------------------------------------------- constants

def zeros(shape, xp, rng):
    """w = 0 (the zero-init experiments; the default for biases)."""
    return xp.zeros(shape, dtype=np.float64)


def ones(shape, xp, rng):
    """w = 1 (BatchNorm's weight)."""
    return xp.ones(shape, dtype=np.float64)


class _Initializer:
    """A parametrised initializer: callable as `(shape, xp, rng)`, with a readable repr."""

    def __init__(self, name, **params):
        self.name, self.params = name, params

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


class _Constant(_Initializer):
    def __call__(self, shape, xp, rng):
        return xp.full(shape, self.params["value"], dtype=np.float64)


def constant(value=0.0):
    """Factory: every element equals `value`, e.g. `init=gn.nn.init.constant(0.1)`."""
    return _Constant("constant", value=finite("constant", "value", value))


# ---------------------------------------------------------------- fixed-scale random

class _Uniform(_Initializer):
    def __call__(self, shape, xp, rng):
        return xp.asarray(rng.uniform(self.params["low"], self.params["high"], size=shape))


def uniform(low=-0.05, high=0.05):
    """Factory: w ~ U(low, high)."""
    low, high = finite("uniform", "low", low), finite("uniform", "high", high)
    if not low < high:
        raise GpunetValueError(f"uniform: expected low < high, got low={low!r}, high={high!r}")
    return _Uniform("uniform", low=low, high=high)


class _Normal(_Initializer):
    def __call__(self, shape, xp, rng):
        return xp.asarray(self.params["mean"] + self.params["std"] * rng.standard_normal(shape))


def normal(mean=0.0, std=0.05):
    """Factory: w ~ N(mean, std²)."""
    return _Normal("normal", mean=finite("normal", "mean", mean), std=finite("normal", "std", std, True))


def _truncated_standard_normal(shape, rng, bound=2.0):
    """N(0, 1) conditioned on |z| <= bound: redraw the rejected ~4.6% until none are left."""
    z = rng.standard_normal(shape)
    flat = z.reshape(-1)
    bad = np.flatnonzero(np.abs(flat) > bound)
    while bad.size:
        flat[bad] = rng.standard_normal(bad.size)
        bad = bad[np.abs(flat[bad]) > bound]
    return z


class _TruncatedNormal(_Initializer):
    def __call__(self, shape, xp, rng):
        z = _truncated_standard_normal(shape, rng)
        return xp.asarray(self.params["mean"] + self.params["std"] * z)


def truncated_normal(mean=0.0, std=0.05):
    """Factory: N(mean, std²) with values beyond mean ± 2·std redrawn (Keras semantics).

    The result's std is 0.8796·std: `std` is that of the normal before truncation.
    """
    return _TruncatedNormal("truncated_normal", mean=finite("truncated_normal", "mean", mean),
                            std=finite("truncated_normal", "std", std, True))


# ---------------------------------------------------------------- fan-scaled random

def glorot_uniform(shape, xp, rng):
    """U(±limit), limit = sqrt(6 / (fan_in + fan_out)): keeps forward and backward variance."""
    limit = math.sqrt(6.0 / _fan_checked("glorot_uniform", shape, "sum"))
    return xp.asarray(rng.uniform(-limit, limit, size=shape))


def glorot_normal(shape, xp, rng):
    """N(0, std²), std = sqrt(2 / (fan_in + fan_out))."""
    std = math.sqrt(2.0 / _fan_checked("glorot_normal", shape, "sum"))
    return xp.asarray(std * rng.standard_normal(shape))


def he_uniform(shape, xp, rng):
    """U(±limit), limit = sqrt(6 / fan_in): keeps the variance through ReLUs."""
    limit = math.sqrt(6.0 / _fan_checked("he_uniform", shape, "in"))
    return xp.asarray(rng.uniform(-limit, limit, size=shape))


def he_normal(shape, xp, rng):
    """N(0, std²), std = sqrt(2 / fan_in)."""
    std = math.sqrt(2.0 / _fan_checked("he_normal", shape, "in"))
    return xp.asarray(std * rng.standard_normal(shape))


def lecun_normal(shape, xp, rng):
    """N(0, std²), std = sqrt(1 / fan_in) (the SELU initializer)."""
    std = math.sqrt(1.0 / _fan_checked("lecun_normal", shape, "in"))
    return xp.asarray(std * rng.standard_normal(shape))


def torch_default(shape, xp, rng):
    """U(±1/sqrt(fan_in)): PyTorch's default weight init, kaiming_uniform_(a=sqrt(5))."""
    gain = math.sqrt(2.0 / (1.0 + 5.0))
    limit = gain * math.sqrt(3.0 / _fan_checked("torch_default", shape, "in"))
    return xp.asarray(rng.uniform(-limit, limit, size=shape))


def bias_initializer(init, bias_init, weight_shape):
    """The bias initializer of a layer whose weight has `weight_shape`.

    bias_init=None: PyTorch's default bias when init is "torch_default", zeros otherwise.
    "torch_default": U(±1/sqrt(fan_in)) with the weight's fan_in (a bias alone has no fan).
    """
    if bias_init is None:
        bias_init = "torch_default" if (isinstance(init, str) and init.strip().lower() == "torch_default") \
            else "zeros"
    if isinstance(bias_init, str) and bias_init.strip().lower() == "torch_default":
        bound = 1.0 / math.sqrt(_fan_checked("torch_default", weight_shape, "in"))
        return _Uniform("torch_default_bias", low=-bound, high=bound)
    return bias_init


# ---------------------------------------------------------------- lookup

_FACTORIES = {"constant": constant, "uniform": uniform, "normal": normal,
              "truncated_normal": truncated_normal}
_FUNCTIONS = {"zeros": zeros, "ones": ones, "glorot_uniform": glorot_uniform,
              "glorot_normal": glorot_normal, "he_uniform": he_uniform, "he_normal": he_normal,
              "lecun_normal": lecun_normal, "torch_default": torch_default}
NAMES = ("zeros", "ones", "constant", "uniform", "normal", "truncated_normal", "glorot_uniform",
         "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "torch_default")


def get(init, arg: str = "init", **kwargs):
    """The initializer callable for a name (kwargs go to a factory) or a callable.

    A bare factory passed uncalled (`init=gn.nn.init.uniform`) gets its defaults.
    """
    if isinstance(init, str):
        key = init.strip().lower()
        if key in _FACTORIES:
            return _FACTORIES[key](**kwargs)
        if key in _FUNCTIONS:
            if kwargs:
                raise GpunetValueError(f"{arg}: {key!r} takes no options, got {sorted(kwargs)}")
            return _FUNCTIONS[key]
        raise GpunetValueError(f"{arg}: expected one of {list(NAMES)} or a callable "
                               f"(shape, xp, rng) -> array, got {init!r}")
    if init in _FACTORIES.values():
        return init(**kwargs)
    if callable(init):
        return init
    raise GpunetTypeError(f"{arg}: expected an initializer name ({', '.join(NAMES)}) or a callable "
                          f"(shape, xp, rng) -> array, got {type(init).__name__} {init!r}")


def initialize(init, shape, dtype=None, arg: str = "init") -> np.ndarray:
    """Draw a host array of `shape` and `dtype` (float32 default) from `init`.

    The callable gets `(shape, numpy, backend.host_rng())`; its result may be any array
    (NumPy, CuPy, list) and must have exactly `shape` and finite values.
    """
    fn = get(init, arg)
    shape = tuple(int(s) for s in shape)
    dt = backend.resolve_dtype(dtype)
    try:
        raw = fn(shape, np, backend.host_rng())
    except (GpunetValueError, GpunetTypeError):
        raise
    except Exception as e:
        raise GpunetValueError(f"{arg}: initializer {fn!r} failed for shape {shape}: "
                               f"{type(e).__name__}: {e}") from e
    out = backend.to_numpy(raw)
    if out.shape != shape:
        raise GpunetValueError(f"{arg}: initializer {getattr(fn, '__name__', fn)!r} returned shape "
                               f"{tuple(out.shape)}, expected {shape}")
    if out.dtype.kind not in "biuf":
        raise GpunetTypeError(f"{arg}: initializer returned dtype {out.dtype}, expected real numbers")
    out = np.array(out, dtype=dt, order="C")  # a fresh copy: never alias the caller's array
    if not np.isfinite(out).all():
        raise GpunetValueError(f"{arg}: initializer returned non-finite values for shape {shape}")
    return out
