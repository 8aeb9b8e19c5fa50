"""Optimizers against PyTorch in float64: 60 steps on the same parameters and gradients,
with and without parameter groups; groups through state dicts and checkpoints."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import GpunetTypeError, GpunetValueError
from gpunet.nn.module import Parameter

try:
    import torch
except ImportError:  # the comparisons skip, with this reason; the other tests still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the comparison with "
                                                       "PyTorch needs torch (the CPU build is enough)")

SHAPES = [(4, 3), (3,), (2, 2, 2)]
STEPS = 60
RTOL = 1e-10


@pytest.fixture(autouse=True)
def _torch_float64():
    """PyTorch keeps scalar optimizer state (steps, NAdam's μ product) in the default dtype."""
    if torch is None:
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _weights(seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s) for s in SHAPES]


def _grads(t, weights):
    """Gradients that depend on the weights and shrink over time (so amsgrad's max matters)."""
    r = np.random.default_rng(100 + t)
    return [0.3 * w + r.standard_normal(w.shape) * (2.0 if t < 10 else 0.2) for w in weights]


def _pair(seed=0):
    ws = _weights(seed)
    return ([Parameter(w.copy(), f"p{k}") for k, w in enumerate(ws)],
            [torch.tensor(w.copy(), requires_grad=True) for w in ws])


def _groups(params, group_kw):
    """Group k holds params[k::len(group_kw)] with hyperparameters group_kw[k]."""
    n = len(group_kw)
    return [{"params": params[k::n], **kw} for k, kw in enumerate(group_kw)]


def _run(gopt, gparams, topt, tparams, steps=STEPS, start=0):
    for t in range(start, start + steps):
        grads = _grads(t, [p.data for p in gparams])
        for p, q, g in zip(gparams, tparams, grads):
            p.grad[...] = g
            q.grad = torch.tensor(g)
        gopt.step()
        topt.step()


def _assert_close(gparams, tparams, rtol=RTOL):
    for p, q in zip(gparams, tparams):
        want = q.detach().numpy()
        err = np.max(np.abs(p.data - want) / np.maximum(np.abs(want), 1e-300))
        at = np.unravel_index(np.argmax(np.abs(p.data - want)), want.shape)
        assert err <= rtol, f"{p.name}: worst relative error {err:.3g} at {at}"


CASES = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 1e-2, "initial_accumulator_value": 0.1, "eps": 1e-8}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 1e-2}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 1e-2}),
    ("AdamW", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("NAdam", {}),
    ("NAdam", {"lr": 0.01, "weight_decay": 1e-2, "momentum_decay": 1e-2, "betas": (0.8, 0.99)}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {}),  # ρ_t > 5 from step 6: both branches run
    ("RAdam", {"lr": 0.01, "weight_decay": 1e-2, "betas": (0.9, 0.9)}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
]


@needs_torch
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_over_60_steps(name, kw):
    gparams, tparams = _pair()
    gopt = getattr(gn.optim, name)(gparams, **kw)
    topt = getattr(torch.optim, name)(tparams, **kw)
    _run(gopt, gparams, topt, tparams)
    _assert_close(gparams, tparams)


GROUP_CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
     [{}, {"weight_decay": 0.0, "lr": 0.02}, {"momentum": 0.5, "nesterov": True}]),
    ("SGD", {"lr": 0.05, "weight_decay": 5e-3}, [{}, {"weight_decay": 0.0, "momentum": 0.9}]),
    ("Adam", {"lr": 0.01, "weight_decay": 1e-2}, [{"amsgrad": True}, {"weight_decay": 0.0, "betas": (0.8, 0.9)}]),
    ("AdamW", {"lr": 0.01}, [{}, {"weight_decay": 0.0, "lr": 0.003}]),
    ("NAdam", {"lr": 0.01}, [{"momentum_decay": 1e-2}, {"weight_decay": 0.1, "decoupled_weight_decay": True}]),
    ("RAdam", {"lr": 0.01}, [{}, {"weight_decay": 0.1, "eps": 1e-6}]),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5}, [{"lr_decay": 0.01}, {"weight_decay": 1e-2}]),
    ("RMSprop", {"lr": 0.01}, [{"centered": True}, {"momentum": 0.9, "alpha": 0.9}]),
]


@needs_torch
@pytest.mark.parametrize("name,kw,group_kw", GROUP_CASES, ids=[c[0] + str(i) for i, c in enumerate(GROUP_CASES)])
def test_param_groups_match_torch(name, kw, group_kw):
    gparams, tparams = _pair()
    gopt = getattr(gn.optim, name)(_groups(gparams, group_kw), **kw)
    topt = getattr(torch.optim, name)(_groups(tparams, group_kw), **kw)
    assert [len(g["params"]) for g in gopt.param_groups] == [len(g["params"]) for g in topt.param_groups]
    _run(gopt, gparams, topt, tparams)
    _assert_close(gparams, tparams)


