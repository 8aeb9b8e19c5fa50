"""The flat layout of a fused optimizer (`SGD(..., fused=True)`, `Adam`, `AdamW`).

The optimizer's parameters become views into one weight and one gradient buffer per
(dtype, device) (gpunet/nn/flat.py), in the optimizer's order, so each parameter group
is one slice of each buffer: a *segment*. Every state buffer (momentum, Adam's moments)
is one flat array per (dtype, device) as well, and `opt.state[i][name]` is params[i]'s
view into it, so state_dict(), load_state_dict() and checkpoints are exactly those of the
per-parameter optimizer (either loads the other's). A step is one fused update per
segment (gpunet/ops/optim_step.py): one kernel launch per parameter group on a GPU, the
whole-buffer NumPy twin on the CPU.

Before each step `refresh` checks, by identity and without device work, that every view
is still in place. What replaced an array (load_state_dict, a checkpoint load, Module.to
with a new dtype, `p.grad = ...`, a deep copy for data-parallel replicas, a change of
hyperparameters that needs another state buffer) is copied into the buffers and re-viewed,
so nothing is lost or updated twice.
"""
from __future__ import annotations

import copy

from .. import backend
from ..nn.flat import FlatParameters


class FusedLayout:
    def __init__(self, opt):
        self.flat = FlatParameters(opt.params)
        self.stale = True      # state buffers not adopted yet
        self.refresh(opt)

    # -- layout
    def _segments(self, opt):
        """[(param group, flat group index, lo, hi)] with each param group's run in each flat group."""
        where = self.flat.where
        out, i = [], 0
        for pg in opt.param_groups:
            runs: dict = {}
            for p in pg["params"]:
                gi, k = where[id(p)]
                fg = self.flat.groups[gi]
                lo, hi = fg.offsets[k], fg.offsets[k] + p.size
                r = runs.get(gi)
                runs[gi] = (lo, hi) if r is None else (r[0], hi)
                i += 1
            out.extend((pg, gi, lo, hi) for gi, (lo, hi) in runs.items())
        return out

    def _needs(self, opt):
        return [tuple(opt._buffer_names(pg.hyper())) for pg in opt.param_groups]

    # -- keeping views valid
    def intact(self, opt) -> bool:
        if self.stale or not self.flat.intact() or self._needs(opt) != self.names:
            return False
        st = opt.state
        return all(st[i].get(name) is view for i, name, view in self.state_views)

    def refresh(self, opt) -> None:
        """Make every parameter and state view valid again (a no-op when they are)."""
        if not self.stale and self.intact(opt):
            return
        self.flat.ensure()
        self._adopt_state(opt)

    def _adopt_state(self, opt) -> None:
        """Flat state buffers from opt.state's per-parameter arrays (created as the optimizer
        would when missing), and opt.state[i][name] views into them."""
        self.names = self._needs(opt)
        self.segments = self._segments(opt)
        self.buffers, self.state_views, self.fresh = {}, [], set()
        index = {id(p): i for i, p in enumerate(opt.params)}
        for pg, names in zip(opt.param_groups, self.names):
            for name in names:
                for p in pg["params"]:
                    i = index[id(p)]
                    gi, k = self.flat.where[id(p)]
                    fg = self.flat.groups[gi]
                    buf = self.buffers.get((gi, name))
                    if buf is None:
                        dev = backend.device_of(fg.data)
                        with dev:
                            buf = self.buffers[(gi, name)] = dev.xp.zeros(fg.size, dtype=fg.data.dtype)
                    view = buf[fg.slice(k)].reshape(p.data.shape)
                    old = opt.state[i].get(name)
                    if old is None:
                        old = opt._fused_initial(i, p, name)
                        self.fresh.add((id(pg), gi, name))
                    if old is not None and old is not view:
                        view[...] = backend.device_of(view).asarray(old, dtype=view.dtype).reshape(view.shape)
                    opt.state[i][name] = view
                    self.state_views.append((i, name, view))
        names_of = {id(pg): names for pg, names in zip(opt.param_groups, self.names)}
        self.views = []   # per segment: (group, flat group, w, g, {name: state slice})
        for pg, gi, lo, hi in self.segments:
            fg = self.flat.groups[gi]
            state = {name: self.buffers[(gi, name)][lo:hi] for name in names_of[id(pg)]}
            self.views.append((pg, gi, fg.data[lo:hi], fg.grad[lo:hi], state))
        self.stale = False

    def fresh_take(self, pg, gi, name) -> bool:
        """True once for a state buffer created at this step (SGD's velocity_init="grad": v₁ = g)."""
        key = (id(pg), gi, name)
        if key in self.fresh:
            self.fresh.discard(key)
            return True
        return False

    def __deepcopy__(self, memo):
        new = object.__new__(FusedLayout)
        memo[id(self)] = new
        new.flat = copy.deepcopy(self.flat, memo)   # the copied parameters become views of new buffers
        new.stale = True                            # the copied opt.state is adopted at the next refresh
        return new
