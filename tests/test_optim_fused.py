"""fused=True (SGD, Adam, AdamW): flat parameter buffers and one fused update per parameter group.

The fused optimizer must equal the per-parameter one to 1e-12 in float64 over 100 steps of a
real model (Linear, Conv1d, a shared layer), with parameter groups, an lr schedule changing lr
mid-run and an exact resume from a checkpoint; and every way of replacing a parameter's array
(load_state_dict, checkpoints, Module.to, p.grad = ..., deep copies for data-parallel replicas)
must keep the flat views valid. The kernels themselves: tests/test_kernels_emulated_optim.py.
Cost: 21 tests, about 4 s.
"""
import copy

import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import GpunetTypeError, GpunetValueError
from gpunet.nn.flat import FlatParameters, flat_of
from gpunet.ops.optim_step import adam_step, adam_step_xp, sgd_step
from gpunet.optim import SGD, Adam, AdamW

TOL = 1e-12
CASES = [
    (SGD, dict(lr=0.05)),
    (SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, velocity_init="grad")),
    (SGD, dict(lr=0.05, momentum=0.9, velocity_init="ones")),
    (Adam, dict(lr=3e-3, weight_decay=1e-2)),
    (Adam, dict(lr=3e-3, betas=(0.8, 0.99), amsgrad=True)),
    (AdamW, dict(lr=3e-3, weight_decay=0.1, amsgrad=True)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CASES]


class Tied(gn.nn.Module):
    """Conv1d (its weight is reshaped in __init__), then one Linear applied twice (weight sharing)."""

    def __init__(self, tied=True):
        super().__init__()
        shared = gn.nn.Linear(12, 12)
        self.conv = gn.nn.Conv1d(2, 3, 3, padding=1)
        second = shared if tied else gn.nn.Linear(12, 12)
        self.body = gn.nn.Sequential(gn.nn.Flatten(), shared, gn.nn.Tanh(), second, gn.nn.Linear(12, 5))

    def forward(self, x):
        return self.body(self.conv(x))

    def backward(self, dy, need_input_grad=True):
        return self.conv.backward(self.body.backward(dy))


def model(seed=0, tied=True):
    gn.manual_seed(seed)
    return Tied(tied).to(dtype="float64")


def batch(t):
    r = np.random.default_rng(100 + t)
    return r.standard_normal((6, 2, 4)), r.integers(0, 5, 6)


def train(m, opt, start, steps, loss=None, sched=None, clip=None):
    loss = loss or gn.losses.SoftmaxCrossEntropy()
    for t in range(start, start + steps):
        x, y = batch(t)
        loss.forward(m(x.astype(m.dtype)), y)
        m.backward(loss.backward())
        if clip:
            gn.optim.clip_grad_norm(m.parameters(), clip)
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()


def groups(m):
    ps = m.parameters()
    return [{"params": ps[:3]}, {"params": ps[3:], "lr": 0.01, "weight_decay": 0.0}]


def assert_same(a, b, oa=None, ob=None, tol=TOL):
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        err = float(np.abs(p.data - q.data).max())
        assert err <= tol * max(1.0, float(np.abs(p.data).max())), f"{k}: worst |Δ| {err:.3g}"
    if oa is not None:
        sa, sb = oa.state_dict(), ob.state_dict()
        assert sa["step"] == sb["step"] and sa["groups"] == sb["groups"] and set(sa["buffers"]) == set(sb["buffers"])
        for k in sa["buffers"]:
            err = float(np.abs(sa["buffers"][k] - sb["buffers"][k]).max())
            assert err <= tol * max(1.0, float(np.abs(sa["buffers"][k]).max())), f"buffer {k}: worst |Δ| {err:.3g}"


def is_view_of(a, buf):
    return np.shares_memory(a, buf)


# ---------------------------------------------------------------- equal to the per-parameter optimizers

