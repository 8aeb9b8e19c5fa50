"""DataLoader: order, epochs, shards, partial batches, dtype/scale/NCHW, residency, errors.

Labels carry each sample's index (y[i] = i), so a batch's y says exactly which samples
it holds. The bodies run on every device of the `dev` fixture.
"""
import numpy as np
import pytest

import gpunet as gn
from conftest import data_root
from gpunet.data import DataLoader, Dataset


def make_ds(n=103, shape=(5, 6), seed=0):
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return Dataset(x, np.arange(n), classes=[str(i) for i in range(n)], name="toy", split="train")


def ids(loader, epoch=None):
    """Per batch, the sample indices it holds (host lists)."""
    it = loader if epoch is None else loader.iterate(epoch)
    return [gn.backend.to_numpy(y).tolist() for _, y in it]


def flat(batches):
    return [i for b in batches for i in b]


def test_same_seed_same_batches_and_epochs_differ(dev):
    ds = make_ds()
    a, b = DataLoader(ds, 16, device=dev, seed=3), DataLoader(ds, 16, device=dev, seed=3)
    assert ids(a, 0) == ids(b, 0)
    assert ids(a, 0) != ids(DataLoader(ds, 16, device=dev, seed=4), 0)
    assert ids(a, 0) != ids(a, 1)
    assert sorted(flat(ids(a, 1))) == list(range(103))


def test_order_is_the_host_permutation(dev):
    ds = make_ds()
    loader = DataLoader(ds, 10, device=dev, seed=7)
    expected = np.random.Generator(np.random.PCG64([7, 2])).permutation(103)
    assert flat(ids(loader, 2)) == expected.tolist()
    assert flat(ids(DataLoader(ds, 10, shuffle=False, device=dev), 5)) == list(range(103))


def test_epoch_counter_and_set_epoch():
    loader = DataLoader(make_ds(), 16, device="cpu", seed=1)
    first, second = ids(loader), ids(loader)          # epochs 0 then 1
    assert (first, second) == (ids(loader, 0), ids(loader, 1)) and loader.epoch == 2
    loader.set_epoch(5)
    assert ids(loader) == ids(loader, 5) and loader.epoch == 6
    it = iter(loader)
    next(it)                                          # a partial pass does not advance
    assert loader.epoch == 6


def test_resume_mid_epoch(dev):
    loader = DataLoader(make_ds(), 16, device=dev, seed=2,
                        transform=gn.data.Compose([gn.data.RandomFlip()]))
    full = list(loader.iterate(3))
    tail = list(loader.iterate(3, start_batch=4))
    assert len(tail) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], tail):
        assert np.array_equal(dev.to_host(ya), dev.to_host(yb))
        assert np.array_equal(dev.to_host(xa), dev.to_host(xb))  # augmentation replays too


