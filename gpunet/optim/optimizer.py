"""The optimizer base class (parameter groups, state dicts) and the argument checks.

An optimizer holds a list of `gn.nn.Parameter`s and updates each `.data` in place
from its `.grad` on `step()`. Per-parameter state (momentum, Adam moments) is created
lazily at the first step, on the parameter's device and dtype, as PyTorch does: a
model moved with `.to()` before training gets its state where its weights are.
Updates are written with `xp` operations only, so they never sync the host.

Parameters may come in groups with their own hyperparameters (groups.py); buffers
are indexed by a parameter's position in `params`, all groups in order.

fused=True (optimizers with FUSABLE set: SGD, Adam, AdamW) puts the parameters, their
gradients and every state buffer into flat buffers (fused.py) and runs `_fused_update`
once per parameter group instead of `_update` once per parameter; `state[i]` then holds
views into the flat state, so the state dict below is the same either way.

state_dict() layout (arrays stay on the device; a checkpoint writer converts them):

    {"type": "SGD", "hyper": {"lr": 0.1, ...}, "step": 12,
     "groups": [{"params": [0, 1], "lr": 0.1, ...}, {"params": [2], "lr": 0.01, ...}],
     "param_shapes": [[256, 784], [256], ...],
     "buffers": {"0.momentum_buffer": array, "1.momentum_buffer": array, ...}}

"hyper" is the first group's; a state dict without "groups" (older ones) loads into a
one-group optimizer.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..argcheck import number as check_number  # noqa: F401  (sgd, adam, rmsprop, schedules use it)
from ..checks import checks_enabled
from ..errors import CheckpointError, GpunetError, GpunetTypeError, GpunetValueError, NonFiniteError
from ..nn.module import Parameter


# ---------------------------------------------------------------- argument checks

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
    """Base class. Subclasses set HYPER (names, in order), `_check_hyper`, `_buffer_names`, `_update`.

    params: a list of Parameters (or a Module), or a list of parameter-group dicts
    (see groups.py). `param_groups` holds the groups, `params` every parameter in
    group order, and `state[i]` the buffers of params[i]. `_update(i, p, group)` reads
    its hyperparameters from `group`. `opt.<hyperparameter>` reads the first group's
    value; assigning it sets that value in every group (validated first).
    """

    HYPER = ("lr",)
    # Hyperparameters added after the state-dict format was fixed, with the value an
    # older state dict implies (it loads as if written with that value).
    ADDED_HYPER: dict = {}

    # True for optimizers with a fused step over flat buffers (`fused=True`, see fused.py).
    FUSABLE = False

    def __init__(self, params, lr, fused=False, **hyper):
        from .groups import make_groups
        self._check_lr_positive(lr)
        self.fused = self._check_fused(fused)
        self.defaults = self._check_hyper(dict(lr=lr, **hyper))
        self.param_groups = make_groups(self, params, self.defaults, check_params)
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.step_count = 0
        self.state = [dict() for _ in self.params]
        self._lr_ratios = self._ratios()
        self._layout = None
        if self.fused:
            self._fused_layout()  # the parameters become views into flat buffers now

    def _check_fused(self, fused) -> bool:
        name = type(self).__name__
        if not isinstance(fused, bool):
            raise GpunetTypeError(f"{name}: fused expected a bool, got {fused!r}")
        if fused and not type(self).FUSABLE:
            raise GpunetValueError(f"{name}: fused=True expected an optimizer with a fused step "
                                   f"({', '.join(fusable_names())}), got {name}")
        return fused

    def _check_lr_positive(self, lr) -> None:
        check_number(type(self).__name__, "lr", lr, lo=0.0, lo_open=True)  # a user-given lr must be > 0

    # -- hyperparameters
    def __getattr__(self, name):
        # Only reached when normal lookup fails: hyperparameters live in the groups.
        if name in type(self).HYPER and "param_groups" in self.__dict__:
            return self.param_groups[0][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name != "lr" and name in type(self).HYPER and "param_groups" in self.__dict__:
            checked = [self._check_hyper({**g.hyper(), name: value}) for g in self.param_groups]
            for g, h in zip(self.param_groups, checked):  # all valid: now change them
                dict.__setitem__(g, name, h[name])
            return
        object.__setattr__(self, name, value)

    @property
    def lr(self) -> float:
        """The first group's lr (the only one's, without groups).

        Setting it sets every group's lr to the value; groups that were given different
        lrs keep their ratio to the first group's, so warmup, the linear scaling rule and
        data-parallel replicas scale every group alike.
        """
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        # >= 0, not > 0: a schedule may legitimately reach 0 (warmup start, cosine end).
        v = check_number(type(self).__name__, "lr", value, lo=0.0)
        lrs = [g["lr"] for g in self.param_groups]
        if lrs[0] > 0:
            self._lr_ratios = self._ratios()
        for g, lr, ratio in zip(self.param_groups, lrs, self._lr_ratios):
            if ratio == 1.0:
                new = v
            elif lrs[0] > 0:
                new = lr * (v / lrs[0])
            else:  # the first group is at 0: the last known ratios
                new = v * ratio
            dict.__setitem__(g, "lr", new)

    def _ratios(self) -> list:
        lrs = [g["lr"] for g in self.param_groups]
        if lrs[0] <= 0:
            return getattr(self, "_lr_ratios", [1.0] * len(lrs))
        return [1.0 if lr == lrs[0] else lr / lrs[0] for lr in lrs]

    def _check_hyper(self, hyper: dict) -> dict:
        """Validated, normalized hyperparameters (JSON-able scalars), in HYPER order."""
        return {"lr": check_number(type(self).__name__, "lr", hyper["lr"], lo=0.0)}

    def hyper(self) -> dict:
        """The first group's hyperparameters (all of them, without groups)."""
        return self.param_groups[0].hyper()

    def _buffer_names(self, hyper: dict) -> tuple:
        """Names of the per-parameter state buffers these hyperparameters need."""
        return ()

    # -- the update
    def step(self) -> None:
        """One update of every parameter from its current .grad. No host sync."""
        self.step_count += 1
        if self.fused:
            layout = self._fused_layout()
            with backend.device_of(self.params[0].data):
                for pg, gi, w, g, state in layout.views:
                    self._fused_update(layout, pg, gi, w, g, state)
            layout.fresh.clear()
            return
        # CuPy allocates on the *current* GPU: make the parameters' GPU current (one
        # optimizer's parameters live on one device, e.g. one data-parallel replica).
        with backend.device_of(self.params[0].data):
            i = 0
            for group in self.param_groups:
                for p in group["params"]:
                    self._update(i, p, group)
                    i += 1

    def _update(self, i: int, p: Parameter, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__}._update")

    def zero_grad(self) -> None:
        if self.fused and self._layout is not None and self._layout.flat.intact():
            for fg in self._layout.flat.groups:  # one fill per flat buffer
                fg.grad.fill(0)
            return
        for p in self.params:
            p.zero_grad()

    # -- the fused path (fused.py): flat buffers, one update per parameter group
    def _fused_layout(self):
        """The flat layout, with every parameter and state view checked (and repaired) first."""
        from .fused import FusedLayout
        if self._layout is None:
            self._layout = FusedLayout(self)
        else:
            self._layout.refresh(self)
        return self._layout

    def flat_parameters(self):
        """The FlatParameters behind a fused optimizer (views checked first); None when not fused."""
        return self._fused_layout().flat if self.fused else None

    def _fused_initial(self, i: int, p: Parameter, name: str):
        """The starting value of a state buffer the fused path creates (None: zeros)."""
        return None

    def _fused_update(self, layout, group, gi, w, g, state) -> None:
        raise NotImplementedError(f"{type(self).__name__}._fused_update")

    @staticmethod
    def _l2_grad(p: Parameter, weight_decay: float):
        """p.grad + weight_decay · p.data in a fresh array (p.grad stays as it was), or p.grad
        itself when weight_decay is 0: L2 decay folded into the gradient."""
        if not weight_decay:
            return p.grad
        g = backend.xp_of(p.data).multiply(p.data, weight_decay)
        g += p.grad
        return g

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
    def _group_index(self) -> list:
        """[[indices into params] per group]."""
        out, i = [], 0
        for g in self.param_groups:
            out.append(list(range(i, i + len(g["params"]))))
            i += len(g["params"])
        return out

    def state_dict(self) -> dict:
        """Copies of the state (arrays on their device), hyperparameters, groups and step count.

        "hyper" is the first group's; "groups" lists each group's parameter indices and
        hyperparameters (PyTorch's layout, with indices for params)."""
        buffers = {}
        for i, st in enumerate(self.state):
            for name, buf in st.items():
                buffers[f"{i}.{name}"] = buf.copy()
        groups = [{"params": idx, **g.hyper()} for idx, g in zip(self._group_index(), self.param_groups)]
        return {"type": type(self).__name__, "hyper": self.hyper(), "groups": groups,
                "step": int(self.step_count), "param_shapes": [list(p.shape) for p in self.params],
                "buffers": buffers}

    def _check_one_hyper(self, where: str, hyper, problems: list):
        """`hyper` validated (older state dicts get ADDED_HYPER filled in), or None with a problem noted."""
        hyper = dict(hyper) if isinstance(hyper, dict) else {}
        for k, v in self.ADDED_HYPER.items():
            hyper.setdefault(k, v)
        if set(hyper) != set(self.HYPER):
            problems.append(f"{where} keys: expected {sorted(self.HYPER)}, got {sorted(hyper)}")
            return None
        try:
            return self._check_hyper(hyper)
        except GpunetError as e:
            problems.append(f"{where}: {e}")
            return None

    def _check_groups(self, d, hyper, problems) -> list:
        """Each group's validated hyperparameters from `d` (a state dict without "groups": `hyper` for one group)."""
        if "groups" not in d:
            if len(self.param_groups) != 1:
                problems.append(f"groups: expected {len(self.param_groups)} parameter groups, got a state "
                                f"dict without groups")
            return [hyper]
        got = d["groups"]
        if not isinstance(got, list) or len(got) != len(self.param_groups):
            n = len(got) if isinstance(got, list) else type(got).__name__
            problems.append(f"groups: expected {len(self.param_groups)} parameter groups, got {n}")
            return []
        out = []
        for k, (g, idx) in enumerate(zip(got, self._group_index())):
            g = dict(g) if isinstance(g, dict) else {}
            if [int(i) for i in g.pop("params", [])] != idx:
                problems.append(f"groups[{k}] params: expected indices {idx}, got {g.get('params')}")
            out.append(self._check_one_hyper(f"groups[{k}] hyper", g, problems))
        return out

    def _validate_state(self, d) -> tuple:
        """(group hypers, step, buffers) from `d`, or CheckpointError listing every mismatch."""
        me = type(self).__name__
        if not isinstance(d, dict):
            raise CheckpointError(f"{me}.load_state_dict: expected a dict, got {type(d).__name__}")
        missing = [k for k in ("type", "hyper", "step", "buffers") if k not in d]
        if missing:
            raise CheckpointError(f"{me}.load_state_dict: missing keys {missing}")
        if d["type"] != me:
            raise CheckpointError(f"{me}.load_state_dict: expected type {me!r}, got {d['type']!r}")
        problems = []
        hyper = self._check_one_hyper("hyper", d["hyper"], problems)
        groups = self._check_groups(d, hyper, problems)
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
            problems += self._check_buffers(groups, int(step), d["buffers"])
        if problems:
            raise CheckpointError(f"{me}.load_state_dict: " + "; ".join(problems))
        return groups, int(step), d["buffers"]

    def _check_buffers(self, groups: list, step: int, buffers: dict) -> list:
        if not isinstance(buffers, dict):
            return [f"buffers: expected a dict, got {type(buffers).__name__}"]
        expected = set()
        for hyper, idx in zip(groups, self._group_index()):
            names = self._buffer_names(hyper) if step > 0 else ()
            expected |= {f"{i}.{n}" for i in idx for n in names}
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
        """Restore hyperparameters (per group), step count and buffers. Validates everything
        first: on error a CheckpointError names every mismatch and nothing changes."""
        groups, step, buffers = self._validate_state(d)
        state = [dict() for _ in self.params]
        for key, arr in buffers.items():
            i, name = key.split(".", 1)
            p = self.params[int(i)]
            buf = backend.device_of(p.data).asarray(arr, dtype=p.data.dtype)
            state[int(i)][name] = buf.copy() if buf is arr else buf  # never alias the caller's dict
        for g, hyper in zip(self.param_groups, groups):
            dict.update(g, hyper)
        self.step_count, self.state = step, state
        self._lr_ratios = self._ratios()

    def __repr__(self):
        groups = f", groups={len(self.param_groups)}" if len(self.param_groups) > 1 else ""
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.hyper().items()) + groups + ")"


def fusable_names() -> list:
    """Names of the optimizers that accept fused=True."""
    from . import OPTIMIZERS
    return [cls.__name__ for cls in OPTIMIZERS.values() if cls.FUSABLE]


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
# (clip_grad_norm and clip_grad_value live in clip.py)
from .clip import clip_grad_norm, clip_grad_value  # noqa: E402,F401  (the old import path keeps working)
