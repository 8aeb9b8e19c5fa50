"""Module, Parameter and Sequential: the explicit forward/backward contract.

There is no autograd tape. Every module pairs `forward(x) -> y`, which keeps only
what its backward needs, with `backward(dy, need_input_grad=True) -> dx`, which *adds*
into each `Parameter.grad` and never touches `.data` (cuda-convnet, Caffe, llm.c).
With need_input_grad=False a module may skip dx and return None (a training step never
uses the input batch's gradient: Linear and Conv2d then skip their dx GEMM / col2im).

Fused forward and backward: a container asks each layer `fuses_forward_with(prev)` and
`fuses_backward_with(prev)`; when it says yes, `forward_fused(prev, x)` returns both
layers' output and `backward_fused(prev, dy)` prev's dx, each in one call (MaxPool2d
after a ReLU pools first and applies the ReLU at the pooled size, both ways). Layers describe
what they keep through `keeps_relu_output(y)`; no container checks layer types.

Names follow PyTorch, so state dicts map one to one: a Sequential's keys read
"0.weight", "0.bias", "2.running_mean", ...
"""
from __future__ import annotations

import functools
import inspect
from collections import OrderedDict

import numpy as np

from .. import backend
from ..errors import CheckpointError, GpunetTypeError
from . import sharing


class Parameter:
    """A trainable array and its gradient buffer (same shape, dtype and device)."""

    __slots__ = ("data", "grad", "name")

    def __init__(self, data, name: str = ""):
        self.data = data
        self.grad = backend.xp_of(data).zeros_like(data)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def zero_grad(self) -> None:
        self.grad.fill(0)  # in place: keeps the buffer the optimizer may hold

    def __repr__(self):
        return f"Parameter({self.name or '?'}, shape={tuple(self.shape)}, dtype={self.dtype})"

    # DLPack: torch.from_dlpack(p) / jax.dlpack.from_dlpack(p) share p.data without a copy.
    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()


