"""Static checks of the optimizer and the trainer: initial state, step size, gradient reduction.

Plain SGD moves w by Δw = −lr·g. Adam's first step moves every element by ≈ lr
(m̂/√v̂ = ±1), RMSprop's by lr/√(1−α). When ‖Δw‖ > ‖w‖ the step rewrites the
layer rather than nudging it: the classic sign of an lr that will diverge.
"""
from __future__ import annotations

import math

import numpy as np

from .. import optim
from .findings import Finding
from .probe import host

STEP_RATIO = 1.0  # ‖Δw‖ / ‖w‖ above this in one step


def _is_adaptive(optimizer) -> bool:
    # RAdam is not here: its first steps (ρ_t ≤ 5) are SGD with momentum, lr·g.
    return isinstance(optimizer, (optim.Adam, optim.RMSprop, optim.NAdam, optim.Adagrad))


def grad_scale(trainer) -> int:
    """How many times larger the applied gradient is than the one-device gradient (reduce='sum': N)."""
    if trainer is None:
        return 1
    return int(trainer.replicas) if getattr(trainer, "reduce", "mean") == "sum" else 1


def check_optimizer_state(optimizer) -> list:
    """GN108: momentum velocity (or any optimizer buffer) that starts non-zero.

    v₀ = 1 adds lr·Σ_k m^k = lr·m/(1−m) to every weight's drift on top of the
    gradient steps, in the same direction for every element (10× lr per element
    at m = 0.9): a push no gradient asked for. The velocity must start at zero.
    """
    if optimizer is None:
        return []
    velocity_init = getattr(optimizer, "velocity_init", "zeros")
    momentum = float(getattr(optimizer, "momentum", 0.0) or 0.0)
    bad = momentum > 0 and velocity_init not in ("zeros", "grad")
    if bad and callable(velocity_init):
        p = optimizer.params[0]
        bad = bool(np.abs(host(optimizer._initial_velocity(p))).max() > 0)
    if not bad and optimizer.step_count == 0:
        buffers = optimizer.state_dict().get("buffers", {})
        bad = any(np.abs(host(b)).max() > 0 for b in buffers.values())
    if not bad:
        return []
    lr = float(optimizer.lr)
    return [Finding(
        "error", "GN108-optimizer-state",
        f"optimizer state starts non-zero (velocity_init={getattr(velocity_init, '__name__', velocity_init)!r}): "
        f"every weight drifts by lr·m/(1−m) = {lr * momentum / (1 - momentum) if momentum < 1 else math.inf:.3g} "
        "in a direction no gradient chose.",
        {"velocity_init": str(getattr(velocity_init, "__name__", velocity_init)), "momentum": momentum, "lr": lr},
        "start momentum velocity at zero: SGD(..., velocity_init=\"zeros\") (the default)")]


def check_step_size(probe, optimizer, trainer=None) -> list:
    """GN109: a weight matrix whose first update would be larger than the matrix itself.

    ‖Δw‖ = lr·k·‖g‖ for SGD (k = N replicas under reduce='sum', else 1), or
    ≈ lr·√n for Adam (n elements) and lr·√n/√(1−α) for RMSprop. Zero-initialized
    weights are skipped: any step is larger than nothing.
    """
    if optimizer is None:
        return []
    lr, scale = float(optimizer.lr), grad_scale(trainer)
    ratios = {}
    for name, w_norm in probe.weight_norm.items():
        if name.endswith("bias") or w_norm == 0 or name not in probe.grad_norm:
            continue
        if _is_adaptive(optimizer):
            n = probe.size[name]
            alpha = getattr(optimizer, "alpha", None)
            step = lr * math.sqrt(n) / (math.sqrt(1 - alpha) if alpha else 1.0)
        else:
            step = lr * scale * probe.grad_norm[name]
        ratios[name] = step / w_norm
    if not ratios or max(ratios.values()) <= STEP_RATIO:
        return []
    worst = max(ratios, key=ratios.get)
    return [Finding(
        "warning", "GN109-step-too-large",
        f"the first step would move {worst} by {ratios[worst]:.3g}× its norm (lr={lr:g}): "
        "the update rewrites the weights instead of nudging them.",
        {"param": worst, "update_to_weight": ratios[worst], "lr": lr,
         "grad_norm": probe.grad_norm[worst], "weight_norm": probe.weight_norm[worst]},
        f"lower the lr (below about {lr / ratios[worst] * 0.1:.3g} here) or add warmup")]


def check_data_parallel(trainer, optimizer) -> list:
    """GN110: reduce='sum' over N replicas without dividing the lr by N.

    g = Σ_i g_i = N × the global-batch gradient, so plain SGD takes N× the
    single-device step (lr·N). That is why summing over 2 GPUs can reach a different
    accuracy than averaging (84% against 86% on CIFAR-10). Adam mostly cancels the
    scale (m̂/√v̂ is invariant to it), so it is only noted there.
    """
    if trainer is None or getattr(trainer, "replicas", 1) <= 1 or getattr(trainer, "reduce", "mean") != "sum":
        return []
    n, lr = int(trainer.replicas), float(optimizer.lr) if optimizer is not None else float("nan")
    scaled = getattr(trainer, "lr_scaling", "none") == "linear"
    factor = n * n if scaled else n
    adaptive = optimizer is not None and _is_adaptive(optimizer)
    return [Finding(
        "info" if adaptive else "warning", "GN110-dp-sum-lr",
        f"gradients are summed over {n} replicas, so each step is {factor}× the single-device step "
        f"(effective lr {lr * n:g}{' after linear scaling' if scaled else ''}).",
        {"replicas": n, "reduce": "sum", "lr": lr, "effective_lr": lr * n, "lr_scaling": trainer.lr_scaling},
        f"use reduce=\"mean\", or divide the lr by {n} (lr={lr / n:g}); if it already is, ignore GN110")]
