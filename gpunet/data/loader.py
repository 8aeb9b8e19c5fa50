"""DataLoader: seeded, sharded mini-batches in NCHW float, made on the device.

    loader = gn.data.DataLoader(ds, batch_size=128, device=dev, seed=0)
    for epoch in range(E):
        loader.set_epoch(epoch)            # optional: without it an internal counter advances
        for x, y in loader:                # x (B, C, H, W) float32 in [0, 1], y (B,) int64
            ...

Residency. A dataset whose uint8 images plus int64 labels fit `resident_budget_bytes`
is copied to the device once; each batch is then a gather (`take`) of uint8 rows, a cast
to float and a multiply by `scale`, all on the device: 4× less memory than float32 and
no host work per step. A larger dataset is gathered on the host and sent per batch.

Order. Each epoch's permutation is drawn on the host, Generator(PCG64([seed, epoch])),
so CPU and GPU runs see the same order, and sent to the device once per epoch. Batches
are then slices of that index array: no host<->device sync per batch.

Sharding by (rank, world_size). The permutation is cut to floor(N / world_size) * world_size
samples (the remainder, at most world_size - 1 samples, is dropped for that epoch; which
samples are dropped changes with each shuffled epoch) and rank r takes every
world_size-th index starting at r. Shards are therefore disjoint and equal, and batch i
of all ranks together is exactly batch i of a single loader with batch_size × world_size
(when that batch is full), which is what makes N replicas ≡ 1 device with the big batch.

Splitting batches (`split_batches=True`, what multi-process training uses). Then
`batch_size` is the *global* batch: nothing is dropped, every rank walks the same
batches of the whole permutation, and rank r keeps its contiguous part of each,
q + (1 if r < b mod world_size else 0) samples of a batch of b (q = b // world_size;
a part may be empty). Together the ranks see exactly the batches of one loader.

Resume. `iterate(epoch, start_batch)` replays an epoch from any batch, with the same
order and (see transforms.py) the same augmentation draws.
"""
from __future__ import annotations

import math

import numpy as np

from ..argcheck import integer
from ..backend import device as _device, resolve_dtype
from ..errors import DataError, GpunetValueError
from .transforms import BatchRandom, Transform, batch_key


def _int_arg(value, arg, low=None):
    return integer("DataLoader", arg, value, low)


