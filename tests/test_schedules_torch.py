"""Schedules against torch.optim.lr_scheduler: every group's lr (and OneCycle's momentum)
at every step, in float64 to 1e-12, over hundreds of steps; ReduceLROnPlateau through
the Trainer and a checkpoint."""
import math

import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import CheckpointError, GpunetTypeError, GpunetValueError
from gpunet.nn.module import Parameter
from gpunet.optim import schedules as S

try:
    import torch
except ImportError:  # the comparisons skip, with this reason; the other tests still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the comparison with "
                                                       "PyTorch needs torch (the CPU build is enough)")

LRS = (0.1, 0.03)  # two parameter groups with their own lrs


def _opts(name="SGD", **kw):
    kw = {"lr": LRS[0], **kw}
    gp = [Parameter(np.zeros(2), "a"), Parameter(np.zeros(3), "b")]
    tp = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    g = getattr(gn.optim, name)([{"params": [gp[0]], "lr": LRS[0]}, {"params": [gp[1]], "lr": LRS[1]}], **kw)
    t = getattr(torch.optim, name)([{"params": [tp[0]], "lr": LRS[0]}, {"params": [tp[1]], "lr": LRS[1]}], **kw)
    return g, t


def _sequences(schedule, tsched_fn, steps, name="SGD", key="lr", **kw):
    g, t = _opts(name, **kw)
    gs = gn.optim.Scheduler(g, schedule, unit="step")
    ts = tsched_fn(t)
    got, want = [], []
    for _ in range(steps + 1):
        got.append([float(grp[key][0] if key == "betas" else grp[key]) for grp in g.param_groups])
        want.append([float(grp[key][0] if key == "betas" else grp[key]) for grp in t.param_groups])
        t.step()  # no grads: a no-op that keeps PyTorch from warning about the call order
        if len(got) <= steps:
            gs.step()
            ts.step()
    return np.array(got), np.array(want)


def _assert_seq(got, want, rtol=1e-12):
    err = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= rtol, f"worst relative error {err.max():.3g} at step {worst[0]}, group {worst[1]}: " \
                              f"{got[worst]!r} vs {want[worst]!r}"


LR = torch.optim.lr_scheduler if torch is not None else None
CASES = {
    "multistep": (S.MultiStep([30, 80, 80, 150], gamma=0.5), lambda o: LR.MultiStepLR(o, [30, 80, 80, 150], 0.5), 300),
    "polynomial": (S.Polynomial(250, power=2.0), lambda o: LR.PolynomialLR(o, total_iters=250, power=2.0), 300),
    "polynomial-linear": (S.Polynomial(100), lambda o: LR.PolynomialLR(o, total_iters=100), 150),
    "restarts": (S.CosineWarmRestarts(7), lambda o: LR.CosineAnnealingWarmRestarts(o, 7), 300),
    "restarts-mult": (S.CosineWarmRestarts(5, T_mult=2, eta_min=1e-3),
                      lambda o: LR.CosineAnnealingWarmRestarts(o, 5, T_mult=2, eta_min=1e-3), 400),
    "onecycle": (S.OneCycle(500), lambda o: LR.OneCycleLR(o, max_lr=list(LRS), total_steps=500), 500),
    "onecycle-linear-3phase": (S.OneCycle(400, max_lr=0.2, anneal_strategy="linear", three_phase=True,
                                          div_factor=10.0, final_div_factor=100.0, pct_start=0.25),
                               lambda o: LR.OneCycleLR(o, max_lr=0.2, total_steps=400, anneal_strategy="linear",
                                                       three_phase=True, div_factor=10.0, final_div_factor=100.0,
                                                       pct_start=0.25), 400),
}


@needs_torch
@pytest.mark.parametrize("case", list(CASES))
def test_lr_sequence_matches_torch(case):
    schedule, tsched, steps = CASES[case]
    kw = {"momentum": 0.9} if case.startswith("onecycle") else {}
    got, want = _sequences(schedule, tsched, steps, **kw)
    _assert_seq(got, want)
    if case.startswith("onecycle"):  # and the momentum cycle
        got, want = _sequences(schedule, tsched, steps, key="momentum", **kw)
        _assert_seq(got, want)


@needs_torch
def test_onecycle_cycles_adam_beta1_like_torch():
    sched = S.OneCycle(200, pct_start=0.4)
    got, want = _sequences(sched, lambda o: LR.OneCycleLR(o, max_lr=list(LRS), total_steps=200, pct_start=0.4),
                           200, name="Adam", key="betas")
    _assert_seq(got, want)
    assert got.min() == pytest.approx(0.85) and got.max() == pytest.approx(0.95)


def test_onecycle_checks():
    with pytest.raises(GpunetValueError, match="t expected at most total_steps=10, got 11"):
        S.OneCycle(10).lr_at(11, 0.1)
    with pytest.raises(GpunetValueError, match="leaves an empty phase"):
        S.OneCycle(3, pct_start=0.2)
    with pytest.raises(GpunetValueError, match="cycles momentum, so the optimizer expected a momentum or betas"):
        gn.optim.Scheduler(gn.optim.Adagrad([Parameter(np.zeros(2), "a")]), S.OneCycle(10))
    with pytest.raises(GpunetValueError, match="only the Scheduler applies"):
        S.Chain(S.LinearScaling(2), S.OneCycle(10))
    S.Chain(S.LinearScaling(2), S.OneCycle(10, cycle_momentum=False))  # fine without the momentum cycle
    with pytest.raises(GpunetValueError, match="anneal_strategy"):
        S.OneCycle(10, anneal_strategy="cosine")


