"""The training-step pipeline: one engine interface, the before-step hook, one lr writer,
and evaluation through the loss's fused forward-only entry."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.callbacks import Callback
from gpunet.metrics import count_correct
from gpunet.parallel import DataParallel
from gpunet.step import LocalEngine


@pytest.fixture(scope="module")
def data():
    full = gn.data.load("digits", "train")
    return gn.data.Dataset(full.x[:320], full.y[:320], full.classes)  # 5 steps of 64


def trainer(devices=None, lr=0.1, **kw):
    gn.manual_seed(0)
    model = gn.models.mlp([64, 32, 10])
    model.to("cpu", dtype="float64")
    opt = gn.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", devices=devices, **kw)


@pytest.mark.parametrize("devices,engine", [(None, LocalEngine), (["cpu"] * 2, DataParallel)])
def test_before_optimizer_step_sees_final_gradients_before_the_update(data, devices, engine):
    seen = []

    class Spy(Callback):
        def on_before_optimizer_step(self, step, logs=None):
            p = self.trainer.optimizer.params[0]
            seen.append((step, float(np.abs(p.grad).sum()), p.data.copy()))

        def on_batch_end(self, step, logs=None):
            assert not np.array_equal(self.trainer.optimizer.params[0].data, seen[-1][2])  # updated after

    t = trainer(devices, callbacks=[Spy()], doctor=False)
    assert isinstance(t.engine, engine)
    t.fit(data, epochs=1, batch_size=64)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4]
    assert all(g > 0 for _, g, _ in seen)


def test_the_hook_sees_the_reduced_gradient(data):
    """Under data parallel the hook runs after the reduction: replica 0's gradient is the
    global batch's, equal to the one-device gradient."""
    grads = {}

    class Grab(Callback):
        def __init__(self, key):
            self.key = key

        def on_before_optimizer_step(self, step, logs=None):
            if step == 0:
                grads[self.key] = [p.grad.copy() for p in self.trainer.optimizer.params]

    trainer(callbacks=[Grab("one")], doctor=False).fit(data, epochs=1, batch_size=64)
    trainer(["cpu"] * 4, callbacks=[Grab("four")], doctor=False).fit(data, epochs=1, batch_size=64)
    for a, b in zip(grads["one"], grads["four"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_live_doctor_samples_gradients_without_wrapping_the_optimizer(data):
    t = trainer(log_every=2)
    t.fit(data, epochs=1, batch_size=64)
    doctor = t.callbacks.callbacks[1]
    assert type(doctor).__name__ == "LiveDoctor"
    assert "step" not in vars(t.optimizer)  # the optimizer's own step, never replaced
    assert doctor._first_norms and all(v > 0 for v in doctor._first_norms.values())


def test_reduce_is_validated_on_every_path():
    with pytest.raises(gn.GpunetValueError, match="reduce"):
        trainer(reduce="bogus")
    with pytest.raises(gn.GpunetValueError, match="reduce"):
        trainer(["cpu"] * 2, reduce="bogus")


def test_a_communicator_without_devices_is_refused():
    from gpunet.parallel import LocalCommunicator
    with pytest.raises(gn.GpunetValueError, match="comm"):
        trainer(comm=LocalCommunicator())


def test_every_replica_gets_the_lr_from_the_one_writer(data):
    lrs = []

    class Spy(Callback):
        def on_before_optimizer_step(self, step, logs=None):
            lrs.append([o.lr for o in self.trainer.engine.optimizers])

    t = trainer(["cpu"] * 4, lr=0.1, lr_scaling="linear", warmup_epochs=1, callbacks=[Spy()],
                schedule=gn.optim.schedules.StepLR(1, gamma=0.5))
    t.fit(data, epochs=2, batch_size=64)
    want = [0.1 + 0.3 * k / 5 for k in range(1, 6)] + [0.2] * 5  # warmup to 0.4, then the step halves it
    np.testing.assert_allclose([row[0] for row in lrs], want, rtol=1e-12)
    assert all(len(set(row)) == 1 for row in lrs)  # every replica, every step
    assert t.history.lr == [pytest.approx(0.1 + 0.3 / 5), pytest.approx(0.2)]


def test_set_lr_reaches_every_replica(data):
    t = trainer(["cpu"] * 2, lr=0.1)
    t.set_lr(0.01)
    assert [o.lr for o in t.engine.optimizers] == [0.01, 0.01]
    t.optimizer.lr = 0.02  # an assignment between fits reaches the other replicas at the next fit
    t.fit(data, epochs=1, batch_size=64)
    assert [o.lr for o in t.engine.optimizers] == [0.02, 0.02]


def _evaluate_as_before(t, data, batch_size=1024):
    """Trainer.evaluate as it was: the training forward (with dlogits) and count_correct."""
    loader = t.loader(data, batch_size, shuffle=False)
    t.model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader.iterate(0):
        logits = t.model.forward(x)
        loss_sum += float(t.loss_fn.forward(logits, y)) * x.shape[0]
        correct += int(count_correct(logits, y))
        seen += x.shape[0]
    t.model.train()
    return {"loss": loss_sum / seen + float(t.model.regularization_loss()), "accuracy": correct / seen}


def test_evaluate_uses_the_fused_eval_entry_and_writes_no_gradient(data, monkeypatch):
    t = trainer(doctor=False)
    t.fit(data, epochs=1, batch_size=64)
    assert all(not p.grad.any() for p in t.model.parameters())
    t.loss_fn._dlogits = None
    calls = []
    real = gn.losses.cross_entropy.softmax_cross_entropy_eval
    monkeypatch.setattr(gn.losses.cross_entropy, "softmax_cross_entropy_eval",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    got = t.evaluate(data, batch_size=100)  # 4 batches, the last one short
    assert len(calls) == 4
    assert t.loss_fn._dlogits is None  # no dlogits buffer written
    assert all(not p.grad.any() for p in t.model.parameters())
    before = _evaluate_as_before(t, data, batch_size=100)
    assert got["loss"] == pytest.approx(before["loss"], rel=1e-12)
    assert got["accuracy"] == before["accuracy"]


def test_loss_evaluate_default_matches_forward():
    """Losses without a fused path evaluate through forward: sum, count, correct."""
    rng = np.random.default_rng(0)
    pred = rng.random((6, 3))
    target = (rng.random((6, 3)) > 0.5).astype(np.float64)
    mse = gn.losses.MSE()
    s, n, c = mse.evaluate(pred, target)
    assert n == 6 and float(s) == pytest.approx(float(mse.forward(pred, target)) * 6, rel=1e-15)
    assert int(c) == int(count_correct(pred, target))


@pytest.mark.parametrize("kind", ["scheduler", "plateau"])
def test_linear_scaling_reaches_a_schedule_the_user_built(data, kind):
    """A Scheduler or ReduceLROnPlateau built on the optimizer before the Trainer existed is
    scaled like a Schedule: with 2 replicas and lr_scaling="linear" its lr is doubled."""
    lrs = []

    class Spy(Callback):
        def on_before_optimizer_step(self, step, logs=None):
            lrs.append([o.lr for o in self.trainer.engine.optimizers])

    gn.manual_seed(0)
    model = gn.models.mlp([64, 16, 10])
    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = (gn.optim.Scheduler(opt, gn.optim.schedules.StepLR(1, gamma=0.5)) if kind == "scheduler"
             else gn.optim.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=10.0, monitor="loss"))
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, devices=["cpu", "cpu"], lr_scaling="linear",
                   schedule=sched, doctor=False, callbacks=[Spy()])
    t.fit(data, epochs=2, batch_size=64)
    per_epoch = len(lrs) // 2
    # epoch 0 at 2 × 0.1; then StepLR halves it, and the plateau (threshold 10: never better) halves it too
    np.testing.assert_allclose([row[0] for row in lrs], [0.2] * per_epoch + [0.1] * per_epoch, rtol=1e-12)
    assert all(len(set(row)) == 1 for row in lrs)
