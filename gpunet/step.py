"""The local engine: one batch through the explicit pipeline on one device.

    logits = model(x); loss = loss_fn(logits, y) + penalties; model.backward(dloss) -> Parameter.grad
    callbacks.on_before_optimizer_step; optimizer.step(); optimizer.zero_grad()

The Trainer hands every step to an engine: this one for one device, the data-parallel
one (gpunet/parallel/engine.py) for replicas. Both share `forward_backward` and offer
the same interface: `device`, `world`, `comm`, `optimizers`, `train_step(x, y, metrics,
before_step)`, `broadcast_state()`, `rng_states()`, `set_rng_states(states)`.
"""
from __future__ import annotations

from . import backend
from .errors import GpunetValueError
from .metrics import count_correct


def _scaled(dloss, loss_scale):
    """dloss × the loss scale (fp16 loss scaling; a power of two, so exact), or dloss itself."""
    return dloss if loss_scale == 1.0 else dloss * dloss.dtype.type(loss_scale)


def forward_backward(model, loss_fn, x, y, metrics=True, loss_scale=1.0):
    """Forward, loss (regularization penalties included) and backward for one batch.

    Gradients accumulate into each Parameter.grad (times `loss_scale`, see gpunet.loss_scale);
    no optimizer step. Returns the mean loss and the correct count (None without metrics),
    both as device arrays (no sync).
    """
    logits = model.forward(x)
    loss = loss_fn.forward(logits, y) + model.regularization_loss()
    model.backward(_scaled(loss_fn.backward(), loss_scale), need_input_grad=False)  # the batch's own dx is never used
    return loss, (count_correct(logits, y) if metrics else None)


def forward_backward_accumulated(model, loss_fn, x, y, chunks: int, metrics=True, loss_scale=1.0):
    """`forward_backward` of the whole batch in `chunks` micro-batches (gradient accumulation).

    Micro-batch i of n_i rows scales its loss gradient by n_i / N, so Parameter.grad ends as
    the gradient of the whole batch's mean loss (exactly, up to rounding, for models without
    batch statistics; BatchNorm sees each micro-batch's own statistics, as in PyTorch).
    Only activations of N / chunks rows are alive at once.
    """
    n, loss, correct = x.shape[0], 0.0, 0
    bounds = [n * i // chunks for i in range(chunks + 1)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            continue
        logits = model.forward(x[lo:hi])
        part = loss_fn.forward(logits, y[lo:hi])
        model.backward(_scaled(loss_fn.backward() * ((hi - lo) / n), loss_scale), need_input_grad=False)
        loss = loss + part * ((hi - lo) / n)
        if metrics:
            correct = correct + count_correct(logits, y[lo:hi])
    return loss, (correct if metrics else None)


def unscale_or_skip(scaler, grads) -> bool:
    """With a loss scaler: True (and `grads` divided by the scale) when they are finite, False
    when the step must be skipped. Without one: True."""
    if scaler is None:
        return True
    if not scaler.check(grads):
        return False
    scaler.unscale_(grads)
    return True


class LocalEngine:
    """(model, loss, optimizer) on one device; `accumulate` K splits each batch into K micro-batches."""

    world, comm = 1, None
    scaler = None  # a gpunet.loss_scale.LossScaler (fp16), set by the Trainer

    def __init__(self, model, loss_fn, optimizer, device="auto", accumulate: int = 1):
        self.device = backend.device(device)
        model.to(self.device)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.optimizers = [optimizer]
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise GpunetValueError(f"LocalEngine: accumulate expected an int >= 1, got {accumulate!r}")
        if accumulate > 1 and any(getattr(m, "kernel_regularizer", None) or getattr(m, "activity_regularizer", None)
                                  for m in model.modules()):
            raise GpunetValueError("LocalEngine: accumulate expected a model without layer regularizers (their "
                                   "penalty gradient would be added once per micro-batch), got accumulate="
                                   f"{accumulate} with regularized layers; use the optimizer's weight_decay")
        self.accumulate = accumulate

    def train_step(self, x, y, metrics=True, before_step=None):
        """One optimizer step on batch (x, y): returns (mean loss incl. penalties, correct count)."""
        scale = 1.0 if self.scaler is None else self.scaler.scale
        if self.accumulate > 1:
            loss, correct = forward_backward_accumulated(self.model, self.loss_fn, x, y, self.accumulate, metrics,
                                                         scale)
        else:
            loss, correct = forward_backward(self.model, self.loss_fn, x, y, metrics, scale)
        ok = self.scaler is None or unscale_or_skip(self.scaler, [p.grad for p in self.model.parameters()])
        if before_step is not None:
            before_step()
        if ok:
            self.optimizer.step()
        self.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.update(ok)
        return loss, correct

    def broadcast_state(self) -> None:
        """Nothing to copy: one replica."""

    def rng_states(self):
        return None

    def set_rng_states(self, states) -> None:
        """Nothing to restore: the device RNG is the Trainer's (checkpoint "rng")."""
