"""Flat parameters: a model's weights and gradients in one contiguous buffer per dtype and device.

    flat = FlatParameters(model.parameters())    # or any list of distinct Parameters
    flat.groups[0].data, flat.groups[0].grad     # (n,) buffers; each p.data / p.grad is a view
    flat.ensure()                                # re-views any parameter whose array was replaced

Parameters are grouped by (dtype, device) in their given order; inside a group they sit
back to back, so a run of consecutive parameters (an optimizer's parameter group) is one
slice of the buffer. One buffer is what a fused optimizer kernel, a global gradient norm
or a data-parallel all-reduce wants: one launch, one reduction, one message.

Views stay valid as long as everything updates in place (layers add into .grad, optimizers
write .data in place, zero_grad fills). Code that *replaces* an array (`p.data = new`:
a hand-written weight surgery, Module.to with a new dtype, Conv1d's reshape; `p.grad = new`)
breaks the link; `ensure()` notices (an identity check per parameter, no device work) and
copies the new array into the buffer, re-viewing it with the new array's shape. A changed
dtype or device or size rebuilds the buffers. `intact()` says whether every view is in place.
A deep copy (data-parallel replicas) gets buffers of its own, views included.
"""
from __future__ import annotations

import weakref

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError

_owner = weakref.WeakValueDictionary()   # id(Parameter) -> the FlatParameters holding it


class FlatGroup:
    """The parameters of one (dtype, device): `data` and `grad` (n,) buffers, offsets into them."""

    __slots__ = ("params", "offsets", "data", "grad", "views")

    def __init__(self, params):
        self.params = list(params)
        self.offsets, o = [], 0
        for p in self.params:
            self.offsets.append(o)
            o += p.size
        dev = backend.device_of(params[0].data)
        with dev:
            self.data = dev.xp.empty(o, dtype=params[0].data.dtype)
            self.grad = dev.xp.empty(o, dtype=params[0].data.dtype)
        self.views = [None] * len(self.params)
        for k in range(len(self.params)):
            self._adopt(k)

    @property
    def size(self) -> int:
        return int(self.data.size)

    def slice(self, k: int):
        return slice(self.offsets[k], self.offsets[k] + self.params[k].size)

    def _adopt(self, k: int) -> None:
        """Copy params[k]'s current arrays into the buffers and make them views."""
        p, s = self.params[k], self.slice(k)
        d, g = self.data[s].reshape(p.data.shape), self.grad[s].reshape(p.data.shape)
        if p.data is not d:
            d[...] = p.data
        if p.grad is not g:
            g[...] = p.grad if p.grad.shape == p.data.shape else p.grad.reshape(p.data.shape)
        p.data, p.grad = d, g
        self.views[k] = (d, g)

    def intact(self) -> bool:
        return all(p.data is v[0] and p.grad is v[1] for p, v in zip(self.params, self.views))

    def fits(self, k: int) -> bool:
        """params[k]'s current arrays can be copied into its slot (same dtype, device, size)."""
        p, (d, _) = self.params[k], self.views[k]
        return all(a.dtype == d.dtype and a.size == d.size and backend.device_of(a).name == backend.device_of(d).name
                   for a in (p.data, p.grad))


def _key(p):
    return (str(p.data.dtype), backend.device_of(p.data).name)


class FlatParameters:
    """Every given Parameter as a view into one data and one grad buffer per (dtype, device)."""

    def __init__(self, params):
        from .module import Parameter
        params = list(params)
        if not params:
            raise GpunetValueError("FlatParameters: expected a non-empty list of Parameters, got an empty list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise GpunetTypeError(f"FlatParameters: params[{i}] expected a gn.nn.Parameter, "
                                      f"got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise GpunetValueError("FlatParameters: expected distinct Parameters, got one more than once")
        self.params = params
        self._build()

    def _build(self) -> None:
        by_key: dict = {}
        for p in self.params:
            if p.grad is None or p.grad.dtype != p.data.dtype or p.grad.size != p.data.size:
                raise GpunetValueError(f"FlatParameters: {p!r} expected a gradient of its own size and dtype, got "
                                       f"{None if p.grad is None else (tuple(p.grad.shape), str(p.grad.dtype))}")
            by_key.setdefault(_key(p), []).append(p)
        self.groups = [FlatGroup(ps) for ps in by_key.values()]
        self.where = {id(p): (gi, k) for gi, g in enumerate(self.groups) for k, p in enumerate(g.params)}
        for p in self.params:
            _owner[id(p)] = self

    def intact(self) -> bool:
        """True when every parameter's .data and .grad are still this object's views."""
        return all(g.intact() for g in self.groups)

    def ensure(self) -> bool:
        """Re-view what was replaced (copying its values in); rebuild the buffers when a dtype,
        device or size changed. Returns True when the buffers were rebuilt (new arrays)."""
        if self.intact():
            return False
        if all(g.fits(k) for g in self.groups for k in range(len(g.params))):
            for g in self.groups:
                for k, (p, v) in enumerate(zip(g.params, g.views)):
                    if p.data is not v[0] or p.grad is not v[1]:
                        g._adopt(k)
            return False
        self._build()
        return True

    def __deepcopy__(self, memo):
        import copy
        new = object.__new__(FlatParameters)
        memo[id(self)] = new
        # The parameters' copies hold copies of the arrays, not views of a new buffer: adopt them.
        new.params = copy.deepcopy(self.params, memo)
        new._build()
        return new

    def __repr__(self):
        parts = [f"{len(g.params)} params, {g.size} {g.data.dtype} on {backend.device_of(g.data).name}"
                 for g in self.groups]
        return "FlatParameters(" + "; ".join(parts) + ")"


def flat_of(params):
    """The FlatParameters that holds exactly `params` (in any order) with every view intact, or None."""
    params = list(params)
    if not params:
        return None
    flat = _owner.get(id(params[0]))
    if flat is None or len(flat.params) != len(params):
        return None
    if any(_owner.get(id(p)) is not flat or flat.where.get(id(p)) is None for p in params):
        return None
    if len({id(p) for p in params}) != len(params) or not flat.intact():
        return None
    return flat