def test_new_schedules_by_name_and_config_round_trip():
    for s in (S.MultiStep([2, 5]), S.Polynomial(10, 0.5), S.CosineWarmRestarts(3, 2, 0.01), S.OneCycle(50)):
        again = S.from_config(s.config())
        assert type(again) is type(s) and again.config() == s.config()
        assert [again.lr_at(t, 0.1) for t in range(10)] == [s.lr_at(t, 0.1) for t in range(10)]
    for make, match in [(lambda: S.MultiStep([]), "at least one"), (lambda: S.MultiStep([0, 3]), "milestones"),
                        (lambda: S.MultiStep(5), "list of ints"), (lambda: S.Polynomial(10, power=0), "power"),
                        (lambda: S.CosineWarmRestarts(0), "T_0"), (lambda: S.CosineWarmRestarts(5, T_mult=0), "T_mult")]:
        with pytest.raises((GpunetValueError, GpunetTypeError), match=match):
            make()


# ---------------------------------------------------------------- ReduceLROnPlateau

def _metrics(n=80, seed=0):
    """A loss that improves, plateaus, improves a little, and jitters: every branch runs."""
    r = np.random.default_rng(seed)
    base = np.concatenate([np.linspace(1.0, 0.5, 15), np.full(20, 0.5), np.linspace(0.5, 0.49995, 10),
                           np.full(n - 45, 0.45)])
    return list(base + r.choice([0.0, 0.0, 1e-3], size=n))


@pytest.mark.parametrize("kw", [
    {},
    {"patience": 2, "cooldown": 3, "factor": 0.5, "min_lr": 0.004},
    {"patience": 1, "threshold": 1e-3, "threshold_mode": "abs", "min_lr": [0.0, 0.01], "eps": 1e-3},
    {"mode": "max", "patience": 3, "threshold": 0.01},
])
@needs_torch
def test_reduce_on_plateau_matches_torch(kw):
    g, t = _opts()
    gs = gn.optim.ReduceLROnPlateau(g, **kw)
    ts = LR.ReduceLROnPlateau(t, **kw)
    values = _metrics() if kw.get("mode") != "max" else [1.0 - v for v in _metrics(seed=1)]  # rising, then flat
    got, want = [], []
    for v in values:
        gs.step(v)
        ts.step(v)
        got.append([grp["lr"] for grp in g.param_groups])
        want.append([grp["lr"] for grp in t.param_groups])
    _assert_seq(np.array(got), np.array(want))
    assert np.array(got)[-1, 0] < LRS[0]  # it did reduce


def _tiny_run(tmp_path, epochs, resume=False):
    data = gn.data.load("digits")
    train, val = gn.data.Dataset(data.x[:96], data.y[:96], data.classes), gn.data.Dataset(data.x[96:160], data.y[96:160], data.classes)
    gn.manual_seed(0)
    model = gn.models.mlp([64, 16, 10]).to(dtype="float64")
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = gn.optim.SGD([{"params": decay, "weight_decay": 1e-3}, {"params": no_decay, "lr": 0.05}],
                       lr=0.5, momentum=0.9)
    plateau = gn.optim.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.5)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", schedule=plateau, doctor=False)
    if resume:
        trainer.resume(tmp_path / "ckpt.npz")
    trainer.fit(train, epochs=epochs, batch_size=32, val=val)
    return trainer, model, opt


def test_plateau_in_trainer_uses_val_loss_and_resumes_exactly(tmp_path):
    trainer, model, opt = _tiny_run(tmp_path, epochs=4)
    lrs = [[g["lr"] for g in opt.param_groups]]
    # threshold 0.5 (relative): only a halving of val_loss counts as better, so the lr falls
    assert opt.lr < 0.5 and opt.param_groups[1]["lr"] / opt.lr == pytest.approx(0.1)
    assert trainer.history.lr[0] == 0.5 and trainer.history.lr[-1] < 0.5
    full = {k: v.copy() for k, v in model.state_dict().items()}
    # 2 epochs, checkpoint, then 2 more in a fresh process-like setup: same weights and lrs
    t2, _, _ = _tiny_run(tmp_path, epochs=2)
    t2.save(tmp_path / "ckpt.npz")
    t3, model3, opt3 = _tiny_run(tmp_path, epochs=4, resume=True)
    assert [[g["lr"] for g in opt3.param_groups]] == lrs
    assert t3.scheduler.state_dict() == trainer.scheduler.state_dict()
    for k, v in model3.state_dict().items():
        np.testing.assert_array_equal(v, full[k])


def test_plateau_needs_its_metric_and_checks_arguments():
    data = gn.data.load("digits")
    train = gn.data.Dataset(data.x[:32], data.y[:32], data.classes)
    model = gn.models.mlp([64, 10])
    opt = gn.optim.SGD(model.parameters(), lr=0.1)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu",
                         schedule=gn.optim.ReduceLROnPlateau(opt), doctor=False)
    with pytest.raises(GpunetValueError, match="monitor 'val_loss' is not in the epoch logs"):
        trainer.fit(train, epochs=1, batch_size=32)
    for kw, match in [({"factor": 1.0}, "factor"), ({"patience": -1}, "patience"), ({"mode": "up"}, "mode"),
                      ({"min_lr": [0.1, 0.2]}, "one per parameter group"), ({"monitor": ""}, "monitor")]:
        with pytest.raises((GpunetValueError, GpunetTypeError), match=match):
            gn.optim.ReduceLROnPlateau(opt, **kw)
    p = gn.optim.ReduceLROnPlateau(opt)
    with pytest.raises(GpunetTypeError, match="metric expected a number"):
        p.step("0.5")
    with pytest.raises(CheckpointError, match="config"):
        p.load_state_dict(dict(p.state_dict(), config={}))
    assert math.isinf(p.best) and p.num_bad_epochs == 0  # unchanged
