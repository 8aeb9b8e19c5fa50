"""The multi-process engine's arithmetic and overlap, in this process, through a recording
stand-in for the MPI communicator (the real-MPI runs are in test_mpi.py)."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.data import DataLoader
from gpunet.parallel import ProcessDataParallel
from gpunet.parallel.process import plan_buckets


class OneRank:
    """MPI's interface with one rank: every collective is the identity; starts are recorded."""
    name, rank, world_size, timeout, step, count = "mpi", 0, 1, 5.0, None, 0

    def __init__(self):
        self.engine, self.starts = None, []

    def iall_reduce(self, buf, op="sum"):
        if self.engine is not None and buf.size and buf.base is not None:  # a gradient bucket
            flat = self.engine.replicas[0].flat_grad
            offset = (buf.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // buf.itemsize
            self.starts.append((offset, len(self.engine._done)))
        return "request"

    def test(self, requests):
        return True

    def wait(self, requests, what):
        pass

    def allgather(self, row):
        return np.asarray(row)[None]

    def broadcast_object(self, obj, root=0):
        return obj

    def all_reduce(self, buffers, op="sum"):
        pass

    def all_reduce_max(self, values):
        return np.asarray(values, dtype=np.float64)


@pytest.fixture(scope="module")
def data():
    full = gn.data.load("digits", "train")
    return gn.data.Dataset(full.x[:333], full.y[:333], full.classes)  # 333: a last batch of 13


def make(comm=None, **kw):
    gn.manual_seed(0)
    model = gn.models.mlp([64, 32, 16, 10])
    model.to("cpu", dtype="float64")
    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if comm is None:
        return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu")
    engine = ProcessDataParallel(model, gn.losses.SoftmaxCrossEntropy(), opt, "cpu", comm, **kw)
    comm.engine = engine
    return engine, model


def test_buckets_are_reverse_layer_order_and_start_during_backward(data):
    comm = OneRank()
    engine, model = make(comm, bucket_bytes=8)  # one parameter per bucket
    params = model.parameters()
    assert len(engine.buckets) == len(params) == 6 and engine.overlap
    x, y = next(iter(DataLoader(data, 40, shuffle=False, dtype="float64")))
    engine.train_step(x, y)
    offsets = [o for o, _ in comm.starts]
    assert offsets == sorted(offsets, reverse=True) and len(offsets) == 6   # last layer first
    # The last Linear's bucket starts when only its own 2 parameters are done: the two
    # earlier Linears are still to run backward, which is the overlap.
    assert [done for _, done in comm.starts] == [2, 2, 4, 4, 6, 6]


def test_one_rank_with_buckets_equals_the_plain_trainer(data):
    one = make()
    one.fit(data, epochs=2, batch_size=40)
    comm = OneRank()
    engine, model = make(comm, bucket_bytes=64)
    for epoch in range(2):
        for x, y in DataLoader(data, 40, seed=0, dtype="float64").iterate(epoch):
            engine.train_step(x, y)
    s1, s2 = one.model.state_dict(), model.state_dict()
    assert max(float(np.max(np.abs(s1[k] - s2[k]))) for k in s1) < 1e-12


def test_bad_bucket_size_is_refused(monkeypatch):
    with pytest.raises(gn.GpunetValueError, match="bucket_bytes"):
        make(OneRank(), bucket_bytes=0)
    monkeypatch.setenv("GPUNET_BUCKET_BYTES", "big")
    with pytest.raises(gn.GpunetValueError, match="GPUNET_BUCKET_BYTES"):
        make(OneRank())


def test_plan_buckets_cover_the_flat_buffer_once():
    model = gn.models.mlp([64, 32, 16, 10])
    params = model.parameters()
    total = sum(p.size for p in params)
    for size in (1, 100, 4096, 1 << 30):
        buckets = plan_buckets(params, size)
        spans = sorted((b.lo, b.hi) for b in buckets)
        assert spans[0][0] == 0 and spans[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_split_batches_cover_every_global_batch_exactly(world):
    n = 103  # not a multiple of any world size here, nor of the batch
    ds = gn.data.Dataset(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), np.arange(n), [str(i) for i in range(n)])
    one = DataLoader(ds, 20, seed=3, scale=None)
    parts = [DataLoader(ds, 20, seed=3, scale=None, rank=r, world_size=world, split_batches=True)
             for r in range(world)]
    assert all(len(p) == len(one) == 6 for p in parts)
    for batches in zip(one.iterate(1), *(p.iterate(1) for p in parts)):
        whole, pieces = batches[0], batches[1:]
        np.testing.assert_array_equal(np.concatenate([y for _, y in pieces]), whole[1])
        sizes = [len(y) for _, y in pieces]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(gn.GpunetValueError, match="world_size expected <= the 103 samples"):
        DataLoader(ds, 20, rank=0, world_size=104, split_batches=True)
