"""`check_model` (all static checks on one batch) and `preflight` (the same, from a dataset).

    findings = gn.doctor.check_model(model, (x, y), loss, optimizer)
    findings = gn.doctor.preflight(model, train_set, loss, optimizer, trainer, ignore=("GN103",))

Neither changes the model, the optimizer or any random stream.
"""
from __future__ import annotations

import numpy as np

from ..data import DataLoader, Dataset
from ..errors import GpunetTypeError
from .findings import ignored
from .optimizer import check_data_parallel, check_optimizer_state, check_step_size
from .probe import host, output_classes, run_probe
from .static import (check_dead_relu, check_init_loss, check_inputs, check_logits_activation,
                     check_loss_target, check_symmetric_init)
from .theory import priors_from_labels

SAMPLE_SIZE = 256      # samples in the static probe batch
PRIOR_SAMPLES = 4096   # labels read to estimate the class priors from a DataLoader


def _to_model(model, x, y):
    """x and y on the model's device; floating x in the model's dtype."""
    dev = model.device
    x = dev.asarray(x)
    if x.dtype.kind == "f" and x.dtype != model.dtype:
        x = x.astype(model.dtype)
    return x, dev.asarray(y)


def check_model(model, sample_batch, loss, optimizer=None, trainer=None) -> list:
    """Every static check on `sample_batch` = (x, y): a list of Findings, worst problems included.

    x is what the model's forward receives (already scaled as in training); y what the
    loss receives (integer labels (N,) or targets (N, C)).
    """
    if not (isinstance(sample_batch, (tuple, list)) and len(sample_batch) == 2):
        raise GpunetTypeError(f"check_model: sample_batch expected a pair (x, y), got {type(sample_batch).__name__}")
    x, y = _to_model(model, *sample_batch)
    probe = run_probe(model, loss, x, y)
    classes = probe.logits.shape[-1] if probe.logits.ndim >= 2 else 1
    findings = []
    findings += check_symmetric_init(model)
    findings += check_logits_activation(model, loss)
    findings += check_inputs(model, x)
    findings += check_loss_target(model, loss, y, classes)
    findings += check_dead_relu(probe, int(x.shape[0]))
    findings += check_init_loss(probe, loss, classes)
    findings += check_optimizer_state(optimizer)
    findings += check_step_size(probe, optimizer, trainer)
    findings += check_data_parallel(trainer, optimizer)
    return findings


def sample(model, data, trainer=None, size=SAMPLE_SIZE, seed=0):
    """((x, y) sample batch as training sees it, class priors (C,) or None) from a Dataset or DataLoader."""
    if isinstance(data, DataLoader):
        batches, labels, seen = data.iterate(0), [], 0
        first = None
        for x, y in batches:
            first = first or (x, y)
            labels.append(host(y))
            seen += len(labels[-1])
            if seen >= PRIOR_SAMPLES:
                break
        return first, np.concatenate(labels)
    if not isinstance(data, Dataset):
        raise GpunetTypeError(f"preflight: data expected a gn.data.Dataset or DataLoader, got {type(data).__name__}")
    idx = np.random.Generator(np.random.PCG64(seed)).permutation(len(data))[:size]
    sub = data.subset(np.sort(idx))
    loader = trainer.loader(sub, size, shuffle=False) if trainer is not None else \
        DataLoader(sub, size, shuffle=False, device=model.device, dtype=model.dtype)
    return next(iter(loader.iterate(0))), data.y


def preflight(model, loader_or_dataset, loss, optimizer, trainer=None, ignore=()) -> list:
    """Static checks on a batch drawn from the training data, minus the `ignore`d codes.

    Also hands the label priors π to every LiveDoctor among the trainer's callbacks,
    so that its plateau check knows the loss of "predicting the priors" (theory.py).
    """
    batch, labels = sample(model, loader_or_dataset, trainer)
    findings = check_model(model, batch, loss, optimizer, trainer)
    if trainer is not None:
        from .live import LiveDoctor
        classes = output_classes(model) if labels.ndim == 1 else labels.shape[-1]
        for cb in trainer.callbacks.callbacks:
            if isinstance(cb, LiveDoctor) and classes:
                cb.priors = priors_from_labels(labels, classes)
    return ignored(findings, ignore)
