"""`Dataset` (host arrays: uint8 images, int64 labels) and `load(name, split, ...)`.

    ds = gn.data.load("mnist", split="train")     # x (60000, 28, 28) uint8, y (60000,) int64
    ds.x, ds.y, ds.classes, ds.name, ds.split, len(ds)

| name            | x                   | train / test  | reader                        |
|-----------------|---------------------|---------------|-------------------------------|
| "mnist"         | N×28×28 uint8       | 60000 / 10000 | idx.py (gz or raw IDX)        |
| "fashion-mnist" | N×28×28 uint8       | 60000 / 10000 | idx.py                        |
| "cifar10"       | N×3×32×32 uint8     | 50000 / 10000 | cifar.py (binary batches)     |
| "digits"        | N×8×8 uint8 (0-255) | 1437 / 360    | digits.py (inside the package)|

Where the files are looked for, and how downloads are checked: see fetch.py.
Datasets stay on the host; `DataLoader` moves them to a device.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError, GpunetValueError

NAMES = ("mnist", "fashion-mnist", "cifar10", "digits")
SPLITS = ("train", "test")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}


class Dataset:
    """Images `x` (N, H, W) or (N, C, H, W) and int64 labels `y` (N,), on the host."""

    def __init__(self, x, y, classes=None, name: str = "", split: str = ""):
        x, y = np.asarray(x), np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"Dataset {name!r}: y must be 1-D (N,), got shape {y.shape}")
        if x.ndim < 1 or len(x) != len(y):
            raise DataError(f"Dataset {name!r}: x and y must have the same length N, "
                            f"got x {x.shape} and y {y.shape}")
        if y.dtype.kind not in "iu":
            raise DataError(f"Dataset {name!r}: y must hold integer labels, got dtype {y.dtype}")
        hi = len(classes) if classes is not None else np.iinfo(np.int64).max + 1  # labels must fit int64
        bad = np.flatnonzero((y < 0) | (y >= hi))
        if bad.size:  # a bad label here would only surface mid-epoch, after some updates
            want = f"[0, {len(classes)}) (one per class name)" if classes is not None else ">= 0 (and < 2^63)"
            raise DataError(f"Dataset {name!r}: y expected labels in {want}, got {int(y[bad[0]])} "
                            f"at index {int(bad[0])} ({bad.size} bad; dtype {y.dtype})")
        self.x = x
        self.y = y.astype(np.int64, copy=False)
        self.classes = tuple(classes) if classes is not None else \
            tuple(str(c) for c in range(int(self.y.max()) + 1 if len(self.y) else 0))
        self.name, self.split = name, split

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices, split: str | None = None) -> "Dataset":
        """A new Dataset holding rows `indices` (copies)."""
        idx = np.asarray(indices)
        return Dataset(self.x[idx], self.y[idx], self.classes, self.name,
                       self.split if split is None else split)

    def __getitem__(self, i):
        """`ds[i]` -> (x[i], y[i]); `ds[slice or index array]` -> a Dataset."""
        if isinstance(i, (int, np.integer)):
            return self.x[i], self.y[i]
        return self.subset(np.arange(len(self))[i])

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"x={self.x.shape} {self.x.dtype}, classes={len(self.classes)})")


def _canonical(name) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in NAMES:
        raise GpunetValueError(f"name: expected one of {', '.join(map(repr, NAMES))}, got {name!r}")
    return key


def load(name: str, split: str = "train", root=None, download: bool = True) -> Dataset:
    """Load dataset `name` ("mnist", "fashion-mnist", "cifar10", "digits") split "train"/"test".

    root: a folder holding the files (or a `<name>/` subfolder); searched first.
    download: fetch from the canonical source into ~/.cache/gpunet/<name> when the
    files are nowhere on disk (checksummed before they are kept). "digits" ships inside
    the package and ignores both.
    """
    if split not in SPLITS:
        raise GpunetValueError(f"split: expected 'train' or 'test', got {split!r}")
    from . import custom
    if custom.is_custom(name):  # npz:FILE.npz or folder:DIR (see custom.py)
        x, y, classes = custom.load(name, split)
        return Dataset(x, y, classes, name=name, split=split)
    key = _canonical(name)
    if key == "digits":
        from .digits import load_digits
        x, y, classes = load_digits(split)
    elif key == "cifar10":
        from .cifar import load_cifar10
        x, y, classes = load_cifar10(split, root, download)
    else:
        from .idx import load_idx_dataset
        x, y, classes = load_idx_dataset(key, split, root, download)
    return Dataset(x, y, classes, name=key, split=split)
