"""One side-effect-free forward/backward on a sample batch, and the OneHotLoss adapter.

`run_probe` measures what the static checks need: the loss at initialization, the
logits, each ReLU's activity, and each parameter's weight and gradient norm. It
leaves the model exactly as it found it: gradients, BatchNorm running statistics
and training flags are restored, and Dropout runs in eval mode so that the probe
draws no random numbers (a run with the doctor is bit-identical to one without).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import backend, nn
from ..data.transforms import one_hot
from ..losses.base import Loss


class OneHotLoss(Loss):
    """Feeds `inner` one-hot targets (N, C) built from integer labels (N,) on the device.

    Lets per-class losses (BCEWithLogits, MSE) train on gpunet's integer-label
    datasets: target_ic = 1 if y_i = c else 0. Soft or (N, C) targets pass through.
    """

    def __init__(self, inner: Loss, classes: int):
        super().__init__(inner.reduction)
        self.inner, self.classes = inner, int(classes)

    def forward(self, pred, target):
        if target.ndim == 1:
            target = one_hot(target, self.classes, dtype=pred.dtype)
        return self.inner.forward(pred, target)

    def backward(self, grad=1.0):
        return self.inner.backward(grad)

    def extra_repr(self):
        return f"{self.inner!r}, classes={self.classes}"


@dataclasses.dataclass
class Probe:
    loss: float                 # the loss on the sample batch at initialization
    logits: np.ndarray          # host copy of the model output
    relu_dead: dict             # ReLU module name -> fraction of units never active
    weight_norm: dict           # parameter name -> ‖w‖
    grad_norm: dict             # parameter name -> ‖∂loss/∂w‖
    size: dict                  # parameter name -> number of elements


def leaves(model):
    """(name, module) for every module without children, in registration (forward) order."""
    return [(n, m) for n, m in model.named_modules() if not m.named_children()]


def output_classes(model) -> int | None:
    """The width of the model's output: the last Linear's out_features (or Conv2d's channels)."""
    for _, m in reversed(leaves(model)):
        width = getattr(m, "out_features", None) or getattr(m, "out_channels", None)
        if width:
            return int(width)
    return None


def _relu_activity(model) -> dict:
    """Fraction of units (features, or channels of an NCHW map) never > 0 over the batch."""
    out = {}
    for name, m in model.named_modules():
        cache = getattr(m, "_cache", None)
        if isinstance(m, nn.ReLU) and not m.mask and cache is not None:
            act = cache[0]
        elif isinstance(m, nn.LeakyReLU) and cache is not None:
            act = cache
        else:
            continue
        axes = (0,) + tuple(range(2, act.ndim))  # units are axis 1: features or channels
        alive = (act > 0).any(axis=axes)
        out[name] = 1.0 - float(alive.mean())  # sync: static check
    return out


def run_probe(model, loss_fn, x, y) -> Probe:
    """Forward and backward on (x, y); the model's state is left as it was."""
    params = model.named_parameters()
    saved_grads = [p.grad.copy() for _, p in params]
    buffers = {k: v.copy() for k, v in model.named_buffers() if v is not None}
    flags = [(m, m.training) for m in model.modules()]
    for m in model.modules():  # train-mode BatchNorm (batch statistics), no Dropout draws
        object.__setattr__(m, "training", not isinstance(m, nn.Dropout))
    try:
        for _, p in params:
            p.grad.fill(0)
        logits = model.forward(x)
        value = float(loss_fn.forward(logits, y))  # sync: static check
        relu_dead = _relu_activity(model)
        model.backward(loss_fn.backward())
        norm = lambda a: float(backend.xp_of(a).linalg.norm(a.ravel()))  # noqa: E731  # sync
        probe = Probe(value, backend.to_numpy(logits), relu_dead,
                      {n: norm(p.data) for n, p in params}, {n: norm(p.grad) for n, p in params},
                      {n: p.size for n, p in params})
    finally:
        for (_, p), g in zip(params, saved_grads):
            p.grad[...] = g  # in place: data-parallel grads are views into one flat buffer
        model.load_state_dict(buffers, strict=False)
        for m, mode in flags:
            object.__setattr__(m, "training", mode)
    return probe


def host(a) -> np.ndarray:
    return np.asarray(backend.to_numpy(a))