@pytest.mark.parametrize("n", [100, 103])
def test_shards_are_disjoint_equal_and_cover(n):
    ds, W = make_ds(n), 4
    shards = [flat(ids(DataLoader(ds, 8, device="cpu", seed=9, rank=r, world_size=W), 1))
              for r in range(W)]
    assert all(len(s) == n // W for s in shards)
    union = set().union(*shards)
    assert len(union) == W * (n // W)                 # disjoint
    if n % W == 0:
        assert union == set(range(n))


def test_shards_interleave_into_the_big_batch():
    """Batch i of ranks 0..W-1 together == batch i of one loader with W× the batch size."""
    ds, W, B = make_ds(96), 3, 8
    single = ids(DataLoader(ds, B * W, device="cpu", seed=5), 0)
    per_rank = [ids(DataLoader(ds, B, device="cpu", seed=5, rank=r, world_size=W), 0) for r in range(W)]
    for i, big in enumerate(single):
        assert sorted(big) == sorted(flat(r[i] for r in per_rank))


def test_last_partial_batch_exactly_once(dev):
    ds = make_ds(103)
    loader = DataLoader(ds, 10, device=dev)
    batches = ids(loader, 0)
    assert len(loader) == len(batches) == 11
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert sorted(flat(batches)) == list(range(103))
    dropped = DataLoader(ds, 10, drop_last=True, device=dev)
    assert len(dropped) == 10 and [len(b) for b in ids(dropped, 0)] == [10] * 10


def test_float_scale_and_nchw(dev):
    ds = make_ds(20, shape=(5, 6))
    x, y = next(iter(DataLoader(ds, 8, shuffle=False, device=dev)))
    assert x.shape == (8, 1, 5, 6) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(dev.to_host(x)[:, 0], ds.x[:8] / np.float32(255), rtol=1e-6)
    x64, _ = next(iter(DataLoader(ds, 8, shuffle=False, device=dev, dtype="float64")))
    assert x64.dtype == np.float64
    np.testing.assert_array_equal(dev.to_host(x64)[:, 0], ds.x[:8] * (1 / 255))
    raw, _ = next(iter(DataLoader(ds, 8, shuffle=False, device=dev, scale=None)))
    np.testing.assert_array_equal(dev.to_host(raw)[:, 0], ds.x[:8].astype(np.float32))
    rgb = Dataset(np.zeros((4, 3, 2, 2), np.uint8), np.arange(4))
    assert next(iter(DataLoader(rgb, 4, device=dev)))[0].shape == (4, 3, 2, 2)


def test_host_path_matches_resident(dev):
    ds = make_ds()
    resident = DataLoader(ds, 16, device=dev, seed=1)
    streamed = DataLoader(ds, 16, device=dev, seed=1, resident_budget_bytes=0)
    assert resident.resident and not streamed.resident
    for (xa, ya), (xb, yb) in zip(resident.iterate(0), streamed.iterate(0)):
        assert np.array_equal(dev.to_host(xa), dev.to_host(xb))
        assert np.array_equal(dev.to_host(ya), dev.to_host(yb))


def test_mnist_batches(dev):
    data_root("mnist")
    ds = gn.data.load("mnist", "test")
    loader = DataLoader(ds, 128, device=dev, seed=0)
    x, y = next(iter(loader))
    assert len(loader) == 79 and x.shape == (128, 1, 28, 28) and y.shape == (128,)
    h = dev.to_host(x)
    assert 0.0 <= h.min() and h.max() <= 1.0 and y.dtype == np.int64


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size expected an int >= 1, got 0"),
    (dict(batch_size=-3), "batch_size expected an int >= 1, got -3"),
    (dict(batch_size=2.5), "batch_size expected an int, got float 2.5"),
    (dict(batch_size=True), "batch_size expected an int, got bool"),
    (dict(batch_size=11, drop_last=True), "batch_size expected <= 10 .* got 11"),
    (dict(batch_size=2, rank=2, world_size=2), r"rank expected in \[0, 2\) .* got 2"),
    (dict(batch_size=2, rank=-1), "rank expected an int >= 0, got -1"),
    (dict(batch_size=2, world_size=0), "world_size expected an int >= 1, got 0"),
    (dict(batch_size=2, world_size=11), "world_size expected <= the 10 samples, got 11"),
    (dict(batch_size=2, seed=-1), "seed expected an int >= 0, got -1"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(gn.GpunetValueError, match=match):
        DataLoader(make_ds(10), device="cpu", **kwargs)


def test_empty_dataset_error():
    empty = Dataset(np.zeros((0, 2, 2), np.uint8), np.zeros(0, np.int64), classes=["a"], name="nothing")
    with pytest.raises(gn.DataError, match="at least one sample.*'nothing'"):
        DataLoader(empty, 4, device="cpu")


def test_start_batch_out_of_range():
    loader = DataLoader(make_ds(10), 4, device="cpu")
    with pytest.raises(gn.GpunetValueError, match=r"start_batch expected in \[0, 3\], got 4"):
        next(loader.iterate(0, start_batch=4))
