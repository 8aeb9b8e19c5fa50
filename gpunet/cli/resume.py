"""Resuming a run of `gpunet train`: everything is checked before the first byte is written.

A resumed run keeps the settings in FROZEN_ON_RESUME (checked against config.json and the
checkpoint's own saved config); a missing or unreadable checkpoint-last stops the command
unless --restart is given, since starting over replaces the run's checkpoints and metrics.
"""
from __future__ import annotations

import json

from rich.markup import escape

import gpunet as gn

from ..checkpoint import read_checkpoint
from ..errors import GpunetValueError
from . import recipe

# Settings a resumed run keeps: changing them would not continue the same run exactly
# (another model shape, dtype, data order or batch composition).
# fused: the fused step equals the per-parameter one to rounding, not bit for bit, and their
# checkpoints are interchangeable; a resumed run keeps the one it started with.
FROZEN_ON_RESUME = ("dataset", "model", "hidden", "dropout", "init", "dtype", "batch_size", "optimizer",
                    "seed", "val_fraction", "fused")
# Settings added after runs were first saved: the value a saved config without them ran with.
SAVED_BEFORE = {"fused": False}


def saved_value(saved: dict, key: str):
    """`saved[key]`, or the value a config saved before `key` existed implies (KeyError: neither)."""
    return saved[key] if key in saved else SAVED_BEFORE[key]


def has_saved(saved: dict, key: str) -> bool:
    return key in saved or key in SAVED_BEFORE


def explicit_settings(flags, config_file) -> dict:
    """The settings given on this command line and in its --config file (not the defaults)."""
    values = recipe.load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None and k in recipe.FIELDS})
    return values


def check_frozen(saved: dict, flags, config_file, source: str) -> None:
    """Refuse a resume that changes a setting in FROZEN_ON_RESUME (before anything is written)."""
    given = explicit_settings(flags, config_file)
    changed = [f"{k}: {saved_value(saved, k)!r} in {source}, got {given[k]!r}" for k in FROZEN_ON_RESUME
               if k in given and has_saved(saved, k) and given[k] != saved_value(saved, k)]
    if changed:
        raise GpunetValueError("--resume: a resumed run keeps its model, dtype, batch size, optimizer (and "
                               "--fused), data and seed, so it continues exactly; " + "; ".join(changed) +
                               ". Drop these flags, or start a new run (without --resume) to change them")


def saved_config(folder) -> dict:
    """The config.json of the run folder being resumed ({} when it has none yet)."""
    path = folder / "config.json"
    if not path.exists():
        return {}
    try:
        saved = json.loads(recipe.read_small_file(path, "--resume: the run's config"))
    except ValueError as e:
        raise gn.CheckpointError(f"--resume: cannot read the run's config {path}: {e}") from None
    if not isinstance(saved, dict):
        raise gn.CheckpointError(f"--resume: the run's config {path}: expected a JSON object, "
                                 f"got {type(saved).__name__}")
    return saved


def resume_or_restart(cfg, trainer, last, restart, console):
    """Load checkpoint-last into `trainer` and return its meta, or None to start over.

    A missing or unreadable checkpoint stops the command unless `restart` is set: starting
    over would replace the run's checkpoint-best.npz and metrics. The load is atomic, so
    a refused checkpoint leaves the fresh model and optimizer as they were."""
    try:
        if not last.is_file():
            raise gn.CheckpointError(f"--resume: expected a checkpoint at {last}, found none (the run was "
                                     f"stopped before its first checkpoint, or the file was removed)")
        header, _ = read_checkpoint(last, meta_only=True)
    except gn.CheckpointError as e:
        return restart_or_stop(e, restart, last, console)
    saved = header.get("meta", {}).get("config") if isinstance(header.get("meta"), dict) else None
    if isinstance(saved, dict):  # settings a resumed run keeps: refused even with --restart
        mismatch = [f"{k}: {saved_value(saved, k)!r} in the checkpoint, {getattr(cfg, k)!r} now"
                    for k in FROZEN_ON_RESUME if has_saved(saved, k) and saved_value(saved, k) != getattr(cfg, k)]
        if mismatch:
            raise gn.CheckpointError(f"--resume: {last} was written by a run with other settings; "
                                     + "; ".join(mismatch) + " (a resumed run keeps them). Nothing was changed")
    try:
        return trainer.resume(last)
    except gn.CheckpointError as e:
        return restart_or_stop(e, restart, last, console)


def restart_or_stop(e, restart, last, console):
    if not restart:
        raise gn.CheckpointError(f"{e}. Nothing was changed. To start the run over in this folder "
                                 f"(replacing its checkpoints and metrics), add --restart") from None
    console.print(f"--restart: {escape(str(e))}; starting the run over in {last.parent}")
    return None
