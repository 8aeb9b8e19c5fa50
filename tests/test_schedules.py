"""Learning-rate schedules: values at chosen steps worked out by hand, composition,
warmup with the linear scaling rule, and the Scheduler's state round trip."""
import json
import math

import numpy as np
import pytest

from gpunet.errors import CheckpointError, GpunetTypeError, GpunetValueError
from gpunet.nn.module import Parameter
from gpunet.optim import SGD
from gpunet.optim import schedules as S


def lrs(schedule, ts, base=1.0):
    return [schedule.lr_at(t, base) for t in ts]


def approx(values):
    return pytest.approx(values, rel=1e-12, abs=1e-15)


def test_constant_step_exponential():
    assert lrs(S.Constant(), [0, 5, 100], 0.1) == [0.1, 0.1, 0.1]
    assert lrs(S.StepLR(3, gamma=0.5), [0, 2, 3, 5, 6, 9]) == approx([1, 1, 0.5, 0.5, 0.25, 0.125])
    assert lrs(S.Exponential(0.9), [0, 1, 2, 10], 2.0) == approx([2.0, 1.8, 1.62, 2 * 0.9 ** 10])
    assert S.StepLR(10).factor(25) == approx(0.01)


def test_cosine():
    c = S.Cosine(total=10)
    assert lrs(c, [0, 5, 10, 20], 0.1) == approx([0.1, 0.05, 0.0, 0.0])  # held at the end
    assert c.lr_at(2, 1.0) == approx((1 + math.cos(math.pi * 0.2)) / 2)
    c = S.Cosine(total=4, eta_min=0.01)  # eta_min is an absolute lr
    assert lrs(c, [0, 2, 4], 0.11) == approx([0.11, 0.06, 0.01])


def test_linear_warmup_then_shifted_schedule():
    w = S.LinearWarmup(4)
    assert lrs(w, [0, 1, 2, 4, 50], 0.2) == approx([0.0, 0.05, 0.1, 0.2, 0.2])
    w = S.LinearWarmup(4, start_factor=0.5, after=S.StepLR(2, gamma=0.1))
    # ramp 0.5 → 1 over 4 counts, then StepLR counted from the end of the warmup
    assert lrs(w, [0, 2, 4, 5, 6, 8]) == approx([0.5, 0.75, 1.0, 1.0, 0.1, 0.01])
    assert S.LinearWarmup(0, after=S.Exponential(0.5)).lr_at(1, 1.0) == approx(0.5)


def test_chain_composes_in_order():
    chain = S.Chain(S.StepLR(2, gamma=0.5), S.Exponential(0.9))
    assert lrs(chain, [0, 1, 2, 3]) == approx([1.0, 0.9, 0.5 * 0.81, 0.5 * 0.729])  # product of factors
    # Cosine anneals whatever lr reaches it: after ×4 it runs from 4·base to eta_min.
    chain = S.Compose(S.LinearScaling(4), S.Cosine(total=2))
    assert lrs(chain, [0, 1, 2], 0.1) == approx([0.4, 0.2, 0.0])


def test_linear_scaling_with_warmup_goyal():
    assert S.linear_scaling(0.1, 8) == approx(0.8)
    assert S.LinearScaling(8).lr_at(3, 0.1) == approx(0.8)
    s = S.linear_scaling_warmup(8, warmup=5, after=S.StepLR(30, gamma=0.1))
    # starts at the single-replica lr, reaches 8× after 5 epochs, then steps every 30
    got = lrs(s, [0, 1, 5, 34, 35, 65], base=0.1)
    ramp = 0.8 * (1 / 8 + (1 - 1 / 8) / 5)
    assert got == approx([0.1, ramp, 0.8, 0.8, 0.08, 0.008])


def test_scheduler_sets_lr_and_round_trips():
    opt = SGD([Parameter(np.zeros(2))], lr=0.1)
    sched = S.Scheduler(opt, S.LinearWarmup(2, after=S.Cosine(4)), unit="step")
    assert sched.lr == 0.0 and opt.lr == 0.0  # t = 0 is applied at construction
    seen = [sched.step() for _ in range(4)]
    assert seen == approx([0.05, 0.1, 0.05 + 0.05 * math.cos(math.pi / 4), 0.05])
    assert opt.lr == sched.lr
    state = json.loads(json.dumps(sched.state_dict()))  # JSON-able

    opt2 = SGD([Parameter(np.zeros(2))], lr=0.1)
    sched2 = S.Scheduler(opt2, S.LinearWarmup(2, after=S.Cosine(4)), unit="step")
    sched2.load_state_dict(state)
    assert (sched2.t, sched2.lr, opt2.lr) == (4, sched.lr, opt.lr)
    assert sched2.step() == sched.step()

    other = S.Scheduler(SGD([Parameter(np.zeros(2))], lr=0.1), S.Cosine(4), unit="step")
    with pytest.raises(CheckpointError, match="schedule: expected"):
        other.load_state_dict(state)
    assert other.t == 0


def test_get_and_from_config():
    assert isinstance(S.get("cosine", total=5), S.Cosine)
    with pytest.raises(GpunetValueError, match=r"expected one of \[.*'cosine'.*'warmup'\], got 'poly'"):
        S.get("poly")
    s = S.linear_scaling_warmup(4, 3, after=S.Cosine(10, eta_min=1e-4))
    again = S.from_config(json.loads(json.dumps(s.config())))
    assert again.config() == s.config()
    assert lrs(again, range(15), 0.1) == lrs(s, range(15), 0.1)


@pytest.mark.parametrize("make,match", [
    (lambda: S.StepLR(0), "step_size"), (lambda: S.StepLR(2.5), "step_size"),
    (lambda: S.Exponential(0.0), "gamma"), (lambda: S.Cosine(0), "total"),
    (lambda: S.Cosine(5, eta_min=-1), "eta_min"), (lambda: S.LinearWarmup(-1), "warmup"),
    (lambda: S.LinearWarmup(3, start_factor=1.5), "start_factor"), (lambda: S.LinearScaling(0), "k"),
    (lambda: S.Chain(), "at least one"), (lambda: S.Constant().lr_at(-1, 0.1), "non-negative int"),
    (lambda: S.Scheduler(SGD([Parameter(np.zeros(1))], lr=0.1), S.Constant(), unit="batch"), "unit"),
])
def test_bad_arguments(make, match):
    with pytest.raises(GpunetValueError, match=match):
        make()


def test_bad_types():
    with pytest.raises(GpunetTypeError, match="after"):
        S.LinearWarmup(3, after="cosine")
    with pytest.raises(GpunetTypeError, match="schedule"):
        S.Scheduler(SGD([Parameter(np.zeros(1))], lr=0.1), 3)
