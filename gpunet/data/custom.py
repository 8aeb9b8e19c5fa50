"""Your own data: `npz:FILE.npz` and `folder:DIR`, with the checks of the built-in sets.

    npz:FILE.npz   arrays x (N, H, W) or (N, C, H, W) and y (N,) integer labels; optional
                   x_test and y_test. x holds pixels 0-255 (any integer or float dtype), or
                   floats in [0, 1], which are scaled to 0-255 (the loader scales by 1/255).
    folder:DIR     DIR/<class>/*.png, one subfolder per class (sorted names are the classes),
                   or DIR/train/<class>/ and DIR/test/<class>/. All images share one size.
                   PNG is read with matplotlib (pip install matplotlib).

Without a test split in the data, a fixed fifth of the samples (seed 0) is the test split,
so "train" and "test" never overlap and every run sees the same split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

PREFIXES = ("npz:", "folder:")
TEST_SHARE = 0.2


def is_custom(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIXES)


def short_name(name: str) -> str:
    """'npz:data/my_set.npz' -> 'my_set' (for run folder names)."""
    return Path(name.split(":", 1)[1].rstrip("/")).stem or "data"


def _split(x, y, split):
    order = np.random.default_rng(0).permutation(len(y))
    n_test = max(1, int(round(len(y) * TEST_SHARE)))
    rows = order[:n_test] if split == "test" else order[n_test:]
    return x[np.sort(rows)], y[np.sort(rows)]


def _check_x(x, where):
    if x.ndim not in (3, 4):
        raise DataError(f"{where}: x expected images (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind not in "uif":
        raise DataError(f"{where}: x expected numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(f"{where}: x expected finite values, got NaN or Inf")
        if x.size and x.min() >= 0 and x.max() <= 1:  # [0, 1] floats: to the 0-255 scale the loader expects
            return (x * 255).astype(np.float32)
        return x.astype(np.float32, copy=False)
    return x


def load_npz(path, split: str):
    path = Path(path)
    where = f"dataset npz:{path}"
    if not path.is_file():
        raise DataError(f"{where}: expected an .npz file with arrays x and y, found no file there")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - a foreign or torn file
        raise DataError(f"{where}: not a readable .npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{where}: expected arrays x and y, got {sorted(arrays)} (missing {missing})")
    if split == "test" and "x_test" in arrays and "y_test" in arrays:
        x, y = arrays["x_test"], arrays["y_test"]
    elif "x_test" in arrays and "y_test" in arrays:
        x, y = arrays["x"], arrays["y"]
    else:
        x, y = arrays["x"], arrays["y"]
        if len(x) != len(y):
            raise DataError(f"{where}: x and y expected the same length N, got x {x.shape} and y {y.shape}")
        x, y = _split(x, y, split)
    return _check_x(np.asarray(x), where), np.asarray(y), None


def _read_png(path):
    try:
        from matplotlib.image import imread
    except ImportError:
        raise DataError("dataset folder: reading PNG images needs matplotlib: pip install matplotlib") from None
    try:
        img = imread(str(path))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"dataset folder: cannot read image {path} ({type(e).__name__}: {e})") from None
    if img.ndim == 3:
        img = img[..., :3].transpose(2, 0, 1)  # HWC (RGB[A]) -> CHW, alpha dropped
    return img


def load_folder(root, split: str):
    root = Path(root)
    where = f"dataset folder:{root}"
    base = root / split if (root / "train").is_dir() and (root / "test").is_dir() else root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not classes:
        raise DataError(f"{where}: expected one subfolder of .png images per class, found none in {base}")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for png in sorted((base / cls).glob("*.png")):
            xs.append(_read_png(png))
            ys.append(label)
    if not xs:
        raise DataError(f"{where}: expected .png images in the class folders {classes}, found none")
    shapes = sorted({x.shape for x in xs})
    if len(shapes) > 1:
        raise DataError(f"{where}: expected images of one size, got {len(shapes)} sizes: {shapes[:3]}")
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    if base is root:
        x, y = _split(x, y, split)
    return _check_x(x, where), y, classes


def load(name: str, split: str):
    """(x, y, classes or None) for `npz:FILE` or `folder:DIR`."""
    kind, _, path = name.partition(":")
    if not path:
        raise DataError(f"dataset {name!r}: expected {kind}:PATH with a path after the colon")
    return load_npz(path, split) if kind == "npz" else load_folder(path, split)
