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
import zipfile
from pathlib import Path

import numpy as np

from . import backend
from .errors import CheckpointError, NonFiniteError
from .fileio import atomic_write_bytes

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


def read_checkpoint(path) -> tuple[dict, dict]:
    """Read and verify a checkpoint file: returns (header, arrays). Raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                arrays[key] = z[key]  # reading each member checks its CRC
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"checkpoint {path}: expected plain arrays only, got a pickled object in "
                                  f"member {key!r}; refused (gpunet checkpoints never hold pickles)") from None
        raise CheckpointError(f"checkpoint {path}: unreadable member {key!r} ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: expected a complete .npz archive, got a truncated or "
                              f"corrupted file ({type(e).__name__}: {e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"checkpoint {path}: no __meta__ record; not a gpunet checkpoint")
    try:
        header = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: corrupted metadata ({e})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: expected format {FORMAT} v{VERSION}, "
                              f"got {header.get('format')!r} v{header.get('version')!r}")
    return header, arrays


def load_checkpoint(path, model, optimizer=None) -> dict:
    """Load weights (and optimizer state) from `path`; returns the saved meta.

    Either everything loads or nothing changes: the model's old state is restored
    if the optimizer's state turns out not to fit.
    """
    header, arrays = read_checkpoint(path)
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    if optimizer is not None and "optimizer" not in header:
        raise CheckpointError(f"checkpoint {path}: holds no optimizer state, but an optimizer was given")
    before = model.state_dict()
    try:
        model.load_state_dict(model_state)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {e}") from None
    if optimizer is not None:
        opt_state = dict(header["optimizer"])
        opt_state["buffers"] = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
        try:
            optimizer.load_state_dict(opt_state)
        except Exception as e:
            model.load_state_dict(before)
            raise CheckpointError(f"checkpoint {path}: optimizer state does not fit: {e}") from None
    return header.get("meta", {})
