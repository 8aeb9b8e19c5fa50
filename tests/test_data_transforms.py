"""Preprocessing helpers and on-device batch augmentation."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.data import (BatchRandom, CenterCrop, Compose, Dataset, Normalize, RandomCrop,
                         RandomFlip, channel_stats, one_hot, random_split, scale_to_unit)


def batch(dev, n=16, c=3, h=8, w=8, seed=0):
    host = np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32) + 0.5  # never 0
    return host, dev.asarray(host)


def test_scale_to_unit(dev):
    x = dev.asarray(np.array([0, 51, 255], np.uint8))
    np.testing.assert_allclose(dev.to_host(scale_to_unit(x)), [0.0, 0.2, 1.0], rtol=1e-6)
    assert scale_to_unit(x, "float64").dtype == np.float64


def test_channel_stats_and_normalize(dev):
    x = np.random.default_rng(1).integers(0, 256, size=(50, 3, 4, 4), dtype=np.uint8)
    ds = Dataset(x, np.zeros(50, np.int64))
    mean, std = channel_stats(ds, chunk=7)  # chunks that do not divide N
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-9)
    out = dev.to_host(Normalize(mean, std)(dev.asarray(ref)))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-9)
    gray = Dataset(x[:, 0], np.zeros(50, np.int64))
    assert channel_stats(gray)[0].shape == (1,)


def test_normalize_keeps_dtype(dev):
    _, x = batch(dev)
    assert Normalize([0.5] * 3, [0.25] * 3)(x).dtype == np.float32


def test_one_hot(dev):
    y = dev.asarray(np.array([2, 0, 1], np.int64))
    np.testing.assert_array_equal(dev.to_host(one_hot(y, 4)),
                                  [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    for bad in (-1, 4):   # NumPy would wrap -1 and CuPy every bad label: both refuse, checks on or off
        with pytest.raises(gn.GpunetValueError, match=rf"one_hot: labels expected in \[0, 4\).*{bad}"):
            one_hot(dev.asarray(np.array([0, bad, 1], np.int64)), 4)
    with gn.checks(), pytest.raises(gn.GpunetValueError, match=r"\[0, 2\).*max 2"):
        one_hot(y, 2)


def test_random_split():
    ds = Dataset(np.zeros((100, 2, 2), np.uint8), np.arange(100), name="toy", split="train")
    train, val = random_split(ds, 0.2, seed=1)
    assert (len(train), len(val)) == (80, 20) and (train.split, val.split) == ("train", "val")
    assert set(train.y) | set(val.y) == set(range(100)) and not set(train.y) & set(val.y)
    again, val2 = random_split(ds, 20, seed=1)
    assert np.array_equal(val.y, val2.y) and not np.array_equal(val.y, random_split(ds, 20, seed=2)[1].y)
    for bad in (0.0, 1.0, 0, 100, "a", True):
        with pytest.raises(gn.GpunetValueError, match="random_split: val"):
            random_split(ds, bad)


def test_batch_random_is_device_independent(dev):
    a = BatchRandom(dev.xp, 1234)
    u, k = dev.to_host(a.uniform((1000,))), dev.to_host(a.integers(5, (1000,)))
    b = BatchRandom(np, 1234)
    np.testing.assert_array_equal(u, b.uniform((1000,)))   # same bits on CPU and GPU
    np.testing.assert_array_equal(k, b.integers(5, (1000,)))
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.05
    assert set(k.tolist()) == {0, 1, 2, 3, 4}
    assert not np.array_equal(u, BatchRandom(np, 1235).uniform((1000,)))


def test_random_crop_windows(dev):
    host, x = batch(dev, h=6, w=6)
    out = dev.to_host(RandomCrop(6, padding=2)(x, BatchRandom(dev.xp, 7)))
    assert out.shape == host.shape
    padded = np.pad(host, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for i in range(len(host)):
        hits = [(t, l) for t in range(5) for l in range(5)
                if np.array_equal(out[i], padded[i, :, t:t + 6, l:l + 6])]
        assert len(hits) == 1, f"sample {i}: output is not one window of the padded input"
        offsets.add(hits[0])
    assert len(offsets) > 3  # offsets vary across the batch
    assert np.array_equal(dev.to_host(RandomCrop(6)(x)), host)  # no padding, full size: identity


def test_random_flip(dev):
    host, x = batch(dev)
    np.testing.assert_array_equal(dev.to_host(RandomFlip(p=1.0)(x)), host[..., ::-1])
    np.testing.assert_array_equal(dev.to_host(RandomFlip(p=0.0)(x)), host)
    out = dev.to_host(RandomFlip()(x, BatchRandom(dev.xp, 3)))
    flipped = [np.array_equal(o, h[..., ::-1]) for o, h in zip(out, host)]
    kept = [np.array_equal(o, h) for o, h in zip(out, host)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < len(host)


def test_center_crop(dev):
    host, x = batch(dev, h=32, w=32)
    np.testing.assert_array_equal(dev.to_host(CenterCrop(24)(x)), host[:, :, 4:28, 4:28])


def test_compose_is_deterministic_per_key(dev):
    _, x = batch(dev, h=8, w=8)
    aug = Compose([RandomCrop(8, padding=2), RandomFlip()])
    a = dev.to_host(aug(x, BatchRandom(dev.xp, 11)))
    assert np.array_equal(a, dev.to_host(aug(x, BatchRandom(dev.xp, 11))))
    assert not np.array_equal(a, dev.to_host(aug(x, BatchRandom(dev.xp, 12))))
    assert not np.array_equal(dev.to_host(aug(x)), dev.to_host(aug(x)))  # own stream advances


@pytest.mark.parametrize("make,match", [
    (lambda: RandomCrop(0), "size expected a positive int"),
    (lambda: RandomCrop(4, padding=-1), "padding expected a non-negative int"),
    (lambda: RandomFlip(p=1.5), r"p expected a probability in \[0, 1\]"),
    (lambda: Normalize([0.5, 0.5], [0.2]), "equal length"),
    (lambda: Normalize([0.5], [0.0]), "std > 0"),
])
def test_transform_argument_errors(make, match):
    with pytest.raises(gn.GpunetValueError, match=match):
        make()


def test_transform_shape_errors():
    with pytest.raises(gn.ShapeError, match=r"RandomCrop.*\(B, C, H, W\), got shape \(4, 8, 8\)"):
        RandomCrop(4)(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(gn.ShapeError, match="larger than the padded input 10x10"):
        RandomCrop(12, padding=1)(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(gn.ShapeError, match=r"expected \(B, 3, ...\), got shape \(2, 1, 4, 4\)"):
        Normalize([0.5] * 3, [0.2] * 3)(np.zeros((2, 1, 4, 4), np.float32))