@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_fused_equals_per_parameter_over_100_steps_with_groups_and_a_schedule(cls, kw):
    a, b = model(), model()
    oa, ob = cls(groups(a), **kw), cls(groups(b), fused=True, **kw)
    sa = gn.optim.Scheduler(oa, gn.optim.StepLR(step_size=30, gamma=0.5), unit="step")
    sb = gn.optim.Scheduler(ob, gn.optim.StepLR(step_size=30, gamma=0.5), unit="step")
    train(a, oa, 0, 100, sched=sa)
    train(b, ob, 0, 100, sched=sb)
    assert ob.param_groups[1]["lr"] == oa.param_groups[1]["lr"] < 0.01   # the schedule ran, per group
    assert_same(a, b, oa, ob)
    flat = ob.flat_parameters()
    assert len(flat.groups) == 1 and all(is_view_of(p.data, flat.groups[0].data) for p in b.parameters())


@pytest.mark.parametrize("cls,kw", [CASES[2], CASES[6]], ids=[IDS[2], IDS[6]])
def test_resume_from_a_checkpoint_is_exact_and_interchangeable(cls, kw, tmp_path):
    ref = model(tied=False)
    oref = cls(groups(ref), **kw)
    train(ref, oref, 0, 100)
    for first, second in ((True, True), (True, False), (False, True)):
        m = model(tied=False)
        o = cls(groups(m), fused=first, **kw)
        train(m, o, 0, 50)
        path = gn.save_checkpoint(tmp_path / f"ck{first}{second}.gnck", m, o)
        m2 = model(seed=9, tied=False)
        o2 = cls(groups(m2), fused=second, **kw)
        train(m2, o2, 0, 3)                      # some other state, to be overwritten by the load
        gn.load_checkpoint(path, m2, o2)
        train(m2, o2, 50, 50)
        assert_same(ref, m2, oref, o2)
        if second:
            flat = flat_of(m2.parameters())
            assert flat is o2.flat_parameters() and flat.intact()


def test_clip_grad_norm_is_one_reduction_over_the_flat_buffer_and_equals_per_parameter():
    a, b = model(), model()
    oa, ob = SGD(a.parameters(), lr=0.1, momentum=0.9), SGD(b.parameters(), lr=0.1, momentum=0.9, fused=True)
    train(a, oa, 0, 20, clip=0.05)
    train(b, ob, 0, 20, clip=0.05)
    assert_same(a, b, oa, ob)
    for norm_type in (2.0, 1.0, 3.0, "inf"):
        for m in (a, b):
            x, y = batch(0)
            loss = gn.losses.SoftmaxCrossEntropy()
            loss.forward(m(x), y)
            m.backward(loss.backward())
        assert flat_of(b.parameters()) is not None and flat_of(a.parameters()) is None
        na = gn.optim.clip_grad_norm(a.parameters(), 1e-3, norm_type=norm_type)
        nb = gn.optim.clip_grad_norm(b.parameters(), 1e-3, norm_type=norm_type)
        assert abs(float(na) - float(nb)) <= TOL * float(na)
        for p, q in zip(a.parameters(), b.parameters()):
            np.testing.assert_allclose(q.grad, p.grad, rtol=1e-12, atol=1e-18)
        oa.zero_grad()
        ob.zero_grad()
    assert all(not p.grad.any() for p in b.parameters())
    # a subset, or a broken view, takes the per-parameter path (still the right answer)
    assert flat_of(b.parameters()[:2]) is None
    b.parameters()[0].grad = b.parameters()[0].grad.copy()
    assert flat_of(b.parameters()) is None


# ---------------------------------------------------------------- the hazards of views

def test_replaced_arrays_are_copied_into_the_buffers_and_re_viewed():
    a, b = model(tied=False), model(tied=False)
    oa, ob = Adam(a.parameters(), lr=1e-2), Adam(b.parameters(), lr=1e-2, fused=True)
    train(a, oa, 0, 5)
    train(b, ob, 0, 5)
    flat = ob.flat_parameters()
    buf = flat.groups[0].data
    # 1. load_state_dict (assigns new arrays) of other weights, on both
    other = model(seed=3, tied=False).state_dict()
    a.load_state_dict(other)
    b.load_state_dict(other)
    # 2. a hand-written p.grad = ... and a reshape of .data (Conv1d-style)
    w = b.conv.weight
    w.data = w.data.reshape(w.data.shape[0], -1).reshape(w.data.shape)
    x, y = batch(7)
    for m in (a, b):
        loss = gn.losses.SoftmaxCrossEntropy()
        loss.forward(m(x), y)
        m.backward(loss.backward())
    b.body[1].weight.grad = b.body[1].weight.grad * 1.0
    oa.step()
    ob.step()
    assert_same(a, b, oa, ob)
    assert ob.flat_parameters().groups[0].data is buf and flat.intact()   # same storage, views back
    assert all(is_view_of(p.data, buf) for p in b.parameters())