class DataLoader:
    """Mini-batches (x, y) on `device`; see the module docstring for order, shards and residency."""

    def __init__(self, dataset, batch_size, shuffle=True, drop_last=False, device=None, seed=0,
                 rank=0, world_size=1, transform=None, dtype=None, scale=1 / 255,
                 resident_budget_bytes=2**30, split_batches=False):
        x, y = (dataset.x, dataset.y) if hasattr(dataset, "x") else dataset
        x, y = np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=np.int64)
        if len(x) == 0:
            raise DataError(f"DataLoader: dataset expected at least one sample, got an empty dataset "
                            f"{getattr(dataset, 'name', '')!r}")
        if len(x) != len(y) or y.ndim != 1:
            raise DataError(f"DataLoader: expected x (N, ...) and y (N,), got {x.shape} and {y.shape}")
        self.batch_size = _int_arg(batch_size, "batch_size", 1)
        self.world_size = _int_arg(world_size, "world_size", 1)
        self.rank = _int_arg(rank, "rank", 0)
        if self.rank >= self.world_size:
            raise GpunetValueError(f"DataLoader: rank expected in [0, {self.world_size}) for "
                                   f"world_size={self.world_size}, got {rank}")
        self.seed = _int_arg(seed, "seed", 0)
        self.split_batches = bool(split_batches)
        if self.split_batches and self.world_size > len(x):
            raise GpunetValueError(f"DataLoader: world_size expected <= the {len(x)} samples (every rank needs "
                                   f"at least one), got {world_size}")
        self.num_samples = len(x) if self.split_batches else len(x) // self.world_size  # per shard
        if self.num_samples == 0:
            raise GpunetValueError(f"DataLoader: world_size expected <= the {len(x)} samples, got {world_size}")
        if drop_last and self.batch_size > self.num_samples:
            raise GpunetValueError(f"DataLoader: batch_size expected <= {self.num_samples} (samples per shard) "
                                   f"with drop_last=True, got {batch_size}: no batch would be yielded")
        if scale is not None and not isinstance(scale, (int, float, np.floating, np.integer)):
            raise GpunetValueError(f"DataLoader: scale expected a number or None, got {scale!r}")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.device = _device(device)
        self.dtype = resolve_dtype(dtype)
        self.scale = None if scale is None or scale == 1 else self.dtype.type(scale)
        self.transform = transform
        self.dataset_size = len(x)
        self.resident = x.nbytes + y.nbytes <= resident_budget_bytes
        self._epoch = 0
        if self.resident:
            with self.device:  # the one host->device copy of the data
                self._x, self._y = self.device.asarray(x), self.device.asarray(y)
        else:
            self._x, self._y = x, y

    # ---------------------------------------------------------------- order

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    @property
    def epoch(self) -> int:
        """The epoch the next full pass of `iter(loader)` will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (and so the permutation) of the next pass, like DistributedSampler."""
        self._epoch = _int_arg(epoch, "epoch", 0)

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for `epoch`, in batch order (host int64 array)."""
        n = self.dataset_size
        if self.shuffle:
            order = np.random.Generator(np.random.PCG64([self.seed, int(epoch)])).permutation(n)
        else:
            order = np.arange(n)
        if self.split_batches:
            return np.ascontiguousarray(order, dtype=np.int64)
        used = self.num_samples * self.world_size
        return np.ascontiguousarray(order[:used][self.rank::self.world_size], dtype=np.int64)

    # ---------------------------------------------------------------- batches

    def __iter__(self):
        epoch = self._epoch
        yield from self.iterate(epoch)
        self._epoch = epoch + 1  # only a full pass advances the counter

    def iterate(self, epoch: int, start_batch: int = 0):
        """Yield (x, y) batches of `epoch` from batch `start_batch` (for exact resume)."""
        epoch = _int_arg(epoch, "epoch", 0)
        start_batch = _int_arg(start_batch, "start_batch", 0)
        if start_batch > len(self):
            raise GpunetValueError(f"DataLoader: start_batch expected in [0, {len(self)}], got {start_batch}")
        idx = self.indices(epoch)
        if self.resident:
            with self.device:
                idx = self.device.asarray(idx)  # once per epoch
        b = self.batch_size
        for i in range(start_batch, len(self)):
            sel = idx[i * b:(i + 1) * b]
            if self.split_batches:
                lo, hi = self.part(sel.shape[0])
                sel = sel[lo:hi]
            with self.device:
                batch = self._make_batch(sel, epoch, i)
            yield batch  # outside the device context: the caller's code is not pinned to it

    def part(self, size: int) -> tuple:
        """[lo, hi) of this rank's part of a global batch of `size` (split_batches)."""
        q, rem = divmod(int(size), self.world_size)
        lo = self.rank * q + min(self.rank, rem)
        return lo, lo + q + (1 if self.rank < rem else 0)

    def _make_batch(self, sel, epoch: int, i: int):
        xp = self.device.xp
        if self.resident:
            xb, yb = xp.take(self._x, sel, axis=0), xp.take(self._y, sel, axis=0)
        else:  # host gather, then one transfer each
            xb, yb = self.device.asarray(self._x[sel]), self.device.asarray(self._y[sel])
        xb = xb.astype(self.dtype)
        if self.scale is not None:
            xb *= self.scale
        if xb.ndim == 3:
            xb = xb[:, None]  # (B, H, W) -> (B, 1, H, W)
        if self.transform is not None:
            if isinstance(self.transform, Transform):
                rng = BatchRandom(xp, batch_key(self.seed, epoch, self.rank, i))
                xb = self.transform(xb, rng)
            else:
                xb = self.transform(xb)
        return xb, yb

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self._epoch, "rank": self.rank, "world_size": self.world_size,
                "split_batches": self.split_batches}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"])

    def __repr__(self):
        return (f"DataLoader(n={self.dataset_size}, batch_size={self.batch_size}, batches={len(self)}, "
                f"shuffle={self.shuffle}, device={self.device.name}, resident={self.resident}, "
                f"rank={self.rank}/{self.world_size})")
