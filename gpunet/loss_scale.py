"""Dynamic loss scaling for fp16 training (Micikevicius et al. 2018, "Mixed Precision Training";
the state machine of PyTorch's GradScaler).

fp16 holds magnitudes from 6e-8 (subnormal) to 65504. Small gradients underflow to zero
and large ones overflow to Inf. Scaling the loss by S scales every gradient by S, moving
them up into fp16's range; the float32 gradients are divided by S before the step:

    backward of S·loss  ->  g_S = S·g   (fp16 GEMMs on the way, float32 accumulation)
    finite(g_S)?  yes: g = g_S / S, optimizer.step(); after `growth_interval` good steps
                       in a row S *= growth_factor (up to max_scale)
                  no:  skip the step (weights and optimizer state unchanged),
                       S = max(S·backoff_factor, min_scale)

S and the factors are powers of two, so scaling and unscaling are exact. Deciding the skip
needs one host read per step (a sync, as in PyTorch's GradScaler). Under data parallel the
check runs after the all-reduce: every replica sees the same gradients and takes the same
decision. The state (scale, good-step count, counters) goes into checkpoints, so a resumed
run scales exactly as the uninterrupted one.
"""
from __future__ import annotations

import math

from . import backend
from .errors import CheckpointError, GpunetValueError


def _positive(name, value, above_one=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
            or (above_one and value <= 1):
        want = "a finite number > 1" if above_one else "a finite number > 0"
        raise GpunetValueError(f"LossScaler: {name} expected {want}, got {value!r}")
    return float(value)


class LossScaler:
    """Dynamic loss scale S: `scale` multiplies dloss; `check(grads)`, `unscale_(grads)`, then `update(ok)`.

    init_scale 2^16, growth_factor 2, backoff_factor 0.5, growth_interval 2000 (PyTorch's
    defaults); min_scale 2^-14 is the floor (a scale stuck there means the gradients are not
    finite at any scale: the model itself overflows), max_scale 2^24 the ceiling.
    Counters: `steps` (updates seen), `skipped` (steps skipped), `skipped_in_a_row`.
    """

    HYPER = ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "min_scale", "max_scale")

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 min_scale=2.0 ** -14, max_scale=2.0 ** 24):
        self.init_scale = _positive("init_scale", init_scale)
        self.growth_factor = _positive("growth_factor", growth_factor, above_one=True)
        self.backoff_factor = _positive("backoff_factor", backoff_factor)
        if self.backoff_factor >= 1:
            raise GpunetValueError(f"LossScaler: backoff_factor expected a number in (0, 1), got {backoff_factor!r}")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) or growth_interval < 1:
            raise GpunetValueError(f"LossScaler: growth_interval expected an int >= 1, got {growth_interval!r}")
        self.growth_interval = growth_interval
        self.min_scale = _positive("min_scale", min_scale)
        self.max_scale = _positive("max_scale", max_scale)
        if not self.min_scale <= self.init_scale <= self.max_scale:
            raise GpunetValueError(f"LossScaler: init_scale expected to lie in [min_scale, max_scale] = "
                                   f"[{self.min_scale:g}, {self.max_scale:g}], got {init_scale!r}")
        self.scale = self.init_scale
        self.good_steps, self.steps, self.skipped, self.skipped_in_a_row = 0, 0, 0, 0
        self.found_inf = False  # the current step's verdict (LiveDoctor skips sampling such a step)

    def __repr__(self):
        return f"LossScaler(scale={self.scale:g}, skipped={self.skipped}/{self.steps})"

    @property
    def at_floor(self) -> bool:
        return self.scale <= self.min_scale

    # ------------------------------------------------------------- one step
    def check(self, grads) -> bool:
        """Whether every scaled gradient array in `grads` is finite; the verdict is kept in
        `found_inf` for this step. Under data parallel, pass one replica's (reduced) gradients."""
        finite = True
        for g in grads:
            finite = finite and bool(backend.xp_of(g).isfinite(g).all())  # sync: the skip is decided on the host
        self.found_inf = not finite
        return finite

    def unscale_(self, grads) -> None:
        """Divide the gradient arrays by the scale, in place (exact: the scale is a power of two)."""
        if self.scale != 1.0:
            for g in grads:
                g *= g.dtype.type(1.0 / self.scale)

    def update(self, ok: bool) -> None:
        """Advance the state machine after a step whose gradients were finite (`ok`) or not."""
        self.steps += 1
        if ok:
            self.skipped_in_a_row = 0
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale = min(self.scale * self.growth_factor, self.max_scale)
                self.good_steps = 0
        else:
            self.skipped += 1
            self.skipped_in_a_row += 1
            self.good_steps = 0
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "steps": self.steps,
                "skipped": self.skipped, "skipped_in_a_row": self.skipped_in_a_row,
                "hyper": {k: getattr(self, k) for k in self.HYPER}}

    def check_state_dict(self, state) -> None:
        """Raise CheckpointError unless `state` is a LossScaler state this scaler can load."""
        if not isinstance(state, dict):
            raise CheckpointError(f"loss scaler: expected a state dict, got {type(state).__name__}")
        scale = state.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise CheckpointError(f"loss scaler: scale expected a finite number > 0, got {scale!r:.60}")
        for key in ("good_steps", "steps", "skipped", "skipped_in_a_row"):
            v = state.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CheckpointError(f"loss scaler: {key} expected a non-negative int, got {v!r:.60}")

    def load_state_dict(self, state) -> None:
        """Restore the scale and counters (the hyperparameters stay this scaler's own)."""
        self.check_state_dict(state)
        self.scale = float(state["scale"])
        self.good_steps, self.steps = int(state["good_steps"]), int(state["steps"])
        self.skipped, self.skipped_in_a_row = int(state["skipped"]), int(state["skipped_in_a_row"])
        self.found_inf = False


def make_loss_scaler(loss_scale, precision: str, model) -> LossScaler | None:
    """The Trainer's `loss_scale=`: "auto" (dynamic for fp16, else none), "dynamic", "none"/None,
    or a LossScaler; refused with layer regularizers (their gradient would not be scaled)."""
    if isinstance(loss_scale, LossScaler):
        scaler = loss_scale
    elif isinstance(loss_scale, str) and loss_scale in ("auto", "dynamic", "none"):
        scaler = LossScaler() if loss_scale == "dynamic" or (loss_scale == "auto" and precision == "fp16") else None
    elif loss_scale is None:
        scaler = None
    else:
        raise GpunetValueError(f"Trainer: loss_scale expected 'auto', 'dynamic', 'none'/None or a gn.LossScaler, "
                               f"got {loss_scale!r}")
    if scaler is not None and any(getattr(m, "kernel_regularizer", None) or getattr(m, "activity_regularizer", None)
                                  for m in model.modules()):
        raise GpunetValueError("Trainer: loss scaling expected a model without layer regularizers (their penalty "
                               "gradient is added unscaled during backward), got regularized layers; use the "
                               "optimizer's weight_decay, or loss_scale=None")
    return scaler
