"""One batch through the explicit pipeline, shared by the Trainer and every data-parallel replica:

    logits = model(x); loss = loss_fn(logits, y) + penalties; model.backward(dloss) -> Parameter.grad
"""
from __future__ import annotations

from .metrics import count_correct
from .nn.module import backward_params


def forward_backward(model, loss_fn, x, y, metrics=True):
    """Forward, loss (regularization penalties included) and backward for one batch.

    Gradients accumulate into each Parameter.grad; no optimizer step. Returns the mean
    loss and the correct count (None without metrics), both as device arrays (no sync).
    """
    logits = model.forward(x)
    loss = loss_fn.forward(logits, y) + model.regularization_loss()
    backward_params(model, loss_fn.backward())  # the batch's own dx is never used
    return loss, (count_correct(logits, y) if metrics else None)
