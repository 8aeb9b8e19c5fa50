"""Parameter groups: construction and its errors, validated writes, opt.lr across groups,
state dicts and checkpoints (exact resume), schedules per group, data-parallel replicas."""
import copy

import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import CheckpointError, GpunetTypeError, GpunetValueError
from gpunet.nn.module import Parameter
from gpunet.optim import SGD, Adam, NAdam, get


def _params(seed=0, dev=None):
    r = np.random.default_rng(seed)
    arrs = [r.standard_normal((3, 2)), r.standard_normal(3), r.standard_normal(4)]
    return [Parameter(dev.asarray(a) if dev else a, f"p{k}") for k, a in enumerate(arrs)]


def _grads(t):
    r = np.random.default_rng(50 + t)
    return [r.standard_normal(s) for s in ((3, 2), (3,), (4,))]


def _run(opt, params, start, steps):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(t)):
            p.grad[...] = p.data.dtype.type(1) * g
        opt.step()


def test_groups_take_their_own_values_and_defaults():
    ps = _params()
    opt = SGD([{"params": ps[:2]}, {"params": [ps[2]], "weight_decay": 0.0, "lr": 0.01}],
              lr=0.1, momentum=0.9, weight_decay=5e-4)
    a, b = opt.param_groups
    assert (a["lr"], a["weight_decay"], a["momentum"]) == (0.1, 5e-4, 0.9)
    assert (b["lr"], b["weight_decay"], b["momentum"]) == (0.01, 0.0, 0.9)
    assert opt.params == ps and opt.momentum == 0.9 and opt.lr == 0.1
    # one step: group b has no decay and a tenth of the lr
    for p in ps:
        p.grad[...] = 1.0
    before = [p.data.copy() for p in ps]
    opt.step()
    np.testing.assert_allclose(ps[0].data, before[0] - 0.1 * (1.0 + 5e-4 * before[0]), rtol=1e-15)
    np.testing.assert_allclose(ps[2].data, before[2] - 0.01, rtol=1e-15)
    assert "groups=2" in repr(opt)


@pytest.mark.parametrize("groups,err,match", [
    (lambda ps: [{"params": []}], GpunetValueError, "non-empty"),
    (lambda ps: [{"lr": 0.1}], GpunetValueError, r"param_groups\[0\] expected a 'params' key"),
    (lambda ps: [{"params": ps, "weight_decy": 0}], GpunetValueError, r"got keys \['params', 'weight_decy'\]"),
    (lambda ps: [{"params": [np.zeros(2)]}], GpunetTypeError,
     r"param_groups\[0\]\['params'\]\[0\] expected a gn.nn.Parameter"),
    (lambda ps: [{"params": 3}], GpunetTypeError, r"param_groups\[0\]\['params'\] expected a list"),
    (lambda ps: [{"params": ps[:1]}, {"params": ps[:1]}], GpunetValueError, "distinct"),
    (lambda ps: [{"params": ps[:1]}, {"params": ps[1:], "momentum": 1.0}], GpunetValueError,
     r"momentum expected a number in \[0.0, 1.0\), got 1.0 \(in param_groups\[1\]\)"),
    (lambda ps: [{"params": ps, "lr": 0.0}], GpunetValueError,
     r"lr expected a number in \(0.0, inf\), got 0.0 \(in param_groups\[0\]\)"),
    (lambda ps: [{"params": ps, "nesterov": True, "momentum": 0.0}], GpunetValueError,
     "nesterov=True expected momentum > 0"),
    (lambda ps: [{"params": ps[:1]}, ps[1]], GpunetTypeError, "either Parameters or parameter-group dicts"),
    (lambda ps: {"params": ps}, GpunetTypeError, "got a single dict"),
])
def test_bad_groups_are_refused(groups, err, match):
    with pytest.raises(err, match=match):
        SGD(groups(_params()), lr=0.1)


def test_group_writes_are_validated_and_take_effect():
    ps = _params()
    opt = SGD([{"params": ps[:2]}, {"params": [ps[2]]}], lr=0.1, momentum=0.9)
    g = opt.param_groups[1]
    with pytest.raises(GpunetValueError, match="momentum expected a number in"):
        g["momentum"] = 1.5
    with pytest.raises(GpunetValueError, match="parameter group key expected one of"):
        g["weight_decy"] = 0.0
    with pytest.raises(GpunetValueError, match="'params' are fixed at construction"):
        g["params"] = ps
    with pytest.raises(GpunetValueError, match="lr expected"):
        g.update(lr=-1.0)
    assert g["momentum"] == 0.9 and g["lr"] == 0.1
    g["momentum"] = 0.0
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.momentum == 0.9
    _run(opt, ps, 0, 1)
    assert "momentum_buffer" in opt.state[0] and "momentum_buffer" not in opt.state[2]
    # an attribute write sets every group, all checked first
    with pytest.raises(GpunetValueError, match="weight_decay"):
        opt.weight_decay = -1.0
    opt.weight_decay = 1e-3
    assert [grp["weight_decay"] for grp in opt.param_groups] == [1e-3, 1e-3]