@needs_torch
def test_sgd_dampening_first_step_differs_from_torch_on_purpose():
    """gpunet's velocity starts at 0, so dampening scales the first step too; PyTorch sets v₁ = g.
    velocity_init="grad" gives PyTorch's sequence exactly."""
    kw = {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}
    gparams, tparams = _pair()
    gopt, topt = gn.optim.SGD(gparams, **kw), torch.optim.SGD(tparams, **kw)
    w0 = gparams[0].data.copy()
    _run(gopt, gparams, topt, tparams, steps=1)
    g1 = _grads(0, [w0])[0]
    np.testing.assert_allclose(gparams[0].data, w0 - 0.05 * 0.5 * g1, rtol=1e-14)   # v₁ = (1 − d)·g
    np.testing.assert_allclose(tparams[0].detach().numpy(), w0 - 0.05 * g1, rtol=1e-14)  # v₁ = g
    gparams, tparams = _pair()
    gopt = gn.optim.SGD(gparams, velocity_init="grad", **kw)
    topt = torch.optim.SGD(tparams, **kw)
    _run(gopt, gparams, topt, tparams)
    _assert_close(gparams, tparams)


@needs_torch
def test_adagrad_group_initial_accumulator_is_honoured_unlike_torch():
    """PyTorch fills every group's accumulator with the constructor's initial_accumulator_value
    and ignores a group's own; gpunet uses the group's, as for every other hyperparameter."""
    group = {"initial_accumulator_value": 0.5, "lr_decay": 0.01}
    gparams, tparams = _pair()
    gopt = gn.optim.Adagrad([{"params": gparams, **group}], lr=0.1)
    topt = torch.optim.Adagrad(tparams, lr=0.1, **group)  # the constructor's value: honoured by PyTorch
    _run(gopt, gparams, topt, tparams)
    _assert_close(gparams, tparams)
    gparams, tparams = _pair()
    gopt = gn.optim.Adagrad([{"params": gparams, **group}], lr=0.1)
    topt = torch.optim.Adagrad([{"params": tparams, **group}], lr=0.1)  # PyTorch starts from 0 here
    _run(gopt, gparams, topt, tparams, steps=1)
    assert not np.allclose(gparams[0].data, tparams[0].detach().numpy(), rtol=1e-3)


@needs_torch
def test_clip_grad_norm_and_value_match_torch():
    for norm_type in (2.0, 1.0, 3.0, float("inf"), "inf"):
        gparams, tparams = _pair()
        grads = _grads(0, [p.data for p in gparams])
        for p, q, g in zip(gparams, tparams, grads):
            p.grad[...] = g
            q.grad = torch.tensor(g)
        got = gn.optim.clip_grad_norm(gparams, max_norm=0.5, norm_type=norm_type)
        want = torch.nn.utils.clip_grad_norm_(tparams, max_norm=0.5, norm_type=norm_type)
        assert float(got) == pytest.approx(float(want), rel=1e-12)
        for p, q in zip(gparams, tparams):
            np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)
    gn.optim.clip_grad_value(gparams, 0.05)
    torch.nn.utils.clip_grad_value_(tparams, 0.05)
    for p, q in zip(gparams, tparams):
        np.testing.assert_array_equal(p.grad, q.grad.numpy())


def test_clip_grad_norm_nonfinite():
    gparams = [Parameter(w, f"p{k}") for k, w in enumerate(_weights())]
    for p in gparams:
        p.grad[...] = 1.0
    gparams[1].grad[0] = np.inf
    before = [p.grad.copy() for p in gparams]
    with pytest.raises(gn.errors.NonFiniteError, match="expected finite gradients, got total 2.0-norm inf"):
        gn.optim.clip_grad_norm(gparams, 1.0, error_if_nonfinite=True)
    for p, b in zip(gparams, before):
        np.testing.assert_array_equal(p.grad, b)  # left unchanged
    with np.errstate(invalid="ignore"):
        norm = gn.optim.clip_grad_norm_(gparams, 1.0)  # PyTorch's default: no error, scaled by 1/inf
    assert np.isinf(float(norm))
    for bad, match in [({"norm_type": 0}, "norm_type expected a number > 0"), ({"norm_type": "two"}, "norm_type"),
                       ({"error_if_nonfinite": 1}, "error_if_nonfinite expected a bool")]:
        with pytest.raises((GpunetValueError, GpunetTypeError), match=match):
            gn.optim.clip_grad_norm(gparams, 1.0, **bad)
    with pytest.raises(GpunetValueError, match="clip_value expected a number in"):
        gn.optim.clip_grad_value(gparams, 0.0)
