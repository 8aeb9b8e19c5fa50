"""IDX files (MNIST, Fashion-MNIST): reader, canonical checksums, mirrors.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/), all integers big-endian:

    bytes 0-1   0x0000
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 .. 4+4d   d uint32 sizes
    rest        prod(sizes) elements, row-major

MNIST images have magic 0x00000803 (uint8, 3-D: N×28×28); labels 0x00000801 (uint8, N).
Files may be gzipped (detected by the 1f 8b gzip magic, not by the name). The SHA-256
checked is that of the *decompressed* bytes, so a re-gzipped copy still verifies.
Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, MIT) uses the same names and layout.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import fetch, gz

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801

FILES = {  # split -> (images, labels), canonical names without .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the decompressed canonical files.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# Base URLs tried in order; each serves "<file>.gz". Tests monkeypatch this table.
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/",
              "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
}

CLASSES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


MAX_IDX_BYTES = 1 << 34  # 16 GiB: far above any IDX dataset; a header beyond it is corrupt


def declared_size(head: bytes, magic: int | None = None):
    """The total file size an IDX header declares, or None when `head` is not one (of `magic`)."""
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or len(head) < 4 + 4 * head[3]:
        return None
    if magic is not None and struct.unpack(">I", bytes(head[:4]))[0] != magic:
        return None
    ndim = head[3]
    dims = struct.unpack(f">{ndim}I", bytes(head[4:4 + 4 * ndim]))
    return 4 + 4 * ndim + math.prod(dims) * np.dtype(IDX_TYPES[head[2]]).itemsize  # Python ints: exact


def read_bytes(path, magic: int | None = None) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic.

    Bounded by the header: the header is read first, the size it declares is checked
    (at most MAX_IDX_BYTES), and no more than that is decompressed or read. A gzip file
    is read to its end, so its CRC-32 is checked."""
    path = Path(path)
    try:
        if not gz.is_gzip(path):
            with open(path, "rb") as f:
                head = f.read(4)
                head += f.read(4 * head[3] if len(head) == 4 else 0)
                size = declared_size(head, magic)
                _check_declared(path, head, size)
                return head + f.read((size if size is not None else 4 + 4 * 255) + 1 - len(head))
        with gz.Gunzip(path) as g:
            head = bytes(g.fill(4))
            head = bytes(g.fill(4 + 4 * head[3])) if len(head) == 4 else head
            size = declared_size(head, magic)
            _check_declared(path, head, size)
            if size is None:  # not an IDX header: parse_idx names what is wrong
                return bytes(g.fill(4 + 4 * 255))
            data = bytes(g.fill(size + 1))
            if len(data) > size:
                raise DataError(f"{path}: has trailing bytes: its header declares {size} bytes, but the gzip "
                                f"stream holds more")
            return data  # fill() ran to the end of the stream: the CRC-32 trailer is checked
    except OSError as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e.strerror or e})") from e


def _check_declared(path, head, size) -> None:
    if size is not None and size > MAX_IDX_BYTES:
        dims = struct.unpack(f">{head[3]}I", bytes(head[4:4 + 4 * head[3]]))
        raise DataError(f"{path}: header declares {'x'.join(map(str, dims))} elements ({size} bytes), "
                        f"expected at most {MAX_IDX_BYTES} bytes; refused before allocating (corrupt header?)")


def parse_idx(data: bytes, path, magic: int | None = None) -> np.ndarray:
    """Check the header against `magic` and the file size, then view the elements."""
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic")
    got_magic = struct.unpack(">I", data[:4])[0]
    code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or code not in IDX_TYPES or (magic is not None and got_magic != magic):
        want = f"0x{magic:08x}" if magic is not None else "0x0000TTDD (TT a type code, DD the rank)"
        raise DataError(f"{path}: wrong magic number: expected {want}, got 0x{got_magic:08x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header: expected {header} bytes for {ndim} dims, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_TYPES[code])
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: header says {'x'.join(map(str, dims))} elements of "
                        f"{dtype.itemsize} byte(s), so expected {expected} bytes, got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # native order, and a writable copy


def read_idx(path, magic: int | None = None, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzipped); structure first, then the checksum."""
    data = read_bytes(path, magic)
    arr = parse_idx(data, path, magic)
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise DataError(f"{path}: checksum mismatch: expected SHA-256 of the decompressed bytes "
                            f"= {sha256}, got {got}")
    return arr


# ---------------------------------------------------------------- MNIST-family datasets

def _find(folder: Path, base: str) -> Path | None:
    for cand in (folder / f"{base}.gz", folder / base):
        if cand.is_file():
            return cand
    return None


def _probe(split):
    def probe(folder: Path):
        paths = [_find(folder, base) for base in FILES[split]]
        missing = [f"{base}[.gz]" for base, p in zip(FILES[split], paths) if p is None]
        return f"missing {', '.join(missing)}" if missing else paths
    return probe


def _fetcher(name, split, progress=True):
    def fetch_split(cache: Path):
        for base in FILES[split]:
            if _find(cache, base) is None:
                urls = [m + f"{base}.gz" for m in MIRRORS[name]]
                check = fetch.Checksum("sha256", SHA256[name][base], gunzip=True)
                fetch.download_first(urls, cache / f"{base}.gz", check, progress)
    return fetch_split


def load_idx_dataset(name: str, split: str, root=None, download: bool = True):
    """(x uint8 N×28×28, y int64 N, classes) for "mnist" or "fashion-mnist"."""
    hint = " and ".join(f"{b}[.gz]" for b in FILES[split])
    images, labels = fetch.locate(name, root, _probe(split),
                                  _fetcher(name, split) if download else None, hint=hint)
    x = read_idx(images, IMAGES_MAGIC, SHA256[name][FILES[split][0]])
    y = read_idx(labels, LABELS_MAGIC, SHA256[name][FILES[split][1]])
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y.astype(np.int64), CLASSES[name]
