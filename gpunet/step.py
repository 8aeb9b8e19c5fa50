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
from .metrics import count_correct


def forward_backward(model, loss_fn, x, y, metrics=True):
    """Forward, loss (regularization penalties included) and backward for one batch.

    Gradients accumulate into each Parameter.grad; no optimizer step. Returns the mean
    loss and the correct count (None without metrics), both as device arrays (no sync).
    """
    logits = model.forward(x)
    loss = loss_fn.forward(logits, y) + model.regularization_loss()
    model.backward(loss_fn.backward(), need_input_grad=False)  # the batch's own dx is never used
    return loss, (count_correct(logits, y) if metrics else None)


class LocalEngine:
    """(model, loss, optimizer) on one device."""

    world, comm = 1, None

    def __init__(self, model, loss_fn, optimizer, device="auto"):
        self.device = backend.device(device)
        model.to(self.device)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.optimizers = [optimizer]

    def train_step(self, x, y, metrics=True, before_step=None):
        """One optimizer step on batch (x, y): returns (mean loss incl. penalties, correct count)."""
        loss, correct = forward_backward(self.model, self.loss_fn, x, y, metrics)
        if before_step is not None:
            before_step()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss, correct

    def broadcast_state(self) -> None:
        """Nothing to copy: one replica."""

    def rng_states(self):
        return None

    def set_rng_states(self, states) -> None:
        """Nothing to restore: the device RNG is the Trainer's (checkpoint "rng")."""
