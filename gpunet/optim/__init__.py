"""gn.optim: optimizers (simplest first), gradient clipping and learning-rate schedules.

    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = gn.optim.get("adamw", model.parameters(), lr=3e-4)
    sched = gn.optim.Scheduler(opt, gn.optim.schedules.Cosine(total=90))

Every optimizer follows PyTorch's update rules and hyperparameter names, updates in
place without a host sync, and offers step(), zero_grad(), lr, state_dict() and
load_state_dict(). See optimizer.py for the state-dict layout.
"""
from . import schedules  # noqa: F401
from ..errors import GpunetValueError
from .adam import Adam, AdamW
from .lbfgs import LBFGS  # noqa: F401
from .optimizer import Optimizer, clip_grad_norm  # noqa: F401
from .rmsprop import RMSprop
from .schedules import (Chain, Compose, Constant, Cosine, Exponential, LinearScaling,  # noqa: F401
                        LinearWarmup, Schedule, Scheduler, StepLR, linear_scaling, linear_scaling_warmup)
from .sgd import SGD

OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get(name: str, params, **kw) -> Optimizer:
    """An optimizer by name ("sgd", "rmsprop", "adam", "adamw"), built with `params` and `kw`."""
    cls = OPTIMIZERS.get(name.lower() if isinstance(name, str) else name)
    if cls is None:
        raise GpunetValueError(f"optimizer: name expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    return cls(params, **kw)


__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "clip_grad_norm", "get", "schedules",
           "Schedule", "Scheduler", "Constant", "StepLR", "Exponential", "Cosine", "LinearWarmup",
           "LinearScaling", "Chain", "Compose", "linear_scaling", "linear_scaling_warmup"]
