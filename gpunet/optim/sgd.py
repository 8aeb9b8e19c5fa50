"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

PyTorch's torch.optim.SGD, step by step (g the gradient, w the weight, v the velocity):

    g ← g + weight_decay · w                       (L2, folded into the gradient)
    v ← momentum · v + (1 − dampening) · g         (when momentum > 0)
    d ← g + momentum · v   if nesterov   else v    (d = g when momentum = 0)
    w ← w − lr · d

Velocity starts at zero (v₀ = 0), so the first step moves by lr·g. With dampening = 0
that is exactly PyTorch, which instead sets v₁ = g at the first step. `velocity_init`
is an experiment hook for "how should momentum's velocity start": "zeros" (default),
"ones", "grad" (v₁ = g, PyTorch's first step exactly, also with dampening), or a
callable `f(param) -> array` of the parameter's shape giving v₀.

Reference: Sutskever et al. 2013, "On the importance of initialization and momentum in deep learning".
"""
from __future__ import annotations

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError
from ..ops.optim_step import sgd_step_unchecked
from .optimizer import Optimizer, check_number

VELOCITY_INITS = ("zeros", "ones", "grad")


class SGD(Optimizer):
    """SGD(params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0, velocity_init="zeros",
    fused=False).

    fused=True: the parameters become views into one flat buffer per dtype and device and
    each step is one fused update per parameter group (one CUDA kernel on a GPU; see fused.py).
    """

    HYPER = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    FUSABLE = True

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 velocity_init="zeros", fused=False):
        if not (callable(velocity_init) or velocity_init in VELOCITY_INITS):
            raise GpunetValueError(f"SGD: velocity_init expected one of {VELOCITY_INITS} or a callable, "
                                   f"got {velocity_init!r}")
        # Not a state-dict hyperparameter: it matters only when the velocity is created
        # and may be a callable, which is not JSON-able.
        self.velocity_init = velocity_init
        super().__init__(params, lr, fused=fused, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, dampening=dampening)

    def _check_hyper(self, h: dict) -> dict:
        out = super()._check_hyper(h)
        out["momentum"] = check_number("SGD", "momentum", h["momentum"], lo=0.0, hi=1.0, hi_open=True)
        out["dampening"] = check_number("SGD", "dampening", h["dampening"], lo=0.0, hi=1.0)
        out["weight_decay"] = check_number("SGD", "weight_decay", h["weight_decay"], lo=0.0)
        if not isinstance(h["nesterov"], bool):
            raise GpunetTypeError(f"SGD: nesterov expected a bool, got {h['nesterov']!r}")
        out["nesterov"] = h["nesterov"]
        if out["nesterov"] and (out["momentum"] == 0.0 or out["dampening"] != 0.0):
            raise GpunetValueError(f"SGD: nesterov=True expected momentum > 0 and dampening = 0, "
                                   f"got momentum={out['momentum']} and dampening={out['dampening']}")
        return out

    def _buffer_names(self, hyper: dict) -> tuple:
        return ("momentum_buffer",) if hyper["momentum"] else ()

    def _initial_velocity(self, p):
        xp = backend.xp_of(p.data)
        if self.velocity_init == "ones":
            return xp.ones_like(p.data)
        v = backend.device_of(p.data).asarray(self.velocity_init(p), dtype=p.data.dtype)
        if v.shape != p.data.shape:
            raise GpunetValueError(f"SGD: velocity_init({p.name or 'param'}) expected shape "
                                   f"{tuple(p.data.shape)}, got {tuple(v.shape)}")
        return v.copy() if v is p.data else v

    def _velocity(self, i, p, g, h):
        """(v after this step's update, in place). v₀ comes from velocity_init."""
        if "momentum_buffer" not in self.state[i] and self.velocity_init == "grad":
            self.state[i]["momentum_buffer"] = g.copy()  # PyTorch: v₁ = g, undamped
            return self.state[i]["momentum_buffer"]
        init = None if self.velocity_init in ("zeros", "grad") else self._initial_velocity
        v = self._buffer(i, "momentum_buffer", init)
        v *= h["momentum"]
        if h["dampening"]:
            v += (1.0 - h["dampening"]) * g
        else:
            v += g
        return v

    def _update(self, i, p, h):
        w, xp = p.data, backend.xp_of(p.data)
        g = self._l2_grad(p, h["weight_decay"])
        owned = g is not p.grad  # owned: d is this step's scratch array, free to overwrite
        d = g
        if h["momentum"]:
            v = self._velocity(i, p, g, h)
            if h["nesterov"]:
                d = xp.multiply(v, h["momentum"])
                d += g
                owned = True
            else:
                d, owned = v, False
        if owned:
            d *= h["lr"]
            w -= d
        else:
            w -= xp.multiply(d, h["lr"])

    # -- fused: one update over a parameter group's slice of the flat buffers
    def _fused_initial(self, i, p, name):
        if self.velocity_init in ("zeros", "grad"):
            return None  # zeros; "grad" sets v₁ = g in the kernel (the layout marks the buffer fresh)
        return self._initial_velocity(p)

    def _fused_update(self, layout, h, gi, w, g, state):
        v = state.get("momentum_buffer")
        fresh = v is not None and self.velocity_init == "grad" and layout.fresh_take(h, gi, "momentum_buffer")
        sgd_step_unchecked(w, g, v, lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                           weight_decay=h["weight_decay"], nesterov=h["nesterov"], v_from_grad=fresh)
