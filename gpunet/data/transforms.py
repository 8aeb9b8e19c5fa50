"""Preprocessing and batch augmentation, on whatever device holds the batch.

Helpers:  scale_to_unit(x) = x / 255;  channel_stats(train) -> per-channel (mean, std);
          Normalize(mean, std): (x - mean[c]) / std[c];  one_hot(y, C);
          random_split(ds, val, seed) -> (train, val).
Augment:  RandomCrop(size, padding), RandomFlip(p), CenterCrop(size), Compose([...]),
          applied to a whole float batch (B, C, H, W) at once, as in the CIFAR-10
          recipe of He et al. 2016 (pad 4, random 32×32 crop, horizontal flip).

Random draws are counter-based (a SplitMix64 hash, Steele et al. 2014, of
(seed, epoch, rank, batch, draw) computed with xp integer ops on the device): no host
transfer and no generator state, so the same seed gives the same crops and flips on
CPU and GPU, and resuming at batch k of an epoch redraws exactly what an unbroken run
drew. The DataLoader passes each batch its own `BatchRandom`; a transform called
without one uses its own seed and a call counter.
"""
from __future__ import annotations

import numpy as np

from ..backend import device_of, resolve_dtype, xp_of
from ..errors import DataError, GpunetValueError, ShapeError

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix_int(z: int) -> int:
    """SplitMix64 finalizer on a Python int (host side: key derivation)."""
    z = (z + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def batch_key(*parts: int) -> int:
    """One 64-bit key from a tuple of non-negative ints, e.g. (seed, epoch, rank, batch)."""
    key = 0
    for p in parts:
        key = _mix_int(key ^ (int(p) & _M64))
    return key


class BatchRandom:
    """Uniform draws on the array module `xp`, a pure function of (key, draw number)."""

    def __init__(self, xp, key: int):
        self.xp, self.key, self.draws = xp, int(key) & _M64, 0

    def uniform(self, shape) -> "xp.ndarray":
        """float64 samples in [0, 1), top 53 bits of SplitMix64(counter)."""
        xp, u64 = self.xp, np.uint64
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        sub = batch_key(self.key, self.draws)
        self.draws += 1
        z = xp.arange(int(np.prod(shape)), dtype=xp.uint64) * u64(_GOLDEN) + u64(sub)
        z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
        z = z ^ (z >> u64(31))
        return ((z >> u64(11)).astype(xp.float64) * (1.0 / (1 << 53))).reshape(shape)

    def integers(self, high: int, shape) -> "xp.ndarray":
        """int64 samples in [0, high)."""
        u = self.uniform(shape)
        return self.xp.minimum((u * high).astype(self.xp.int64), high - 1)


class Transform:
    """A batch transform: `t(x, rng=None) -> x` on x of shape (B, C, H, W)."""
    seed = 0

    def _rng(self, x, rng):
        if rng is not None:
            return rng
        self._calls = getattr(self, "_calls", 0) + 1
        return BatchRandom(xp_of(x), batch_key(self.seed, self._calls))

    def _check4d(self, x):
        if x.ndim != 4:
            raise ShapeError(f"{self!r} expected a batch (B, C, H, W), got shape {tuple(x.shape)}")


def _pair(v, arg, owner):
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) and p > 0 for p in pair):
        raise GpunetValueError(f"{owner}: {arg} expected a positive int or (h, w), got {v!r}")
    return int(pair[0]), int(pair[1])


