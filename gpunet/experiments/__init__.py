"""The classic training questions, each answered by a seeded experiment.

    gpunet experiment --list
    gpunet experiment zero-init-softmax [--quick] [--device cpu]

Each lives in its own module here (NAME, QUESTION, run(quick, device, out) -> Result).
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

from ..errors import GpunetValueError
from .base import Result, save, show  # noqa: F401

# name -> module (in the order of docs/experiments.md)
REGISTRY = {
    "zero-init-softmax": "zero_init_softmax",
    "zero-init-deep": "zero_init_deep",
    "dropout-scaling": "dropout_scaling",
    "momentum-velocity-init": "momentum_velocity_init",
    "soft-targets-precision": "soft_targets_precision",
    "batch-size-nondeterminism": "batch_size_nondeterminism",
    "unnormalized-inputs": "unnormalized_inputs",
    "relu-last-layer": "relu_last_layer",
    "mse-vs-threshold": "mse_vs_threshold",
    "l1-on-softmax": "l1_on_softmax",
    "generalized-dice": "generalized_dice",
    "batchnorm-placement": "batchnorm_placement",
    "multi-gpu-averaging": "multi_gpu_averaging",
}


def available() -> dict:
    """name -> question, for the experiments whose modules are present."""
    out = {}
    for name, mod in REGISTRY.items():
        try:
            out[name] = importlib.import_module(f".{mod}", __name__).QUESTION
        except ModuleNotFoundError:
            continue
    return out


def get(name: str):
    if name not in REGISTRY:
        raise GpunetValueError(f"experiment: expected one of {list(REGISTRY)}, got {name!r}")
    return importlib.import_module(f".{REGISTRY[name]}", __name__)


def run(name: str, quick: bool = False, device: str = "cpu", out=None) -> Result:
    """Run one experiment, save result.json (and its plots) under `out`, return the Result."""
    module = get(name)
    out = Path(out) if out is not None else Path("runs") / "experiments" / name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = module.run(quick=quick, device=device, out=out)
    result.seconds, result.quick, result.device = time.perf_counter() - t0, quick, device
    save(result, out)
    return result
