"""The optimizer base class, argument checks and global gradient-norm clipping.

An optimizer holds a list of `gn.nn.Parameter`s and updates each `.data` in place
from its `.grad` on `step()`. Per-parameter state (momentum, Adam moments) is created
lazily at the first step, on the parameter's device and dtype, as PyTorch does: a
model moved with `.to()` before training gets its state where its weights are.
Updates are written with `xp` operations only, so they never sync the host.

state_dict() layout (arrays stay on the device; a checkpoint writer converts them):

    {"type": "SGD", "hyper": {"lr": 0.1, ...}, "step": 12,
     "param_shapes": [[256, 784], [256], ...],
     "buffers": {"0.momentum_buffer": array, "1.momentum_buffer": array, ...}}
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..config import checks_enabled
from ..errors import CheckpointError, GpunetError, GpunetTypeError, GpunetValueError, NonFiniteError
from ..nn.module import Parameter


# ---------------------------------------------------------------- argument checks

def check_number(owner: str, name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    """`value` as a float, or GpunetTypeError/GpunetValueError naming owner, argument, range and value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GpunetTypeError(f"{owner}: {name} expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if math.isnan(v) or below or above or math.isinf(v):
        left = "-inf" if lo is None else f"{'(' if lo_open else '['}{lo}"
        right = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
        raise GpunetValueError(f"{owner}: {name} expected a number in {left}, {right}, got {value!r}")
    return v


def check_params(owner: str, params) -> list:
    """A non-empty list of distinct Parameters (a Module is accepted for its .parameters())."""
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    if isinstance(params, Parameter):
        raise GpunetTypeError(f"{owner}: params expected a list of gn.nn.Parameter, got a single Parameter "
                              f"(wrap it in a list)")
    try:
        params = list(params)
    except TypeError:
        raise GpunetTypeError(f"{owner}: params expected a list of gn.nn.Parameter, "
                              f"got {type(params).__name__}") from None
    if not params:
        raise GpunetValueError(f"{owner}: params expected a non-empty list of gn.nn.Parameter, got an empty list")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise GpunetTypeError(f"{owner}: params[{i}] expected a gn.nn.Parameter, got {type(p).__name__}")
    if len({id(p) for p in params}) != len(params):
        raise GpunetValueError(f"{owner}: params expected distinct Parameters, got one more than once "
                               f"(it would be updated twice per step)")
    return params


# ---------------------------------------------------------------- base class

class Optimizer:
    """Base class. Subclasses set HYPER (names, in order), `_check_hyper`, `_buffer_names`, `_update`."""

    HYPER = ("lr",)

    def __init__(self, params, lr, **hyper):
        name = type(self).__name__
        self.params = check_params(name, params)
        check_number(name, "lr", lr, lo=0.0, lo_open=True)  # a user-given lr must be > 0
        for k, v in self._check_hyper(dict(lr=lr, **hyper)).items():
            setattr(self, k, v)
        self.step_count = 0
        self.state = [dict() for _ in self.params]

    # -- hyperparameters
    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        # >= 0, not > 0: a schedule may legitimately reach 0 (warmup start, cosine end).
        self._lr = check_number(type(self).__name__, "lr", value, lo=0.0)

    def _check_hyper(self, hyper: dict) -> dict:
        """Validated, normalized hyperparameters (JSON-able scalars), in HYPER order."""
        return {"lr": check_number(type(self).__name__, "lr", hyper["lr"], lo=0.0)}

    def hyper(self) -> dict:
        return {k: getattr(self, k) for k in self.HYPER}

    def _buffer_names(self, hyper: dict) -> tuple:
        """Names of the per-parameter state buffers these hyperparameters need."""
        return ()

    # -- the update
    def step(self) -> None:
        """One update of every parameter from its current .grad. No host sync."""
        self.step_count += 1
        # CuPy allocates on the *current* GPU: make the parameters' GPU current (one
        # optimizer's parameters live on one device, e.g. one data-parallel replica).
        with backend.device_of(self.params[0].data):
            for i, p in enumerate(self.params):
                self._update(i, p)

    def _update(self, i: int, p: Parameter) -> None:
        raise NotImplementedError(f"{type(self).__name__}._update")

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def _buffer(self, i: int, name: str, init=None):
        """State buffer `name` of parameter i: created on first use (zeros, or `init(p)`),
        and moved/cast when the parameter has moved device or dtype since."""
        p, st = self.params[i], self.state[i]
        buf = st.get(name)
        if buf is None:
            buf = backend.xp_of(p.data).zeros_like(p.data) if init is None else init(p)
            st[name] = buf
        elif (buf.dtype != p.data.dtype or type(buf) is not type(p.data)
              or getattr(buf, "device", None) != getattr(p.data, "device", None)):
            buf = backend.device_of(p.data).asarray(buf, dtype=p.data.dtype)
            st[name] = buf
        return buf

    # -- state
    def state_dict(self) -> dict:
        """Copies of the state (arrays on their device), hyperparameters and step count."""
        buffers = {}
        for i, st in enumerate(self.state):
            for name, buf in st.items():
                buffers[f"{i}.{name}"] = buf.copy()
        return {"type": type(self).__name__, "hyper": self.hyper(), "step": int(self.step_count),
                "param_shapes": [list(p.shape) for p in self.params], "buffers": buffers}

    def _validate_state(self, d) -> tuple:
        """(hyper, step, buffers) from `d`, or CheckpointError listing every mismatch."""
        me = type(self).__name__
        if not isinstance(d, dict):
            raise CheckpointError(f"{me}.load_state_dict: expected a dict, got {type(d).__name__}")
        missing = [k for k in ("type", "hyper", "step", "buffers") if k not in d]
        if missing:
            raise CheckpointError(f"{me}.load_state_dict: missing keys {missing}")
        if d["type"] != me:
            raise CheckpointError(f"{me}.load_state_dict: expected type {me!r}, got {d['type']!r}")
        problems = []
        hyper = dict(d["hyper"]) if isinstance(d["hyper"], dict) else {}
        if set(hyper) != set(self.HYPER):
            problems.append(f"hyper keys: expected {sorted(self.HYPER)}, got {sorted(hyper)}")
        else:
            try:
                hyper = self._check_hyper(hyper)
            except GpunetError as e:
                problems.append(f"hyper: {e}")
        step = d["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < 2**63:
            problems.append(f"step: expected an int in [0, 2^63), got {step!r:.40}")
        shapes = [list(p.shape) for p in self.params]
        got_shapes = d.get("param_shapes", shapes)
        try:
            got_shapes = [list(s) for s in got_shapes]
        except TypeError:
            pass
        if got_shapes != shapes:
            problems.append(f"param_shapes: expected {shapes}, got {got_shapes!r:.200}")
        if not problems:
            problems += self._check_buffers(hyper, int(step), d["buffers"])
        if problems:
            raise CheckpointError(f"{me}.load_state_dict: " + "; ".join(problems))
        return hyper, int(step), d["buffers"]

    def _check_buffers(self, hyper: dict, step: int, buffers: dict) -> list:
        if not isinstance(buffers, dict):
            return [f"buffers: expected a dict, got {type(buffers).__name__}"]
        names = self._buffer_names(hyper) if step > 0 else ()
        expected = {f"{i}.{n}" for i in range(len(self.params)) for n in names}
        problems = []
        missing, unexpected = sorted(expected - set(buffers)), sorted(set(buffers) - expected)
        if missing:
            problems.append(f"missing buffers {missing}")
        if unexpected:
            problems.append(f"unexpected buffers {unexpected}")
        for key in sorted(expected & set(buffers)):
            p = self.params[int(key.split('.')[0])]
            problem = _check_buffer(key, buffers[key], tuple(p.shape), np.dtype(p.dtype))
            if problem:
                problems.append(problem)
        return problems

    def load_state_dict(self, d: dict) -> None:
        """Restore hyperparameters, step count and buffers. Validates everything first:
        on error a CheckpointError names every mismatch and nothing changes."""
        hyper, step, buffers = self._validate_state(d)
        state = [dict() for _ in self.params]
        for key, arr in buffers.items():
            i, name = key.split(".", 1)
            p = self.params[int(i)]
            buf = backend.device_of(p.data).asarray(arr, dtype=p.data.dtype)
            state[int(i)][name] = buf.copy() if buf is arr else buf  # never alias the caller's dict
        for k, v in hyper.items():
            setattr(self, k, v)
        self.step_count, self.state = step, state

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.hyper().items()) + ")"


def _check_buffer(key, value, want, dt):
    """A problem with one saved buffer (shape, dtype kind, finiteness, cast overflow), or None."""
    if tuple(np.shape(value)) != want:
        return f"buffer {key}: expected shape {want}, got {tuple(np.shape(value))}"
    arr = backend.to_numpy(value) if backend.is_cupy_array(value) else np.asarray(value)
    if arr.dtype.kind != "f":
        return f"buffer {key}: expected a floating array ({dt}), got dtype {arr.dtype}"
    if not np.isfinite(arr).all():
        return f"buffer {key}: expected finite values, got NaN/Inf"
    with np.errstate(over="ignore"):
        if not np.isfinite(arr.astype(dt)).all():
            return f"buffer {key}: values overflow {dt} when cast from {arr.dtype}"
    return None


# ---------------------------------------------------------------- gradient clipping

def clip_grad_norm(params, max_norm: float, eps: float = 1e-6):
    """Scale all grads in place by min(1, max_norm / (‖g‖ + eps)), ‖g‖ the global L2 norm.

    Returns ‖g‖ (before clipping) as a 0-d device array. Everything stays on the
    device, so there is no host sync (as torch.nn.utils.clip_grad_norm_). All
    parameters must be on one device. With gn.checks() on, a NaN/Inf norm raises.
    """
    params = check_params("clip_grad_norm", params)
    max_norm = check_number("clip_grad_norm", "max_norm", max_norm, lo=0.0, lo_open=True)
    with backend.device_of(params[0].grad):  # CuPy allocates on the current GPU
        return _clip(params, max_norm, eps)


def _clip(params, max_norm, eps):
    xp = backend.xp_of(params[0].grad)
    total = None
    for p in params:
        flat = p.grad.reshape(-1)
        sq = xp.dot(flat, flat)  # Σ g² without a squared temporary
        total = sq if total is None else total + sq
    norm = xp.sqrt(xp.asarray(total))
    if checks_enabled() and not bool(xp.isfinite(norm)):  # sync: checks only
        raise NonFiniteError(f"clip_grad_norm: expected finite gradients, got total norm {float(norm)}")
    coef = xp.minimum(max_norm / (norm + eps), 1.0)
    for p in params:
        p.grad *= coef.astype(p.grad.dtype, copy=False)
    return norm
