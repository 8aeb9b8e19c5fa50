"""gn.optim: optimizers (simplest first), gradient clipping and learning-rate schedules.

    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = gn.optim.get("adamw", model.parameters(), lr=3e-4)
    sched = gn.optim.Scheduler(opt, gn.optim.schedules.Cosine(total=90))

SGD, Adam and AdamW take fused=True (as torch.optim): the parameters become views into
one flat buffer per dtype and device and a step is one fused kernel per parameter group
(fused.py). Every optimizer follows PyTorch's update rules and hyperparameter names, updates in
place without a host sync, and offers step(), zero_grad(), lr, state_dict() and
load_state_dict(). See optimizer.py for the state-dict layout.
"""
from . import schedules  # noqa: F401
from ..errors import GpunetValueError
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm, clip_grad_norm_, clip_grad_value, clip_grad_value_  # noqa: F401
from .groups import ParamGroup  # noqa: F401
from .lbfgs import LBFGS  # noqa: F401
from .optimizer import Optimizer
from .plateau import ReduceLROnPlateau
from .radam import NAdam, RAdam
from .rmsprop import RMSprop
from .schedules import (Chain, Compose, Constant, Cosine, CosineWarmRestarts, Exponential,  # noqa: F401
                        LinearScaling, LinearWarmup, MultiStep, OneCycle, Polynomial, Schedule, Scheduler,
                        StepLR, StepScheduler, linear_scaling, linear_scaling_warmup)
from .sgd import SGD

OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
              "nadam": NAdam, "radam": RAdam}


def get(name: str, params, **kw) -> Optimizer:
    """An optimizer by name (a key of OPTIMIZERS), built with `params` and `kw`."""
    cls = OPTIMIZERS.get(name.lower() if isinstance(name, str) else name)
    if cls is None:
        raise GpunetValueError(f"optimizer: name expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    if kw.get("fused") is True and not cls.FUSABLE:
        raise GpunetValueError(f"optimizer {name!r}: fused=True expected one of "
                               f"{sorted(k for k, c in OPTIMIZERS.items() if c.FUSABLE)} (the optimizers with a "
                               f"fused kernel), got {name!r}")
    return cls(params, **kw)


__all__ = ["Optimizer", "ParamGroup", "SGD", "LBFGS", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam",
           "clip_grad_norm", "clip_grad_norm_", "clip_grad_value", "clip_grad_value_", "get", "schedules",
           "Schedule", "Scheduler", "StepScheduler", "Constant", "StepLR", "MultiStep", "Exponential", "Cosine",
           "CosineWarmRestarts", "Polynomial", "OneCycle", "ReduceLROnPlateau", "LinearWarmup",
           "LinearScaling", "Chain", "Compose", "linear_scaling", "linear_scaling_warmup"]
