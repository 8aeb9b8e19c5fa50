"""Data-parallel semantics (float64, CPU, local communicator): these must hold exactly."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.parallel import DataParallel, LocalCommunicator


@pytest.fixture(scope="module")
def data():
    full = gn.data.load("digits", "train")
    return gn.data.Dataset(full.x[:320], full.y[:320], full.classes)  # 5 steps of 64


def trainer(devices=None, reduce="mean", lr=0.1, momentum=0.9, model_fn=None, **kw):
    gn.manual_seed(0)
    model = (model_fn or (lambda: gn.models.mlp([64, 32, 10])))()
    model.to("cpu", dtype="float64")
    opt = gn.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", devices=devices,
                      reduce=reduce, **kw)


def max_diff(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return max(float(np.max(np.abs(sa[k] - sb[k]))) for k in sa)


def test_four_replicas_mean_equal_one_device(data):
    one = trainer()
    one.fit(data, epochs=1, batch_size=64)
    four = trainer(devices=["cpu"] * 4, reduce="mean")
    four.fit(data, epochs=1, batch_size=64)
    assert one.global_step == four.global_step == 5
    assert max_diff(one, four) < 1e-12
    assert abs(one.history.loss[0] - four.history.loss[0]) < 1e-12
    assert one.history.accuracy == four.history.accuracy


def test_sum_equals_lr_times_n_under_plain_sgd(data):
    big_lr = trainer(lr=0.4, momentum=0.0)
    big_lr.fit(data, epochs=1, batch_size=64)
    summed = trainer(devices=["cpu"] * 4, reduce="sum", lr=0.1, momentum=0.0)
    summed.fit(data, epochs=1, batch_size=64)
    assert max_diff(big_lr, summed) < 1e-12
    mean = trainer(devices=["cpu"] * 4, reduce="mean", lr=0.1, momentum=0.0)
    mean.fit(data, epochs=1, batch_size=64)
    assert max_diff(big_lr, mean) > 1e-3  # and it is not what mean does


def test_replicas_stay_identical_with_optimizer_state(data):
    gn.manual_seed(0)
    model = gn.models.mlp([64, 32, 10], dropout=0.3)
    model.to("cpu", dtype="float64")
    opt = gn.optim.Adam(model.parameters(), lr=1e-3)
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", devices=["cpu"] * 3)
    t.fit(data, epochs=2, batch_size=60)
    digest = t.engine.check_replicas()
    assert len(set(t.engine.checksums())) == 1 and len(digest) == 64
    assert opt.state_dict()["buffers"], "Adam state must exist and be compared"
    # corrupt one replica: the check must catch it
    t.engine.replicas[2].params[0].data[0, 0] += 1e-9
    with pytest.raises(AssertionError, match=r"replicas \[2\]"):
        t.engine.check_replicas()


def test_each_replica_draws_its_own_dropout_stream(data):
    gn.manual_seed(0)
    model = gn.models.mlp([64, 32, 10], dropout=0.5)
    engine = DataParallel(model, gn.losses.SoftmaxCrossEntropy(),
                          gn.optim.SGD(model.parameters(), lr=0.1), ["cpu"] * 2, seed=3)
    masks = [r.model[3].generator.uniform((1000,)) for r in engine.replicas]
    assert not np.array_equal(masks[0], masks[1])
    again = DataParallel(gn.models.mlp([64, 32, 10], dropout=0.5), gn.losses.SoftmaxCrossEntropy(),
                         gn.optim.SGD(model.parameters(), lr=0.1), ["cpu"] * 2, seed=3)
    np.testing.assert_array_equal(again.replicas[1].model[3].generator.uniform((1000,)), masks[1])


def test_uneven_last_batch_still_gives_the_global_mean(data):
    """70 samples, batch 64: the last batch of 6 splits 2/2/1/1 over 4 replicas."""
    small = gn.data.Dataset(data.x[:70], data.y[:70], data.classes)
    one = trainer()
    one.fit(small, epochs=1, batch_size=64)
    four = trainer(devices=["cpu"] * 4)
    four.fit(small, epochs=1, batch_size=64)
    assert max_diff(one, four) < 1e-12


def test_batch_not_divisible_by_replicas_is_refused(data):
    t = trainer(devices=["cpu"] * 3)
    before = t.model.state_dict()
    with pytest.raises(ValueError, match=r"batch_size.*divisible by the 3 replicas.*got 64"):
        t.fit(data, epochs=1, batch_size=64)
    after = t.model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def small_bn_cnn():
    return gn.nn.Sequential(gn.nn.Conv2d(1, 4, 3, padding=1), gn.nn.BatchNorm2d(4), gn.nn.ReLU(),
                            gn.nn.Flatten(), gn.nn.Linear(4 * 8 * 8, 10))


def test_batchnorm_statistics_are_per_replica(data):
    """With BatchNorm, 2 replicas × B/2 equal one device that normalises each half on its own
    (and averages the two gradients) -- not one device on the whole batch."""
    x = gn.data.DataLoader(data, 64, shuffle=False, dtype=np.float64)
    xb, yb = next(iter(x))
    two = trainer(devices=["cpu"] * 2, model_fn=small_bn_cnn, momentum=0.0)
    two.engine.train_step(xb, yb)

    def reference(halves):
        gn.manual_seed(0)
        m = small_bn_cnn()
        m.to("cpu", dtype="float64")
        loss = gn.losses.SoftmaxCrossEntropy()
        for xs, ys in halves:
            loss.forward(m.forward(xs), ys)
            m.backward(loss.backward())  # accumulates: the sum of the halves' gradients
        for p in m.parameters():
            p.data -= 0.1 * p.grad / len(halves)
        return m

    per_half = reference([(xb[:32], yb[:32]), (xb[32:], yb[32:])])
    whole = reference([(xb, yb)])
    s2, sh, sw = two.model.state_dict(), per_half.state_dict(), whole.state_dict()
    weights = [k for k in s2 if "running" not in k and "num_batches" not in k]
    assert max(np.max(np.abs(s2[k] - sh[k])) for k in weights) < 1e-12
    assert max(np.max(np.abs(s2[k] - sw[k])) for k in weights) > 1e-6
    # replica 0's running mean saw only its own half: the first half's channel means
    gn.manual_seed(0)
    fresh = small_bn_cnn()
    fresh.to("cpu", dtype="float64")
    h0 = fresh[0].forward(xb[:32])  # the conv output replica 0's BatchNorm saw, before the update
    expected = 0.1 * h0.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(two.model[1].running_mean, expected, rtol=1e-12, atol=1e-15)
    other = two.engine.replicas[1].model[1].running_mean
    assert np.max(np.abs(other - two.model[1].running_mean)) > 1e-6


def test_linear_scaling_and_warmup(data):
    lrs = []

    class Spy(gn.callbacks.Callback):
        def on_batch_end(self, step, logs=None):
            lrs.append(self.trainer.optimizer.lr)
    t = trainer(devices=["cpu"] * 4, lr=0.1, lr_scaling="linear", warmup_epochs=1, callbacks=[Spy()])
    assert t.base_lr == pytest.approx(0.4) and t.unscaled_lr == 0.1
    t.fit(data, epochs=2, batch_size=64)
    np.testing.assert_allclose(lrs[:5], [0.1 + 0.3 * k / 5 for k in range(1, 6)], rtol=1e-12)
    assert lrs[5:] == [pytest.approx(0.4)] * 5
    assert t.history.lr[1] == pytest.approx(0.4)


def test_local_communicator_sums_in_place():
    bufs = [np.full(5, float(i)) for i in range(4)]
    LocalCommunicator().all_reduce(bufs)
    for b in bufs:
        np.testing.assert_array_equal(b, np.full(5, 6.0))
    with pytest.raises(ValueError, match="op"):
        LocalCommunicator().all_reduce(bufs, op="max")


@pytest.mark.gpu
def test_nccl_reduces_a_real_buffer():
    from gpunet.parallel import NcclCommunicator
    if not gn.backend.nccl_available():
        pytest.skip("CuPy has no NCCL on this machine")
    dev = gn.device("cuda:0")
    comm = NcclCommunicator([dev])
    buf = dev.asarray(np.arange(1000, dtype=np.float32))
    comm.all_reduce([buf])
    np.testing.assert_array_equal(dev.to_host(buf), np.arange(1000, dtype=np.float32))


@pytest.mark.gpu
def test_simulated_replicas_on_one_gpu_match_one_device(data):
    one = trainer()
    one.fit(data, epochs=1, batch_size=64)
    gn.manual_seed(0)
    model = gn.models.mlp([64, 32, 10])
    model.to("cuda", dtype="float64")
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                   devices=["cuda:0"] * 4)
    t.fit(data, epochs=1, batch_size=64)
    s1, s2 = one.model.state_dict(), {k: gn.backend.to_numpy(v) for k, v in t.model.state_dict().items()}
    assert max(float(np.max(np.abs(s1[k] - s2[k]))) for k in s1) < 1e-9
