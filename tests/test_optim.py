"""Optimizers: one or two steps of each checked against values worked out by hand,
state-dict round trips, clip_grad_norm and argument validation."""
import json
import math

import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import CheckpointError, GpunetTypeError, GpunetValueError
from gpunet.nn.module import Parameter
from gpunet.optim import SGD, Adam, AdamW, RMSprop, clip_grad_norm, get

W0 = [1.0, 2.0]
G1 = [0.5, -1.0]
G2 = [0.1, 0.2]


def param(dev, data=W0, grad=G1, dtype=np.float64):
    p = Parameter(dev.asarray(np.array(data), dtype=dtype), "w")
    p.grad[...] = dev.asarray(np.array(grad), dtype=dtype)
    return p


def host(a):
    return gn.backend.to_numpy(a)


def close(a, b, rtol=1e-12):
    np.testing.assert_allclose(host(a), np.array(b, dtype=float), rtol=rtol, atol=1e-15)


# ---------------------------------------------------------------- SGD

def test_sgd_plain_step(dev):
    p = param(dev)
    SGD([p], lr=0.1).step()
    close(p.data, [1.0 - 0.05, 2.0 + 0.1])


def test_sgd_momentum_two_steps_velocity_starts_at_zero(dev):
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    # v1 = 0.9·0 + g1 = [0.5, -1]: the first step is a plain SGD step.
    close(opt.state[0]["momentum_buffer"], [0.5, -1.0])
    close(p.data, [0.95, 2.1])
    p.grad[...] = dev.asarray(np.array(G2))
    opt.step()
    # v2 = 0.9·[0.5, -1] + [0.1, 0.2] = [0.55, -0.7]; w2 = w1 − 0.1·v2
    close(opt.state[0]["momentum_buffer"], [0.55, -0.7])
    close(p.data, [0.95 - 0.055, 2.1 + 0.07])


def test_sgd_nesterov_two_steps(dev):
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()  # v1 = g1; d = g1 + 0.9·v1 = 1.9·g1
    close(p.data, [1.0 - 0.095, 2.0 + 0.19])
    p.grad[...] = dev.asarray(np.array(G2))
    opt.step()  # v2 = [0.55, -0.7]; d = [0.1 + 0.495, 0.2 - 0.63]
    close(p.data, [0.905 - 0.0595, 2.19 + 0.043])


def test_sgd_weight_decay_dampening_and_grad_untouched(dev):
    p = param(dev)
    SGD([p], lr=0.1, weight_decay=0.1).step()  # g' = g + 0.1·w = [0.6, -0.8]
    close(p.data, [0.94, 2.08])
    close(p.grad, G1)  # the decay term never leaks into .grad
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    opt.step()  # zero start: v1 = 0.5·g1
    close(opt.state[0]["momentum_buffer"], [0.25, -0.5])
    close(p.data, [0.975, 2.05])


def test_sgd_velocity_init_hook(dev):
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.9, velocity_init="ones")
    opt.step()  # v1 = 0.9·1 + g1
    close(opt.state[0]["momentum_buffer"], [1.4, -0.1])
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5, velocity_init="grad")
    opt.step()  # PyTorch's first step: v1 = g1, undamped
    close(opt.state[0]["momentum_buffer"], G1)
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.5, velocity_init=lambda q: np.full(q.shape, 2.0))
    opt.step()  # v1 = 0.5·2 + g1
    close(opt.state[0]["momentum_buffer"], [1.5, 0.0])


# ---------------------------------------------------------------- Adam / AdamW

def test_adam_two_steps(dev):
    p = param(dev)
    opt = Adam([p], lr=0.1)
    opt.step()
    # m1 = 0.1·g, v1 = 0.001·g²; m̂ = g, v̂ = g² → step lr·g/(|g| + eps)
    close(opt.state[0]["exp_avg"], [0.05, -0.1])
    close(opt.state[0]["exp_avg_sq"], [0.00025, 0.001])
    close(p.data, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 2.0 + 0.1 * 1.0 / (1.0 + 1e-8)])
    w1 = host(p.data).copy()
    p.grad[...] = dev.asarray(np.array(G2))
    opt.step()
    for k in range(2):
        m = 0.9 * 0.1 * G1[k] + 0.1 * G2[k]
        v = 0.999 * 0.001 * G1[k] ** 2 + 0.001 * G2[k] ** 2
        expected = w1[k] - (0.1 / (1 - 0.9 ** 2)) * m / (math.sqrt(v) / math.sqrt(1 - 0.999 ** 2) + 1e-8)
        assert host(p.data)[k] == pytest.approx(expected, rel=1e-12)