def test_lr_setter_keeps_group_ratios_through_zero():
    ps = _params()
    opt = Adam([{"params": ps[:1]}, {"params": ps[1:2], "lr": 0.01}, {"params": ps[2:]}], lr=0.1)
    opt.lr = 0.2
    assert [g["lr"] for g in opt.param_groups] == [0.2, pytest.approx(0.02, rel=1e-15), 0.2]
    opt.lr = 0.0  # warmup start or a cosine end
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.0]
    opt.lr = 0.4
    assert [g["lr"] for g in opt.param_groups] == [0.4, pytest.approx(0.04, rel=1e-15), 0.4]
    with pytest.raises(GpunetValueError, match="lr"):
        opt.lr = -1.0
    assert opt.lr == 0.4


def test_scheduler_scales_each_group_from_its_own_base():
    ps = _params()
    opt = SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], lr=0.1)
    sched = gn.optim.Scheduler(opt, gn.optim.MultiStep([2], gamma=0.5))
    sched.step(), sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005] and sched.lr == 0.05
    sd = sched.state_dict()
    assert sd["base_lrs"] == [0.1, 0.01]
    other = gn.optim.Scheduler(SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], lr=0.1),
                               gn.optim.MultiStep([2], gamma=0.5))
    other.load_state_dict(sd)
    assert [g["lr"] for g in other.optimizer.param_groups] == [0.05, 0.005]
    with pytest.raises(CheckpointError, match="base_lrs: expected 1"):
        gn.optim.Scheduler(SGD(ps, lr=0.1), gn.optim.MultiStep([2], gamma=0.5)).load_state_dict(sd)
    old = {k: v for k, v in sd.items() if k != "base_lrs"}  # an older state dict: base_lr only
    single = gn.optim.Scheduler(SGD(ps, lr=0.3), gn.optim.MultiStep([2], gamma=0.5))
    single.load_state_dict(old)
    assert single.lr == 0.05


MAKERS = [
    lambda ps: SGD([{"params": ps[:2], "weight_decay": 1e-2}, {"params": ps[2:], "momentum": 0.5}],
                   lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: Adam([{"params": ps[:1], "amsgrad": True}, {"params": ps[1:], "lr": 0.003}], lr=0.01),
    lambda ps: NAdam([{"params": ps[:2]}, {"params": ps[2:], "momentum_decay": 0.01}], lr=0.01),
    lambda ps: get("radam", [{"params": ps[:2], "decoupled_weight_decay": True, "weight_decay": 0.1},
                             {"params": ps[2:]}]),
    lambda ps: get("adagrad", [{"params": ps[:1]}, {"params": ps[1:], "initial_accumulator_value": 0.2}]),
]


@pytest.mark.parametrize("make", MAKERS, ids=["sgd", "adam", "nadam", "radam", "adagrad"])
def test_groups_round_trip_through_a_checkpoint_bit_exactly(dev, tmp_path, make):
    model = gn.nn.Sequential(gn.nn.Linear(2, 3))  # only a carrier for save/load_checkpoint
    ps = _params(dev=dev)
    opt = make(ps)
    _run(opt, ps, 0, 4)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["groups"]] == [list(range(len(g["params"]))) if k == 0 else
                                                   list(range(len(opt.param_groups[0]["params"]), 3))
                                                   for k, g in enumerate(opt.param_groups)]
    gn.save_checkpoint(tmp_path / "c.npz", model, opt)
    qs = _params(seed=1, dev=dev)
    for p, q in zip(ps, qs):
        q.data[...] = p.data
    fresh = make(qs)
    for g in fresh.param_groups:
        g["lr"] = 0.5  # different: the checkpoint restores each group's own
    gn.load_checkpoint(tmp_path / "c.npz", model, fresh)
    assert [g.hyper() for g in fresh.param_groups] == [g.hyper() for g in opt.param_groups]
    _run(opt, ps, 4, 5)
    _run(fresh, qs, 4, 5)
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(gn.backend.to_numpy(p.data), gn.backend.to_numpy(q.data))


