"""CIFAR-10, binary distribution only (no pickle anywhere).

Krizhevsky (2009), "Learning Multiple Layers of Features from Tiny Images";
https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 binary version").

`cifar-10-binary.tar.gz` unpacks to `cifar-10-batches-bin/`:

    data_batch_1.bin .. data_batch_5.bin   train, 10000 records each
    test_batch.bin                         test, 10000 records
    batches.meta.txt                       the 10 class names, one per line

A record is 3073 bytes: 1 label byte (0-9), then 3072 pixel bytes stored channel-major,
1024 red, then 1024 green, then 1024 blue, each 32×32 row-major. So a record's pixels
reshape directly to (3, 32, 32), which is NCHW with no transpose.

Accepted layouts in a searched folder: `cifar-10-batches-bin/*.bin`, the `*.bin` files
directly, or the `.tar.gz` itself (members are read in memory after every member passes
the safe-member check, nothing is written). Local batch files are checked structurally
(record size, label range); the archive's MD5 (the checksum the dataset page publishes)
is checked when it is downloaded, which also unpacks it into the cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from . import fetch

RECORD = 1 + 3 * 32 * 32
FOLDER = "cifar-10-batches-bin"
ARCHIVE = "cifar-10-binary.tar.gz"
FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
META = "batches.meta.txt"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The dataset page publishes MD5 only; 170052171 bytes.
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]  # tests monkeypatch this


def parse_records(data: bytes, path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> (x uint8 N×3×32×32, y int64 N)."""
    if len(data) == 0 or len(data) % RECORD:
        raise DataError(f"{path}: truncated or not a CIFAR-10 binary batch: expected a positive "
                        f"multiple of {RECORD} bytes (1 label + 3x32x32 pixels), got {len(data)}")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    y = rec[:, 0].astype(np.int64)
    bad = np.flatnonzero(y >= len(CLASSES))
    if bad.size:
        raise DataError(f"{path}: record {bad[0]} has label {y[bad[0]]}, expected 0-9 (corrupt file?)")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), y


def parse_meta(text: str, path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != len(CLASSES):
        raise DataError(f"{path}: expected {len(CLASSES)} class names, one per line, got {len(names)}")
    return names


# ---------------------------------------------------------------- sources

class _DirSource:
    """Batch files in a folder."""

    def __init__(self, folder: Path, files):
        self.folder, self.files = folder, files

    def read(self, fname: str) -> bytes:
        path = self.folder / fname
        try:
            return path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: unreadable ({e})") from e

    def meta(self):
        path = self.folder / META
        return parse_meta(path.read_text(errors="replace"), path) if path.is_file() else CLASSES

    def label(self, fname):
        return self.folder / fname


class _TarSource:
    """Batch files read straight out of the archive (checked members only)."""

    def __init__(self, archive: Path, files):
        self.archive, self.files = archive, files
        self.tar = fetch.open_tar(archive)
        self.members = {Path(m.name).name: m for m in self.tar.getmembers() if m.isfile()}

    def read(self, fname: str) -> bytes:
        if fname not in self.members:
            held = sorted(self.members)
            raise DataError(f"{self.archive}: expected a member {FOLDER}/{fname}, but the archive (whose gzip "
                            f"CRC is intact) holds {len(held)} files: {held[:8]}{' ...' if len(held) > 8 else ''}")
        try:
            return self.tar.extractfile(self.members[fname]).read()
        except (OSError, EOFError) as e:
            raise DataError(f"{self.archive}: member {fname} is unreadable or truncated ({e})") from e

    def meta(self):
        if META not in self.members:
            return CLASSES
        return parse_meta(self.read(META).decode(errors="replace"), f"{self.archive}:{META}")

    def label(self, fname):
        return f"{self.archive}:{FOLDER}/{fname}"


def _probe(split):
    def probe(folder: Path):
        for sub in (folder / FOLDER, folder):
            if all((sub / f).is_file() for f in FILES[split]):
                return ("dir", sub)
        if (folder / ARCHIVE).is_file():
            return ("tar", folder / ARCHIVE)
        return f"missing {FOLDER}/{{{','.join(FILES[split])}}} and {ARCHIVE}"
    return probe


def _fetch(cache: Path, progress: bool = True):
    archive = cache / ARCHIVE
    if not archive.is_file():
        fetch.download_first(URLS, archive, fetch.Checksum("md5", ARCHIVE_MD5), progress)
    fetch.safe_extract(archive, cache)


def load_cifar10(split: str, root=None, download: bool = True):
    """(x uint8 N×3×32×32, y int64 N, classes) from the binary distribution."""
    kind, where = fetch.locate("cifar10", root, _probe(split), _fetch if download else None,
                               hint=f"{ARCHIVE} or {FOLDER}/ with {', '.join(FILES[split])}")
    src = _DirSource(where, FILES[split]) if kind == "dir" else _TarSource(where, FILES[split])
    try:
        parts = [parse_records(src.read(f), src.label(f)) for f in FILES[split]]
        classes = src.meta()
    finally:
        if kind == "tar":
            src.tar.close()
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, classes
