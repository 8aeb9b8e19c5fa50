"""Parameter groups: per-group hyperparameters, as in PyTorch.

    opt = gn.optim.SGD([{"params": weights}, {"params": biases_and_norms, "weight_decay": 0.0}],
                       lr=0.1, momentum=0.9, weight_decay=5e-4)

Each group is a `ParamGroup`, a dict holding "params" and every hyperparameter of its
optimizer; a key a group leaves out takes the constructor's value. Writes such as
`opt.param_groups[1]["lr"] = 0.01` are validated by the optimizer's own checks, and
a key the optimizer does not have is refused (it would otherwise be ignored).
"""
from __future__ import annotations

from ..errors import GpunetError, GpunetTypeError, GpunetValueError
from ..nn.module import Parameter


def _rebuild(owner, items):
    return ParamGroup(owner, items)


class ParamGroup(dict):
    """{"params": [Parameter, ...], <hyperparameter>: value, ...}; hyperparameter writes are checked."""

    def __init__(self, owner, items):
        super().__init__(items)
        self._owner = owner

    def __reduce__(self):  # copy/deepcopy/pickle without replaying validated writes
        return _rebuild, (self._owner, dict(self))

    def hyper(self) -> dict:
        return {k: self[k] for k in self._owner.HYPER}

    def __setitem__(self, key, value):
        owner = self._owner
        name = type(owner).__name__
        if key == "params":
            raise GpunetValueError(f"{name}: a parameter group's 'params' are fixed at construction "
                                   f"(its state is indexed by them); build a new optimizer instead")
        if key not in owner.HYPER:
            raise GpunetValueError(f"{name}: parameter group key expected one of {list(owner.HYPER)}, "
                                   f"got {key!r}")
        dict.__setitem__(self, key, owner._check_hyper({**self.hyper(), key: value})[key])

    def update(self, *args, **kw):
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


def _group_params(owner: str, k: int, ps) -> list:
    if isinstance(ps, Parameter):
        return [ps]
    if hasattr(ps, "parameters") and callable(ps.parameters):
        ps = ps.parameters()
    try:
        ps = list(ps)
    except TypeError:
        raise GpunetTypeError(f"{owner}: param_groups[{k}]['params'] expected a list of gn.nn.Parameter, "
                              f"got {type(ps).__name__}") from None
    for j, p in enumerate(ps):
        if not isinstance(p, Parameter):
            raise GpunetTypeError(f"{owner}: param_groups[{k}]['params'][{j}] expected a gn.nn.Parameter, "
                                  f"got {type(p).__name__}")
    return ps


def make_groups(opt, params, defaults: dict, check_params) -> list:
    """ParamGroups from a list of Parameters (one group) or of dicts (one group each)."""
    owner = type(opt).__name__
    if not (hasattr(params, "parameters") or isinstance(params, (Parameter, dict))):
        try:
            params = list(params)
        except TypeError:
            pass  # check_params names the type
    if isinstance(params, dict):
        raise GpunetTypeError(f"{owner}: params expected a list of parameter-group dicts, got a single dict "
                              f"(wrap it in a list)")
    if not (isinstance(params, list) and params and any(isinstance(g, dict) for g in params)):
        return [ParamGroup(opt, {"params": check_params(owner, params), **defaults})]
    groups = []
    for k, g in enumerate(params):
        if not isinstance(g, dict):
            raise GpunetTypeError(f"{owner}: params expected either Parameters or parameter-group dicts, "
                                  f"got a dict and a {type(g).__name__} (params[{k}])")
        unknown = sorted(set(g) - set(opt.HYPER) - {"params"}, key=str)
        if "params" not in g or unknown:
            raise GpunetValueError(f"{owner}: param_groups[{k}] expected a 'params' key and any of "
                                   f"{list(opt.HYPER)}, got keys {sorted(g, key=str)}")
        ps = _group_params(owner, k, g["params"])
        given = {key: v for key, v in g.items() if key != "params"}
        try:
            if "lr" in given:  # a user-given lr must be > 0, as in the constructor
                opt._check_lr_positive(given["lr"])
            hyper = opt._check_hyper({**defaults, **given})
        except GpunetError as e:
            raise type(e)(f"{e} (in param_groups[{k}])") from None
        groups.append(ParamGroup(opt, {"params": ps, **hyper}))
    check_params(owner, [p for g in groups for p in g["params"]])  # non-empty, each Parameter once
    return groups