class Module:
    """Base class of layers and containers.

    Subclasses set Parameters, buffers (plain arrays registered with
    `register_buffer`) and child Modules as attributes; registration order is
    the state-dict order.
    """

    def __init_subclass__(cls, **kwargs):
        """A subclass whose backward takes only dy still fits the protocol: it always returns dx."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("backward")
        if own is not None and "need_input_grad" not in inspect.signature(own).parameters:
            @functools.wraps(own)
            def backward(self, dy, need_input_grad=True):
                return own(self, dy)
            cls.backward = backward

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "device", backend.device("cpu"))

    # -- registration
    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise GpunetTypeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                  f"before setting attribute {name!r}")
        if isinstance(value, Parameter):
            self._children.pop(name, None)
            self._buffers.pop(name, None)
            value.name = value.name or name
            self._params[name] = value
        elif isinstance(value, Module):
            self._params.pop(name, None)
            self._buffers.pop(name, None)
            self._children[name] = value
        else:  # a plain value; a registered buffer stays registered when reassigned
            self._params.pop(name, None)
            self._children.pop(name, None)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array) -> None:
        """A non-trainable array that belongs in the state dict (e.g. running_mean)."""
        self.__setattr__(name, array)
        self._buffers[name] = True

    # -- traversal
    def named_children(self):
        return list(self._children.items())

    def children(self):
        return list(self._children.values())

    def named_modules(self, prefix: str = ""):
        out = [(prefix, self)]
        for name, child in self._children.items():
            out.extend(child.named_modules(f"{prefix}.{name}" if prefix else name))
        return out

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = ""):
        out, seen = [], set()
        for mod_name, mod in self.named_modules(prefix):
            for p_name, p in mod._params.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((f"{mod_name}.{p_name}" if mod_name else p_name, p))
        return out

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        out = []
        for mod_name, mod in self.named_modules(prefix):
            for b_name in mod._buffers:
                out.append((f"{mod_name}.{b_name}" if mod_name else b_name, getattr(mod, b_name)))
        return out

    # -- modes
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    # -- the contract
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dy, need_input_grad=True):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def fuses_forward_with(self, prev) -> bool:
        """True when `forward_fused(prev, x)` can run `prev`'s forward and this layer's at once."""
        return False

    def forward_fused(self, prev, x):
        """self.forward(prev.forward(x)) in one call (only when fuses_forward_with(prev))."""
        return self.forward(prev.forward(x))

    def fuses_backward_with(self, prev) -> bool:
        """True when `backward_fused(prev, dy)` can run this layer's and `prev`'s backward at once."""
        return False

    def backward_fused(self, prev, dy):
        """prev.backward(self.backward(dy)) in one call (only when fuses_backward_with(prev))."""
        return prev.backward(self.backward(dy))

    def keeps_relu_output(self, y) -> bool:
        """True when `y` is this module's output max(x, 0), kept for a backward dx = dy · (y > 0)."""
        return False

    def __call__(self, x):
        return self.forward(x)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def regularization_loss(self):
        """Sum of the kernel and activity penalties of this module and its children.

        Layers that take `kernel_regularizer=`/`activity_regularizer=` override
        `_own_penalty`; the value is a 0-d device array or 0.0.
        """
        total = self._own_penalty()
        for child in self._children.values():
            total = total + child.regularization_loss()
        return total

    def _own_penalty(self):
        return 0.0

    # -- placement
    def to(self, device=None, dtype=None):
        """Move (and cast floating arrays to `dtype`) every parameter and buffer. In place."""
        dev = backend.device(device) if device is not None else self.device
        dt = backend.resolve_dtype(dtype) if dtype is not None else None
        for m in self.modules():
            for p in m._params.values():
                cast = dt if (dt is not None and p.data.dtype.kind == "f") else None
                p.data = dev.asarray(p.data, dtype=cast)
                p.grad = dev.asarray(p.grad, dtype=cast)
            for b_name in m._buffers:
                arr = getattr(m, b_name)
                if arr is not None:
                    cast = dt if (dt is not None and arr.dtype.kind == "f") else None
                    setattr(m, b_name, dev.asarray(arr, dtype=cast))
            object.__setattr__(m, "device", dev)
            m._on_to(dev)
        return self

    def _on_to(self, device) -> None:
        """Hook for layers that cache per-device state (kernels, RNG streams)."""

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else backend.DEFAULT_DTYPE

    # -- state
    def state_dict(self) -> "OrderedDict[str, object]":
        """Copies of every parameter and buffer, on this module's device, PyTorch-named.

        As in PyTorch, a shared module (or a tied Parameter) is named at every position
        ("0.weight" and "2.weight" of Sequential(lin, relu, lin)); named_parameters() lists
        it once."""
        out = OrderedDict()
        targets = self._state_targets()
        for is_param in (True, False):  # parameters first, then buffers
            for name, (mod, attr, param) in targets.items():
                if param == is_param:
                    value = getattr(mod, attr)
                    if value is not None:
                        out[name] = (value.data if param else value).copy()
        return out

    def load_state_dict(self, state, strict: bool = True) -> None:
        """Copy arrays into this module. Validates everything first: on error nothing changes."""
        self.assign_state(self.check_state_dict(state, strict))

    def _state_targets(self):
        targets = OrderedDict()  # key -> (owning module, attribute name, is_param)
        for mod_name, mod in self.named_modules():
            for attr in list(mod._params) + list(mod._buffers):
                key = f"{mod_name}.{attr}" if mod_name else attr
                targets.setdefault(key, (mod, attr, attr in mod._params))
        return targets

    def check_state_dict(self, state, strict: bool = True) -> list:
        """Validate `state` against this module without changing anything; returns the
        staged host arrays for `assign_state`. Checked: keys, shapes, dtype kinds (no int,
        complex, bool or string array into a float parameter), finiteness, and that a cast
        to the parameter's dtype (float64 -> float32) does not overflow to Inf."""
        if not isinstance(state, dict):
            raise CheckpointError(f"load_state_dict into {type(self).__name__}: expected a dict of arrays, "
                                  f"got {type(state).__name__}")
        targets = self._state_targets()
        # One array under several names (a shared module, a tied Parameter): given under any
        # of them it loads; given under two, the values must agree.
        array_of = {k: _array_id(mod, attr, is_param) for k, (mod, attr, is_param) in targets.items()}
        given = {array_of[k] for k in targets if k in state}
        problems = []
        if strict:
            missing = [k for k in targets if k not in state and array_of[k] not in given]
            unexpected = [k for k in state if k not in targets]
            if missing:
                problems.append(f"missing keys {missing}")
            if unexpected:
                problems.append(f"unexpected keys {unexpected}")
        staged, first = [], {}
        for key, (mod, attr, is_param) in targets.items():
            if key not in state:
                continue
            current = getattr(mod, attr)
            current = current.data if is_param else current
            problem, value = _stage(key, state[key], current)
            if problem:
                problems.append(problem)
            elif array_of[key] in first:
                k0, v0 = first[array_of[key]]
                if not np.array_equal(v0, value):
                    problems.append(f"keys {k0} and {key} name one shared array, got different values")
            else:
                first[array_of[key]] = (key, value)
                staged.append((mod, attr, is_param, value))
        if problems:
            raise CheckpointError(f"load_state_dict into {type(self).__name__}: " + "; ".join(problems))
        return staged

    @staticmethod
    def assign_state(staged) -> None:
        """Assign what `check_state_dict` staged: every array is moved first, then assigned."""
        moved = [(mod, attr, is_param, mod.device.asarray(v).copy()) for mod, attr, is_param, v in staged]
        for mod, attr, is_param, value in moved:
            if is_param:
                getattr(mod, attr).data = value
            else:
                setattr(mod, attr, value)

    # -- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._children:
            return head + ")"
        lines = [head]
        for name, child in self._children.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