class RandomCrop(Transform):
    """Zero-pad by `padding` on each side, then take a random size×size window per sample."""

    def __init__(self, size, padding: int = 0, seed: int = 0):
        self.size = _pair(size, "size", "RandomCrop")
        if not isinstance(padding, (int, np.integer)) or padding < 0:
            raise GpunetValueError(f"RandomCrop: padding expected a non-negative int, got {padding!r}")
        self.padding, self.seed = int(padding), seed

    def __call__(self, x, rng=None):
        self._check4d(x)
        xp, p, (h, w) = xp_of(x), self.padding, self.size
        B, C, H, W = x.shape
        if h > H + 2 * p or w > W + 2 * p:
            raise ShapeError(f"{self!r}: crop {h}x{w} is larger than the padded input {H + 2 * p}x{W + 2 * p}")
        if p:
            padded = xp.zeros((B, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
            padded[:, :, p:p + H, p:p + W] = x
            x = padded
        rng = self._rng(x, rng)
        top = rng.integers(x.shape[2] - h + 1, (B,))
        left = rng.integers(x.shape[3] - w + 1, (B,))
        rows = top[:, None] + xp.arange(h)            # (B, h)
        cols = left[:, None] + xp.arange(w)           # (B, w)
        b = xp.arange(B)[:, None, None, None]
        c = xp.arange(C)[None, :, None, None]
        return x[b, c, rows[:, None, :, None], cols[:, None, None, :]]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomFlip(Transform):
    """Mirror each sample left-right with probability p (the W axis)."""

    def __init__(self, p: float = 0.5, seed: int = 0):
        if not 0.0 <= float(p) <= 1.0:
            raise GpunetValueError(f"RandomFlip: p expected a probability in [0, 1], got {p!r}")
        self.p, self.seed = float(p), seed

    def __call__(self, x, rng=None):
        self._check4d(x)
        flip = self._rng(x, rng).uniform((x.shape[0],)) < self.p
        return xp_of(x).where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomFlip(p={self.p})"


class CenterCrop(Transform):
    """The central size×size window (deterministic; for evaluation, e.g. 24×24 of 32×32)."""

    def __init__(self, size):
        self.size = _pair(size, "size", "CenterCrop")

    def __call__(self, x, rng=None):
        self._check4d(x)
        (h, w), (H, W) = self.size, x.shape[2:]
        if h > H or w > W:
            raise ShapeError(f"{self!r}: crop {h}x{w} is larger than the input {H}x{W}")
        top, left = (H - h) // 2, (W - w) // 2
        return x[:, :, top:top + h, left:left + w]

    def __repr__(self):
        return f"CenterCrop(size={self.size})"


class Normalize(Transform):
    """Per-channel standardisation (x - mean[c]) / std[c], mean and std moved once per device."""

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.shape != self.std.shape or self.mean.ndim != 1 or np.any(self.std <= 0):
            raise GpunetValueError(f"Normalize: expected mean and std of equal length C with std > 0, "
                                   f"got mean {self.mean.tolist()} and std {self.std.tolist()}")
        self._cache = {}

    def __call__(self, x, rng=None):
        C = len(self.mean)
        if x.ndim < 2 or x.shape[1] != C:
            raise ShapeError(f"{self!r} expected (B, {C}, ...), got shape {tuple(x.shape)}")
        dev = device_of(x)
        key = (dev.name, np.dtype(x.dtype).str)
        if key not in self._cache:
            shape = (1, C) + (1,) * (x.ndim - 2)
            self._cache[key] = (dev.asarray(self.mean.reshape(shape), dtype=x.dtype),
                                dev.asarray((1.0 / self.std).reshape(shape), dtype=x.dtype))
        mean, inv_std = self._cache[key]
        return (x - mean) * inv_std

    def __repr__(self):
        return f"Normalize(mean={np.round(self.mean, 4).tolist()}, std={np.round(self.std, 4).tolist()})"


class Compose(Transform):
    """Apply transforms in order, sharing one BatchRandom (its draw counter keeps them apart)."""

    def __init__(self, transforms, seed: int = 0):
        self.transforms, self.seed = list(transforms), seed

    def __call__(self, x, rng=None):
        rng = self._rng(x, rng)
        for t in self.transforms:
            x = t(x, rng) if isinstance(t, Transform) else t(x)
        return x

    def __repr__(self):
        return f"Compose({self.transforms!r})"


# ---------------------------------------------------------------- helpers

def scale_to_unit(x, dtype=None):
    """uint8 0..255 -> float in [0, 1] (x / 255), on x's device."""
    dt = resolve_dtype(dtype)
    return x.astype(dt) * dt.type(1 / 255)


def channel_stats(dataset, scale=1 / 255, chunk: int = 4096):
    """Per-channel mean and std (float64, shape (C,)) of `scale * x`, on the host.

    Summed in float64 over chunks so that a large uint8 set never becomes a float copy.
    A (N, H, W) dataset has one channel.
    """
    x = dataset.x if hasattr(dataset, "x") else np.asarray(dataset)
    x = x[:, None] if x.ndim == 3 else x
    if len(x) == 0:
        raise DataError("channel_stats: expected a non-empty dataset, got 0 samples")
    axes = (0,) + tuple(range(2, x.ndim))
    s = np.zeros(x.shape[1]); ss = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].astype(np.float64)
        s += part.sum(axis=axes)
        ss += np.square(part).sum(axis=axes)
    count = x.size / x.shape[1]
    mean = s / count
    var = np.maximum(ss / count - mean ** 2, 0.0)
    return mean * scale, np.sqrt(var) * scale


def one_hot(y, num_classes: int, dtype=None):
    """int labels (N,) -> (N, num_classes) float on y's device."""
    xp = xp_of(y)
    if len(y):
        # Always checked: NumPy wraps negative labels and CuPy's scatter wraps every bad one.
        lo, hi = int(y.min()), int(y.max())  # sync on a GPU
        if lo < 0 or hi >= num_classes:
            raise GpunetValueError(f"one_hot: labels expected in [0, {num_classes}), got min {lo} and max {hi}")
    out = xp.zeros((len(y), num_classes), dtype=resolve_dtype(dtype))
    out[xp.arange(len(y)), y] = 1
    return out


def random_split(dataset, val, seed: int = 0):
    """Split into (train, val) with a seeded permutation; `val` is a fraction in (0, 1) or a count."""
    n = len(dataset)
    if isinstance(val, (float, np.floating)) and 0.0 < val < 1.0:
        n_val = int(round(n * float(val)))
    elif isinstance(val, (int, np.integer)) and not isinstance(val, bool):
        n_val = int(val)
    else:
        raise GpunetValueError(f"random_split: val expected a fraction in (0, 1) or an int count, got {val!r}")
    if not 0 < n_val < n:
        raise GpunetValueError(f"random_split: val expected to leave both parts non-empty for "
                               f"{n} samples, got {val!r} ({n_val} validation samples)")
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return (dataset.subset(np.sort(perm[n_val:]), split="train"),
            dataset.subset(np.sort(perm[:n_val]), split="val"))