def test_mismatched_groups_refused_and_nothing_changes():
    ps = _params()
    opt = SGD([{"params": ps[:2]}, {"params": ps[2:], "momentum": 0.0}], lr=0.1, momentum=0.9)
    _run(opt, ps, 0, 1)
    good = opt.state_dict()
    before = (repr(good["groups"]), {k: v.copy() for k, v in good["buffers"].items()})
    bad = {
        "groups: expected 2 parameter groups, got 1": dict(good, groups=good["groups"][:1]),
        r"groups\[1\] params: expected indices \[2\]": dict(good, groups=[good["groups"][0],
                                                                         dict(good["groups"][1], params=[1])]),
        r"groups\[1\] hyper: SGD: momentum expected": dict(good, groups=[good["groups"][0],
                                                                         dict(good["groups"][1], momentum=2.0)]),
        r"unexpected buffers \['2.momentum_buffer'\]": dict(good, buffers=dict(good["buffers"], **{
            "2.momentum_buffer": np.zeros(4)})),
        "groups: expected 2 parameter groups, got a state dict without groups":
            {k: v for k, v in good.items() if k != "groups"},
    }
    for match, d in bad.items():
        with pytest.raises(CheckpointError, match=match):
            opt.load_state_dict(d)
        after = opt.state_dict()
        assert repr(after["groups"]) == before[0]
        for k, v in before[1].items():
            np.testing.assert_array_equal(after["buffers"][k], v)


def test_older_state_dict_without_groups_or_amsgrad_loads():
    ps = _params()
    opt = Adam(ps, lr=0.01)
    _run(opt, ps, 0, 2)
    sd = opt.state_dict()
    old = {k: v for k, v in sd.items() if k != "groups"}
    old["hyper"] = {k: v for k, v in sd["hyper"].items() if k != "amsgrad"}  # written before amsgrad existed
    fresh = Adam(_params(), lr=0.5)
    fresh.load_state_dict(old)
    assert fresh.lr == 0.01 and fresh.amsgrad is False and fresh.step_count == 2


def test_deepcopy_keeps_groups_checked_and_nadam_resumes_exactly():
    ps = _params()
    opt = NAdam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.001}], lr=0.01)
    _run(opt, ps, 0, 3)
    twin_ps, twin = copy.deepcopy((ps, opt))
    assert twin.param_groups[0]["params"][0] is twin_ps[0] and twin.params[0] is twin_ps[0]
    with pytest.raises(GpunetValueError, match="lr expected"):
        twin.param_groups[1]["lr"] = -1.0
    _run(opt, ps, 3, 4)
    _run(twin, twin_ps, 3, 4)  # the running μ product is rebuilt from the step count: same values
    for p, q in zip(ps, twin_ps):
        np.testing.assert_array_equal(p.data, q.data)


def test_data_parallel_replicas_follow_every_group_lr():
    data = gn.data.load("digits")
    train = gn.data.Dataset(data.x[:64], data.y[:64], data.classes)
    gn.manual_seed(0)
    model = gn.models.mlp([64, 8, 10])
    named = model.named_parameters()
    opt = SGD([{"params": [p for n, p in named if n.endswith("weight")]},
               {"params": [p for n, p in named if n.endswith("bias")], "lr": 0.01, "weight_decay": 0.0}],
              lr=0.1, momentum=0.9, weight_decay=1e-3)
    sched = gn.optim.Scheduler(opt, gn.optim.CosineWarmRestarts(3, eta_min=0.001), unit="step")
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, devices=["cpu", "cpu"],
                         schedule=sched, doctor=False)
    trainer.fit(train, epochs=2, batch_size=16)
    # eta_min is absolute, so the groups' lrs are not proportional: replicas must copy each one
    assert opt.param_groups[1]["lr"] / opt.lr != pytest.approx(0.1)
    trainer.engine.check_replicas()


def test_data_parallel_replicas_follow_onecycle_momentum():
    data = gn.data.load("digits")
    train = gn.data.Dataset(data.x[:64], data.y[:64], data.classes)
    gn.manual_seed(0)
    model = gn.models.mlp([64, 8, 10])
    opt = Adam(model.parameters(), lr=0.01)
    sched = gn.optim.Scheduler(opt, gn.optim.OneCycle(8), unit="step")
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, devices=["cpu", "cpu"],
                         schedule=sched, doctor=False)
    trainer.fit(train, epochs=1, batch_size=16)  # 4 of 8 steps: β₁ is mid-cycle
    assert 0.85 < opt.betas[0] < 0.95
    trainer.engine.check_replicas()