def test_model_to_another_dtype_rebuilds_the_buffers_and_casts_the_state():
    a, b = model(), model()
    oa, ob = SGD(a.parameters(), lr=0.1, momentum=0.9), SGD(b.parameters(), lr=0.1, momentum=0.9, fused=True)
    train(a, oa, 0, 3)
    train(b, ob, 0, 3)
    a.to(dtype="float32")
    b.to(dtype="float32")
    train(a, oa, 3, 3)
    train(b, ob, 3, 3)
    flat = ob.flat_parameters()
    assert flat.groups[0].data.dtype == np.float32 and flat.intact()
    assert_same(a, b, oa, ob, tol=1e-6)


def test_deep_copies_get_their_own_buffers():
    m = model()
    o = SGD(m.parameters(), lr=0.1, momentum=0.9, fused=True)
    train(m, o, 0, 2)
    m2, o2 = copy.deepcopy((m, o))
    f1, f2 = o.flat_parameters(), o2.flat_parameters()
    assert f2.params == m2.parameters() and f2.groups[0].data is not f1.groups[0].data
    assert all(is_view_of(p.data, f2.groups[0].data) and not is_view_of(p.data, f1.groups[0].data)
               for p in m2.parameters())
    assert all(is_view_of(o2.state[i]["momentum_buffer"], o2._layout.buffers[(0, "momentum_buffer")])
               for i in range(len(o2.params)))
    train(m2, o2, 2, 3)
    train(m, o, 2, 3)
    assert_same(m, m2, o, o2, tol=0.0)


def test_data_parallel_reduces_in_the_optimizers_own_buffer():
    models = {fused: model() for fused in (False, True)}
    runs = {}
    for fused, m in models.items():
        opt = SGD(m.parameters(), lr=0.1, momentum=0.9, fused=fused)
        dp = gn.parallel.DataParallel(m, gn.losses.SoftmaxCrossEntropy(), opt, ["cpu"] * 2)
        for t in range(5):
            x, y = batch(t)
            dp.train_step(x, y)
        dp.check_replicas()
        runs[fused] = (dp, opt)
    dp, opt = runs[True]
    for r in dp.replicas:
        buf = r.optimizer.flat_parameters().groups[0].grad
        assert r.flat_grad is buf and all(is_view_of(p.grad, buf) for p in r.model.parameters())
    assert_same(models[False], models[True], runs[False][1], opt)


def test_refusals_name_what_was_expected():
    m = model()
    with pytest.raises(GpunetValueError, match=r"fused=True expected one of \['adam', 'adamw', 'sgd'\]"):
        gn.optim.get("rmsprop", m.parameters(), lr=0.1, fused=True)
    with pytest.raises(GpunetTypeError, match="fused expected a bool, got 'yes'"):
        SGD(m.parameters(), lr=0.1, fused="yes")
    opt = SGD(m.parameters()[:2], lr=0.1, fused=True)
    with pytest.raises(GpunetValueError, match="a fused optimizer expected exactly the model's"):
        gn.parallel.DataParallel(m, gn.losses.SoftmaxCrossEntropy(), opt, ["cpu"] * 2)
    w = np.zeros(4)
    with pytest.raises(GpunetTypeError, match="float32 master weights"):
        sgd_step(w, w.copy(), None, lr=0.1, lowp=np.zeros(4, np.float16))
    with pytest.raises(GpunetTypeError, match="float16 or bfloat16"):
        sgd_step(w.astype(np.float32), np.zeros(4, np.float32), None, lr=0.1, lowp=np.zeros(4, np.int16))
    with pytest.raises(GpunetValueError, match="step expected an int >= 1"):
        adam_step(w, w, w.copy(), w.copy(), lr=0.1, betas=(0.9, 0.99), eps=1e-8, step=0)
    with pytest.raises(GpunetValueError, match="distinct"):
        FlatParameters([m.parameters()[0]] * 2)