def test_adam_l2_vs_adamw_decoupled(dev):
    p = param(dev)
    Adam([p], lr=0.1, weight_decay=0.1).step()
    # L2: g' = g + 0.1·w = [0.6, -0.8]; the first step is lr·g'/|g'| ≈ ±lr
    close(p.data, [1.0 - 0.1 * 0.6 / (0.6 + 1e-8), 2.0 + 0.1 * 0.8 / (0.8 + 1e-8)])
    close(p.grad, G1)
    q = param(dev)
    AdamW([q], lr=0.1, weight_decay=0.1).step()
    # decoupled: w ← w·(1 − 0.1·0.1) first, then the Adam step on the raw g
    close(q.data, [0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 1.98 + 0.1 * 1.0 / (1.0 + 1e-8)])


# ---------------------------------------------------------------- RMSprop

def test_rmsprop_plain_centered_momentum(dev):
    p = param(dev)
    opt = RMSprop([p], lr=0.01)
    opt.step()  # s = 0.01·g²; a = 0.1·|g| + eps; w −= 0.01·g/a ≈ 0.1·sign(g)
    close(opt.state[0]["square_avg"], [0.0025, 0.01])
    close(p.data, [1.0 - 0.01 * 0.5 / (0.05 + 1e-8), 2.0 + 0.01 * 1.0 / (0.1 + 1e-8)])
    p = param(dev)
    opt = RMSprop([p], lr=0.01, centered=True, momentum=0.5)
    opt.step()  # ḡ = 0.01·g; a = √(0.01g² − 0.0001g²) + eps = √0.0099·|g| + eps; b = g/a
    b1 = [G1[k] / (math.sqrt(0.0099) * abs(G1[k]) + 1e-8) for k in range(2)]
    close(opt.state[0]["grad_avg"], [0.005, -0.01])
    close(opt.state[0]["momentum_buffer"], b1)
    close(p.data, [W0[k] - 0.01 * b1[k] for k in range(2)])
    p.grad[...] = dev.asarray(np.array(G2))
    w1 = host(p.data).copy()
    opt.step()
    for k in range(2):
        s = 0.99 * 0.01 * G1[k] ** 2 + 0.01 * G2[k] ** 2
        gbar = 0.99 * 0.01 * G1[k] + 0.01 * G2[k]
        b2 = 0.5 * b1[k] + G2[k] / (math.sqrt(s - gbar ** 2) + 1e-8)
        assert host(p.data)[k] == pytest.approx(w1[k] - 0.01 * b2, rel=1e-12)


def test_float32_params_keep_float32_state(dev):
    for name, kw in [("sgd", {"lr": 0.1, "momentum": 0.9}), ("adam", {"amsgrad": True}), ("adamw", {}),
                     ("rmsprop", {"centered": True, "momentum": 0.9}), ("nadam", {}), ("radam", {}),
                     ("adagrad", {"initial_accumulator_value": 0.1})]:
        p = param(dev, dtype=np.float32)
        opt = get(name, [p], **kw)
        opt.step()
        assert p.data.dtype == np.float32
        assert all(b.dtype == np.float32 and b.shape == p.shape for b in opt.state[0].values())


# ---------------------------------------------------------------- state dicts

def _run(opt, params, grads):
    for g in grads:
        for p, gp in zip(params, g):
            p.grad[...] = gp
        opt.step()


