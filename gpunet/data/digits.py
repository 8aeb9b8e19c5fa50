"""The UCI optical digits, shipped inside the package so a first run needs no network.

E. Alpaydin and C. Kaynak (1998), "Optical Recognition of Handwritten Digits", UCI
Machine Learning Repository, CC BY 4.0 (see DIGITS_LICENSE.txt). `digits.csv.gz` holds
1797 rows of 64 pixel values 0-16 (an 8×8 image, row-major) followed by the label.

To match the other datasets (uint8 images, 0-255) pixels are scaled ×16 and clipped at
255, so 0..15 -> 0..240 and 16 -> 255. x is (N, 8, 8).

Split (fixed forever, so results stay comparable): a NumPy PCG64(1998) permutation of
the 1797 rows; its first 360 rows are "test", the other 1437 "train"; each split keeps
the file order.
"""
from __future__ import annotations

import gzip
import io
from importlib import resources

import numpy as np

from ..errors import DataError

N_SAMPLES, N_TEST, SPLIT_SEED = 1797, 360, 1998
CLASSES = tuple(str(i) for i in range(10))
FILE = "digits.csv.gz"


def _read_all() -> tuple[np.ndarray, np.ndarray]:
    ref = resources.files(__package__) / FILE
    try:
        with ref.open("rb") as f:
            text = gzip.decompress(f.read()).decode("ascii")
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{ref}: the packaged digits file is unreadable ({type(e).__name__}: {e}); "
                        "reinstall gpunet") from e
    if table.shape != (N_SAMPLES, 65):
        raise DataError(f"{ref}: expected {N_SAMPLES} rows of 64 pixels + 1 label, got shape {table.shape}")
    x = np.clip(table[:, :64] * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8)
    return x, table[:, 64].astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    """Row numbers of `split` ("train" or "test") in digits.csv.gz, ascending."""
    perm = np.random.Generator(np.random.PCG64(SPLIT_SEED)).permutation(N_SAMPLES)
    rows = perm[:N_TEST] if split == "test" else perm[N_TEST:]
    return np.sort(rows)


def load_digits(split: str):
    """(x uint8 N×8×8, y int64 N, classes)."""
    x, y = _read_all()
    rows = split_indices(split)
    return x[rows], y[rows], CLASSES
