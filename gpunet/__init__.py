"""gpunet: a GPU-accelerated neural-network training framework (CuPy on NVIDIA GPUs, NumPy on CPU).

    import gpunet as gn
    dev = gn.device("auto")
    model = gn.nn.Sequential(gn.nn.Linear(784, 256), gn.nn.ReLU(), gn.nn.Linear(256, 10))
    model.to(dev)
"""
__version__ = "0.1.0"

from .backend import Device, device, gpu_status, is_gpu_available, manual_seed  # noqa: F401
from .checks import checks, checks_enabled, set_checks  # noqa: F401
from .errors import (CheckpointError, DataError, DeviceError, DistributedError, GpunetError,  # noqa: F401
                     GpunetTypeError, GpunetValueError, NonFiniteError, ShapeError)
from . import nn  # noqa: F401

import importlib as _importlib

# Submodules load on first use (gn.losses, gn.data, ...), so `import gpunet` stays light
# and a missing optional piece never breaks the import of the rest.
_SUBMODULES = ("backend", "errors", "nn", "ops", "losses", "optim", "regularizers",
               "data", "models", "parallel", "doctor", "testing", "experiments", "checkpoint", "train",
               "metrics", "callbacks", "compare", "fileio", "plot", "threads", "interop",
               "precision", "loss_scale")
_LAZY_NAMES = {
    "Trainer": "train", "History": "train", "set_threads": "threads", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "LossScaler": "loss_scale",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(_importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'gpunet' has no attribute {name!r}")