OPTS = [("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
        ("adam", {"lr": 0.01, "weight_decay": 1e-3}), ("adamw", {"lr": 0.01}),
        ("rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True})]


def _params(dev, seed=0):
    r = np.random.default_rng(seed)
    return [Parameter(dev.asarray(r.standard_normal((3, 2))), "w"), Parameter(dev.asarray(r.standard_normal(3)), "b")]


@pytest.mark.parametrize("name,kw", OPTS)
def test_state_dict_round_trip_bit_exact(dev, name, kw):
    r = np.random.default_rng(1)
    grads = [[dev.asarray(r.standard_normal(s)) for s in ((3, 2), (3,))] for _ in range(5)]
    a_params = _params(dev)
    a = get(name, a_params, **kw)
    _run(a, a_params, grads[:3])
    sd = a.state_dict()
    json.dumps(sd["hyper"]), json.dumps(sd["param_shapes"])
    b_params = _params(dev, seed=9)  # different weights, overwritten below like a model load
    for pa, pb in zip(a_params, b_params):
        pb.data[...] = pa.data
    b = get(name, b_params, lr=0.5)  # different lr: the state dict restores it
    b.load_state_dict(sd)
    assert b.lr == a.lr and b.step_count == 3
    for key, arr in sd["buffers"].items():
        i, buf = key.split(".", 1)
        np.testing.assert_array_equal(host(b.state[int(i)][buf]), host(arr))
    _run(a, a_params, grads[3:])
    _run(b, b_params, grads[3:])
    for pa, pb in zip(a_params, b_params):
        np.testing.assert_array_equal(host(pa.data), host(pb.data))  # bit-exact continuation
    # state_dict holds copies: later steps did not change it
    assert not np.array_equal(host(sd["buffers"][next(iter(sd["buffers"]))]),
                              host(a.state_dict()["buffers"][next(iter(sd["buffers"]))]))


def test_load_mismatched_state_raises_and_changes_nothing(dev):
    params = _params(dev)
    opt = SGD(params, lr=0.1, momentum=0.9)
    _run(opt, params, [[p.data * 0 + 1 for p in params]])
    before = {k: host(v).copy() for k, v in opt.state_dict()["buffers"].items()}
    good = opt.state_dict()
    bad_cases = {
        "expected type 'SGD'": dict(good, type="Adam"),
        "missing buffers": dict(good, buffers={"0.momentum_buffer": good["buffers"]["0.momentum_buffer"]}),
        r"buffer 1.momentum_buffer: expected shape \(3,\), got \(4,\)":
            dict(good, buffers=dict(good["buffers"], **{"1.momentum_buffer": np.zeros(4)})),
        "param_shapes": dict(good, param_shapes=[[3, 2]]),
        "momentum expected": dict(good, hyper=dict(good["hyper"], momentum=1.5), step=7),
        "hyper keys": dict(good, hyper={"lr": 1.0}),
    }
    for msg, bad in bad_cases.items():
        with pytest.raises(CheckpointError, match=msg):
            opt.load_state_dict(bad)
        assert opt.lr == 0.1 and opt.momentum == 0.9 and opt.step_count == 1
        for k, v in before.items():
            i, name = k.split(".", 1)
            np.testing.assert_array_equal(host(opt.state[int(i)][name]), v)


def test_optimizer_follows_parameter_moved_after_step(dev):
    p = param(dev)
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    p.data, p.grad = p.data.astype(np.float32), p.grad.astype(np.float32)  # as model.to(dtype=...) does
    opt.step()
    assert opt.state[0]["momentum_buffer"].dtype == np.float32


# ---------------------------------------------------------------- clipping

def test_clip_grad_norm(dev):
    a, b = param(dev, [0.0, 0.0], [3.0, 4.0]), param(dev, [0.0], [12.0])
    norm = clip_grad_norm([a, b], max_norm=6.5)
    assert norm.shape == () and gn.backend.xp_of(norm) is dev.xp  # stays on the device
    assert float(norm) == pytest.approx(13.0)
    coef = 6.5 / (13.0 + 1e-6)
    close(a.grad, [3 * coef, 4 * coef])
    close(b.grad, [12 * coef])
    clip_grad_norm([a, b], max_norm=100.0)  # below the limit: unchanged
    close(a.grad, [3 * coef, 4 * coef])
    with pytest.raises(GpunetValueError, match="max_norm"):
        clip_grad_norm([a], max_norm=0)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("make,match", [
    (lambda p: SGD(p, lr=0.0), r"lr expected a number in \(0.0"),
    (lambda p: SGD(p, lr=-1), "lr expected"),
    (lambda p: SGD(p, lr=0.1, momentum=1.0), r"momentum expected a number in \[0.0, 1.0\)"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.1), "momentum"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov=True expected momentum > 0"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda p: SGD(p, lr=0.1, velocity_init="random"), "velocity_init"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), r"betas\[1\] expected"),
    (lambda p: Adam(p, eps=0.0), "eps expected"),
    (lambda p: AdamW(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: RMSprop(p, alpha=1.5), "alpha"),
    (lambda p: SGD([], lr=0.1), "non-empty"),
    (lambda p: SGD(p + p, lr=0.1), "distinct"),
])
def test_bad_hyperparameters(dev, make, match):
    with pytest.raises(GpunetValueError, match=match):
        make([param(dev)])


def test_bad_types_and_names(dev):
    with pytest.raises(GpunetTypeError, match=r"params\[0\] expected a gn.nn.Parameter, got ndarray"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(GpunetTypeError, match="lr expected a real number, got str"):
        SGD([param(dev)], lr="0.1")
    with pytest.raises(GpunetTypeError, match="betas"):
        Adam([param(dev)], betas=0.9)
    with pytest.raises(GpunetValueError, match=r"\['adagrad', 'adam', 'adamw', 'nadam', 'radam', 'rmsprop', 'sgd'\], got 'lamb'"):
        get("lamb", [param(dev)])
    opt = get("SGD", [param(dev)], lr=0.1)
    opt.lr = 0.0  # a schedule may reach 0
    with pytest.raises(GpunetValueError, match="lr"):
        opt.lr = -0.1
    assert opt.lr == 0.0


# ---------------------------------------------------------------- amsgrad, Adagrad, RAdam, NAdam (by hand)

def test_adam_amsgrad_keeps_the_largest_second_moment(dev):
    p = param(dev)
    opt = Adam([p], lr=0.1, amsgrad=True)
    opt.step()
    w1 = host(p.data).copy()
    p.grad[...] = dev.asarray(np.array([0.01, 0.01]))  # v shrinks: the max keeps v₁
    opt.step()
    close(opt.state[0]["max_exp_avg_sq"], [0.00025, 0.001])
    for k in range(2):
        m = 0.9 * 0.1 * G1[k] + 0.1 * 0.01
        vmax = 0.001 * G1[k] ** 2
        expected = w1[k] - (0.1 / (1 - 0.9 ** 2)) * m / (math.sqrt(vmax) / math.sqrt(1 - 0.999 ** 2) + 1e-8)
        assert host(p.data)[k] == pytest.approx(expected, rel=1e-12)


def test_adagrad_two_steps_with_lr_decay(dev):
    p = param(dev)
    opt = gn.optim.Adagrad([p], lr=0.1, lr_decay=0.5, initial_accumulator_value=0.25)
    opt.step()  # s = 0.25 + g²; w −= 0.1·g/(√s + eps)
    s1 = [0.25 + g * g for g in G1]
    w1 = [W0[k] - 0.1 * G1[k] / (math.sqrt(s1[k]) + 1e-10) for k in range(2)]
    close(opt.state[0]["sum"], s1)
    close(p.data, w1)
    p.grad[...] = dev.asarray(np.array(G2))
    opt.step()  # lr_2 = 0.1 / (1 + 1·0.5)
    close(p.data, [w1[k] - (0.1 / 1.5) * G2[k] / (math.sqrt(s1[k] + G2[k] ** 2) + 1e-10) for k in range(2)])


def test_radam_first_steps_are_sgd_with_momentum(dev):
    p = param(dev)
    opt = gn.optim.RAdam([p], lr=0.1)
    opt.step()  # ρ₁ = 1999 − 2·0.999/0.001 = 1 ≤ 5: w −= lr·m/(1 − β₁) = lr·g
    close(p.data, [W0[k] - 0.1 * G1[k] for k in range(2)])


def test_nadam_first_step(dev):
    p = param(dev)
    opt = gn.optim.NAdam([p], lr=0.1)
    opt.step()
    mu1, mu2 = (0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3)) for t in (1, 2))
    # m = 0.1·g, v = 0.001·g², d = √(v/0.001) + eps = |g| + eps
    close(p.data, [W0[k] - 0.1 * G1[k] / (abs(G1[k]) + 1e-8)
                   - 0.1 * mu2 * 0.1 * G1[k] / ((1 - mu1 * mu2) * (abs(G1[k]) + 1e-8)) for k in range(2)])