def _array_id(mod, attr, is_param):
    """What a state-dict key loads into: a Parameter (maybe registered in several modules) or
    one module's buffer (maybe at several positions)."""
    return id(mod._params[attr]) if is_param else (id(mod), attr)


def _stage(key, value, current):
    """(problem or None, host array of the target's dtype) for one state-dict entry."""
    try:
        arr = backend.to_numpy(value) if backend.is_cupy_array(value) else np.asarray(value)
    except Exception as e:  # a ragged list, an object that is not array-like
        return f"{key}: expected an array, got {type(value).__name__} ({e})", None
    if current is None:
        return None, arr.copy()
    want = tuple(current.shape)
    if tuple(arr.shape) != want:
        return f"{key}: expected shape {want}, got {tuple(arr.shape)}", None
    dt = np.dtype(current.dtype)
    kinds = {"f": "f", "i": "iu", "u": "iu", "b": "b", "c": "c"}.get(dt.kind, dt.kind)
    if arr.dtype.kind not in kinds:
        return f"{key}: expected a {dt} array, got dtype {arr.dtype} (not converted)", None
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            return f"{key}: expected finite values, got NaN/Inf", None
        with np.errstate(over="ignore"):
            cast = arr.astype(dt)
        if not np.isfinite(cast).all():
            return (f"{key}: values up to {float(np.abs(arr).max()):.3g} overflow {dt} "
                    f"(max {float(np.finfo(dt).max):.3g}) when cast from {arr.dtype}"), None
        return None, cast
    if arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(dt)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            return f"{key}: values in [{lo}, {hi}] do not fit {dt}", None
    return None, arr.astype(dt)


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse. Keys "0", "1", ..."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise GpunetTypeError(f"Sequential: layer {i} expected a gn.nn.Module, "
                                      f"got {type(layer).__name__}")
            setattr(self, str(i), layer)

    def append(self, layer: Module) -> "Sequential":
        if not isinstance(layer, Module):
            raise GpunetTypeError(f"Sequential.append: expected a gn.nn.Module, got {type(layer).__name__}")
        setattr(self, str(len(self._children)), layer)
        return self

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        layers = list(self._children.values())
        if isinstance(i, slice):
            return Sequential(*layers[i])
        return layers[i]

    def __iter__(self):
        return iter(self._children.values())

    def forward(self, x):
        shared = self._shared()
        if shared:
            return sharing.forward_shared(self, shared, x)
        layers = list(self._children.values())
        i = 0
        while i < len(layers):  # a layer that fuses with the one before it runs both at once
            if i + 1 < len(layers) and layers[i + 1].fuses_forward_with(layers[i]):
                x = layers[i + 1].forward_fused(layers[i], x)
                i += 2
            else:
                x = layers[i].forward(x)
                i += 1
        return x

    def _shared(self) -> dict:
        """{position: [modules there that other positions use too]}: weight sharing."""
        key = tuple(id(m) for m in self._children.values())
        cached = self.__dict__.get("_shared_cache")
        if cached is None or cached[0] != key:
            cached = (key, sharing.shared_positions(list(self._children.values())))
            object.__setattr__(self, "_shared_cache", cached)
        return cached[1]

    def backward(self, dy, need_input_grad=True):
        """dx, or None when need_input_grad=False: then the layers in front of the first
        layer with parameters are skipped and that layer is asked for its grads only."""
        layers = list(self._children.values())
        if self._shared():
            dx = sharing.backward_shared(self, layers, dy)
            return dx if need_input_grad else None
        if need_input_grad:
            return _backward_chain(layers, dy)
        first = next((i for i, m in enumerate(layers) if m.parameters()), len(layers))
        dy = _backward_chain(layers[first + 1:], dy)
        if first < len(layers):
            layers[first].backward(dy, need_input_grad=False)
        return None


def _backward_chain(layers, dy):
    """Backward through `layers` in reverse; a layer that fuses with the one before it
    (fuses_backward_with) runs both backwards in one call."""
    i = len(layers) - 1
    while i >= 0:
        layer = layers[i]
        if i > 0 and layer.fuses_backward_with(layers[i - 1]):
            dy = layer.backward_fused(layers[i - 1], dy)
            i -= 2
        else:
            dy = layer.backward(dy)
            i -= 1
    return dy