@pytest.mark.parametrize("lp", ["float16", "bfloat16"])
def test_the_low_precision_copy_is_the_rounded_update(lp):
    dt = np.dtype(lp) if lp == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    r = np.random.default_rng(0)
    w = (r.standard_normal(1000) * np.logspace(-9, 6, 1000)).astype(np.float32)
    g = r.standard_normal(1000).astype(np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    lowp = np.zeros(1000, dt)
    w2, m2, v2 = w.copy(), m.copy(), v.copy()
    adam_step_xp(w, g, m, v, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, step=1, lowp=lowp)
    adam_step_xp(w2, g, m2, v2, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, step=1)
    np.testing.assert_array_equal(w, w2)
    with np.errstate(over="ignore"):
        want = w2.astype(dt)
    assert np.isinf(want).any() == (lp == "float16")   # the sample reaches past fp16's range
    np.testing.assert_array_equal(lowp.view(np.uint16), want.view(np.uint16))


def test_mixed_dtypes_get_one_buffer_each():
    r = np.random.default_rng(0)
    shapes = [(3, 2), (4,), (5,)]
    def params():
        return [gn.nn.Parameter(r.standard_normal(s).astype(dt)) for s, dt in zip(shapes, (np.float32, np.float64,
                                                                                             np.float32))]
    pa = params()
    pb = [gn.nn.Parameter(p.data.copy()) for p in pa]
    oa, ob = Adam(pa, lr=1e-2), Adam(pb, lr=1e-2, fused=True)
    flat = ob.flat_parameters()
    assert [(str(g.data.dtype), len(g.params)) for g in flat.groups] == [("float32", 2), ("float64", 1)]
    for t in range(10):
        for p, q in zip(pa, pb):
            p.grad[...] = q.grad[...] = r.standard_normal(p.shape)
        oa.step()
        ob.step()
    for p, q in zip(pa, pb):
        np.testing.assert_array_equal(q.data, p.data)


def test_multi_process_engine_buckets_are_slices_of_the_optimizers_buffer():
    from test_process_engine import OneRank
    from gpunet.parallel import ProcessDataParallel
    data = gn.data.load("digits", "train")
    data = gn.data.Dataset(data.x[:333], data.y[:333], data.classes)
    runs = {}
    for fused in (False, True):
        gn.manual_seed(0)
        m = gn.models.mlp([64, 32, 16, 10]).to("cpu", dtype="float64")
        opt = SGD(m.parameters(), lr=0.1, momentum=0.9, fused=fused)
        comm = OneRank()
        engine = ProcessDataParallel(m, gn.losses.SoftmaxCrossEntropy(), opt, "cpu", comm, bucket_bytes=64)
        comm.engine = engine
        for epoch in range(2):
            for x, y in gn.data.DataLoader(data, 40, seed=0, dtype="float64").iterate(epoch):
                engine.train_step(x, y)
        runs[fused] = (m, opt, engine)
    m, opt, engine = runs[True]
    assert engine.replicas[0].flat_grad is opt.flat_parameters().groups[0].grad and engine.overlap
    assert_same(runs[False][0], m, runs[False][1], opt)


def test_trainer_with_replicas_and_a_hyperparameter_switched_on_mid_run():
    data = gn.data.load("digits", "train")
    data = gn.data.Dataset(data.x[:200], data.y[:200], data.classes)
    models, opts = [], []
    for fused in (False, True):
        gn.manual_seed(0)
        m = gn.models.mlp([64, 16, 10]).to("cpu", dtype="float64")
        opt = Adam(m.parameters(), lr=1e-2, fused=fused)
        trainer = gn.Trainer(m, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", devices=["cpu"] * 2)
        trainer.fit(data, epochs=1, batch_size=50)
        for o in trainer.engine.optimizers:
            o.param_groups[0]["amsgrad"] = True     # a new state buffer, created at the next step
        trainer.fit(data, epochs=2, batch_size=50)  # resumes: epoch 2
        trainer.engine.check_replicas()
        models.append(m)
        opts.append(opt)
    assert all("0.max_exp_avg_sq" in o.state_dict()["buffers"] and o.step_count == 8 for o in opts)
    assert_same(models[0], models[1], opts[0], opts[1])
