"""Checkpoints: weights, optimizer state and run metadata in one pickle-free `.npz`.

Layout of the archive (read with `numpy.load(allow_pickle=False)`):
    model/<state-dict key>      every parameter and buffer ("0.weight", ...)
    optim/<buffer key>          optimizer state arrays ("0.velocity", ...)
    __meta__                    UTF-8 JSON as a uint8 array: format version, the
                                optimizer's type/hyperparameters/step, and the
                                caller's **meta (epoch, step, RNG state, config)

A write is atomic: the archive goes to a temp file in the same folder, is fsync'ed,
then renamed over the target, and the folder is fsync'ed. A crash at any moment
leaves either the old checkpoint or the new one, never a torn file. Zip CRCs catch
corruption on read. Loading validates everything before it changes anything.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import backend
from .errors import CheckpointError, NonFiniteError
from .fileio import append_bytes, atomic_write_bytes, regular_file  # noqa: F401  (the first two re-exported: the old import path)

FORMAT = "gpunet-checkpoint"
VERSION = 1


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"checkpoint meta: cannot store {type(obj).__name__} as JSON")


def save_checkpoint(path, model, optimizer=None, *, allow_nonfinite=False, **meta) -> Path:
    """Save `model` (and `optimizer`) with JSON-able `meta` to `path` atomically. Returns the path.

    NaN/Inf in the weights or optimizer state raise NonFiniteError and nothing is written,
    so a diverged run never replaces its last good checkpoint (allow_nonfinite=True saves
    them anyway, e.g. to inspect a divergence).
    """
    arrays = {f"model/{k}": backend.to_numpy(v) for k, v in model.state_dict().items()}  # sync
    header = {"format": FORMAT, "version": VERSION, "model_keys": list(model.state_dict().keys()),
              "meta": meta}
    if optimizer is not None:
        state = optimizer.state_dict()
        header["optimizer"] = {k: v for k, v in state.items() if k != "buffers"}
        for k, v in state.get("buffers", {}).items():
            arrays[f"optim/{k}"] = backend.to_numpy(v)  # sync
    bad = [k for k, a in arrays.items() if a.dtype.kind in "fc" and not np.isfinite(a).all()]
    if bad and not allow_nonfinite:
        raise NonFiniteError(f"checkpoint {path}: expected finite weights and optimizer state, got NaN/Inf "
                             f"in {bad} (the run diverged); not written, so the file already there (if "
                             f"any) is kept. Pass allow_nonfinite=True to save it anyway.")
    try:
        blob = json.dumps(header, default=_json_default).encode()
    except TypeError as e:
        raise CheckpointError(f"save_checkpoint: meta must be JSON data: {e}") from None
    arrays["__meta__"] = np.frombuffer(blob, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


MAX_META_BYTES = 64 << 20       # the JSON record (history of a long run included)
MAX_MEMBER_BYTES = 1 << 31      # one array when the reader does not know the model
MAX_MEMBERS = 1 << 16
_NPY_HEADER_MAX = 1 << 16


def read_checkpoint(path, meta_only: bool = False, limits=None) -> tuple[dict, dict]:
    """Read and verify a checkpoint file: returns (header, arrays). Raises CheckpointError.

    Nothing is decompressed before the archive's directory has been checked: every member
    must be a plain `.npy` whose declared size is within `limits(name)` bytes (the caller
    knows its model: see load_checkpoint) or MAX_MEMBER_BYTES, and each array's own header
    (dtype, shape) must match the member's size exactly before its data is read, so a
    decompression bomb or a lying header is refused without allocating. Reading each
    member to its end checks its CRC. `meta_only` reads the __meta__ record alone.
    """
    path = Path(path)
    regular_file(path, "checkpoint", CheckpointError)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:2] == b"PK":
            raise CheckpointError(f"checkpoint {path}: expected a complete .npz archive, got a truncated or "
                                  f"corrupted file ({type(e).__name__}: {e})") from None
        raise CheckpointError(f"checkpoint {path}: expected a .npz (zip) archive, got a file that is not "
                              f"one (it starts with {head!r})") from None
    with zf:
        infos = _check_directory(zf, path, limits)
        header = _read_meta(zf, infos.pop("__meta__", None), path)
        arrays = {} if meta_only else {name: _read_npy(zf, info, path, name) for name, info in infos.items()}
    return header, arrays


def _check_directory(zf, path, limits) -> dict:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"checkpoint {path}: expected at most {MAX_MEMBERS} members, got {len(infos)}")
    out = {}
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise CheckpointError(f"checkpoint {path}: expected only .npy members, got {info.filename!r}")
        name = info.filename[:-4]
        if name in out:
            raise CheckpointError(f"checkpoint {path}: member {info.filename!r} appears twice")
        limit = MAX_META_BYTES if name == "__meta__" else (limits(name) if limits else MAX_MEMBER_BYTES)
        if info.file_size > limit:
            raise CheckpointError(f"checkpoint {path}: member {info.filename!r} declares {info.file_size} bytes "
                                  f"uncompressed, expected at most {limit} for this model; refused unread "
                                  f"(a corrupted file or a decompression bomb)")
        out[name] = info
    return out


def _read_npy(zf, info, path, name) -> np.ndarray:
    """One member's array, checked in this order: magic, header, dtype, size, data, CRC."""
    where = f"checkpoint {path}: member {name!r}"
    try:
        with zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = read_header(f, max_header_size=_NPY_HEADER_MAX)
            except (ValueError, SyntaxError, TypeError) as e:
                raise CheckpointError(f"{where}: expected a .npy array header, got an unreadable one ({e})") from None
            if dtype.hasobject:
                raise CheckpointError(f"{where}: expected plain arrays only, got a pickled object (dtype "
                                      f"{dtype}); refused (gpunet checkpoints never hold pickles)")
            if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
                raise CheckpointError(f"{where}: expected a numeric array, got dtype {dtype.str}")
            nbytes = math.prod(shape) * dtype.itemsize
            left = info.file_size - f.tell()
            if nbytes != left:
                raise CheckpointError(f"{where}: its header declares shape {shape} of {dtype.str} "
                                      f"({nbytes} bytes), but the member holds {left} bytes of data")
            data = f.read(nbytes)
            if len(data) != nbytes or f.read(1):
                raise CheckpointError(f"{where}: expected {nbytes} bytes of data, got {len(data)}")
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"{where}: a truncated or corrupted file ({type(e).__name__}: {e})") from None
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def _read_meta(zf, info, path) -> dict:
    if info is None:
        raise CheckpointError(f"checkpoint {path}: no __meta__ record; not a gpunet checkpoint")
    raw = _read_npy(zf, info, path, "__meta__")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"checkpoint {path}: expected __meta__ as uint8 bytes, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"checkpoint {path}: corrupted metadata ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path}: expected the metadata to be a JSON object, "
                              f"got {type(header).__name__}")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: expected format {FORMAT} v{VERSION}, "
                              f"got {header.get('format')!r:.40} v{header.get('version')!r:.20}")
    if not isinstance(header.get("meta", {}), dict):
        raise CheckpointError(f"checkpoint {path}: expected 'meta' to be a JSON object, "
                              f"got {type(header.get('meta')).__name__}")
    if "optimizer" in header and not isinstance(header["optimizer"], dict):
        raise CheckpointError(f"checkpoint {path}: expected 'optimizer' to be a JSON object, "
                              f"got {type(header['optimizer']).__name__}")
    return header


def model_limits(model, optimizer=None):
    """limits(name) for read_checkpoint: the most bytes each member may hold for `model`
    (16 bytes per element, the widest numeric dtype, plus a .npy header)."""
    sizes = {f"model/{k}": int(np.prod(np.shape(v))) for k, v in model.state_dict().items()}
    params = list(optimizer.params) if optimizer is not None else model.parameters()

    def limits(name):
        if name in sizes:
            return sizes[name] * 16 + 4096
        if name.startswith("optim/"):
            i = name[len("optim/"):].split(".", 1)[0]
            if i.isdigit() and int(i) < len(params):
                return params[int(i)].size * 16 + 4096
        return 4096
    return limits


def load_checkpoint(path, model, optimizer=None, check_meta=None) -> dict:
    """Load weights (and optimizer state) from `path`; returns the saved meta.

    Either everything loads or nothing changes: the file is read and checked in full
    (sizes against the model before decompressing, dtypes, shapes, finiteness of the
    weights and the optimizer's buffers) before the first array is assigned.
    """
    header, arrays = read_checkpoint(path, limits=model_limits(model, optimizer))
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    if optimizer is not None and "optimizer" not in header:
        raise CheckpointError(f"checkpoint {path}: holds no optimizer state, but an optimizer was given")
    opt_state = None
    if optimizer is not None:
        opt_state = dict(header["optimizer"])
        opt_state["buffers"] = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    try:
        staged = model.check_state_dict(model_state)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {e}") from None
    if optimizer is not None:
        try:
            optimizer._validate_state(opt_state)
        except (CheckpointError, TypeError, ValueError, KeyError, AttributeError) as e:
            # any malformed value is the checkpoint's fault, reported as such
            raise CheckpointError(f"checkpoint {path}: optimizer state does not fit: {e}") from None
    if check_meta is not None:  # the caller's schema for its meta, checked before anything changes
        try:
            check_meta(header.get("meta", {}))
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {path}: {e}") from None
    model.assign_state(staged)
    if optimizer is not None:
        optimizer.load_state_dict(opt_state)
    return header.get("meta", {})
