"""`gpunet train`: train a zoo model on a dataset and write a run folder.

runs/<name>/ holds config.json, metrics.jsonl (epoch lines plus sparse step lines),
checkpoint-last.npz, checkpoint-best.npz, history.json and curves.png (matplotlib)
or curves.svg. `--resume` continues runs/<name>/checkpoint-last.npz exactly.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import gpunet as gn

from .. import losses, runconfig
from ..callbacks import JSONLLogger, ModelCheckpoint
from ..checkpoint import atomic_write_bytes
from .flags import add_field_flag
from ..checkpoint import append_bytes, read_checkpoint
from ..errors import GpunetError, GpunetValueError, RunFolderError, describe_os_error
from ..runlock import lock_run_folder
from . import set_run_folder
from ..parallel.comm import env_rank, make_process_communicator
from ..plot import write_curves


def add_arguments(parser) -> None:
    for name, field in runconfig.FIELDS.items():  # default None: "not given", so config files can fill it
        add_field_flag(parser, name, field.type, None, f"(default {field.default!r})")
    parser.add_argument("--config", default=None, metavar="FILE.toml",
                        help="read settings from a TOML or JSON file; flags override it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ignore", nargs="+", action="extend", default=[], metavar="CODE",
                        help="silence these gpunet doctor codes (GN101, symmetric-init, ...)")
    parser.add_argument("--no-doctor", action="store_true", help="skip the doctor's preflight and live checks")
    parser.add_argument("--restart", action="store_true",
                        help="with --resume: when the run has no readable checkpoint-last.npz, start it over "
                             "in the same folder (its checkpoints and metrics are replaced)")


# Settings a resumed run keeps: changing them would not continue the same run exactly
# (another model shape, dtype, data order or batch composition).
FROZEN_ON_RESUME = ("dataset", "model", "hidden", "dropout", "init", "dtype", "batch_size", "optimizer",
                    "seed", "val_fraction")


def run_dir(cfg) -> Path:
    """runs/<name>; a fresh run never overwrites an existing folder (it gets -2, -3, ...)."""
    base = Path(cfg.out) / cfg.run_name
    if cfg.resume:
        return base
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def make_run_dir(cfg) -> Path:
    """Create a fresh run's folder atomically: two runs started at once get two folders."""
    base = Path(cfg.out) / cfg.run_name
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: expected a folder for the runs, got an existing file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(describe_os_error(e, "--out: cannot create the folder", out), e.errno) from e
    path, i = base, 2
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if i > 100000:
                raise RunFolderError(f"cannot create a run folder next to {base}: {base}-2 ... {path} all exist") from None
            path, i = Path(f"{base}-{i}"), i + 1
        except OSError as e:
            raise RunFolderError(describe_os_error(e, "cannot create the run folder", path), e.errno) from e


def print_config(console, cfg, folder) -> None:
    t = Table(title=f"gpunet train → {folder}", show_header=False)
    for k, v in dataclasses.asdict(cfg).items():
        t.add_row(k, escape(repr(v)))
    console.print(t)


def run(args) -> int:
    console = Console()
    try:
        flags = {k: getattr(args, k) for k in runconfig.FIELDS}
        cfg = runconfig.resolve(flags, args.config)
        if args.restart and not cfg.resume:
            raise GpunetValueError("--restart: expected together with --resume (a run without --resume "
                                   "always starts in a new folder), got --restart alone")
        if cfg.resume:  # continue with the run's own settings; flags given now override them
            saved = saved_config(cfg)
            cfg = runconfig.resolve(flags, args.config, base=saved)
            check_frozen(saved, flags, args.config, "config.json")
        return train(cfg, console, quiet=args.quiet, lr_given=flags["lr"] is not None,
                     ignore=tuple(args.ignore), doctor=not args.no_doctor, restart=args.restart)
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2


def _explicit(flags, config_file) -> dict:
    """The settings given on this command line and in its --config file (not the defaults)."""
    values = runconfig.load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None and k in runconfig.FIELDS})
    return values


def check_frozen(saved: dict, flags, config_file, source: str) -> None:
    """Refuse a resume that changes a setting in FROZEN_ON_RESUME (before anything is written)."""
    given = _explicit(flags, config_file)
    changed = [f"{k}: {saved[k]!r} in {source}, got {given[k]!r}" for k in FROZEN_ON_RESUME
               if k in given and k in saved and given[k] != saved[k]]
    if changed:
        raise GpunetValueError("--resume: a resumed run keeps its model, dtype, batch size, optimizer, data "
                               "and seed, so it continues exactly; " + "; ".join(changed) +
                               ". Drop these flags, or start a new run (without --resume) to change them")


def saved_config(cfg) -> dict:
    """The config.json of the run `cfg` resumes ({} when it has none yet)."""
    path = run_dir(cfg) / "config.json"
    if not path.exists():
        return {}
    try:
        saved = json.loads(runconfig.read_small_file(path, "--resume: the run's config"))
    except ValueError as e:
        raise gn.CheckpointError(f"--resume: cannot read the run's config {path}: {e}") from None
    if not isinstance(saved, dict):
        raise gn.CheckpointError(f"--resume: the run's config {path}: expected a JSON object, "
                                 f"got {type(saved).__name__}")
    return saved


def train(cfg, console, quiet=False, lr_given=False, ignore=(), doctor=True, restart=False) -> int:
    """Run (or resume) one training run; the run folder is locked while this runs."""
    held = []
    try:
        return _train(cfg, console, quiet, lr_given, ignore, doctor, restart, held)
    finally:
        for lock in held:
            lock.release()


def _train(cfg, console, quiet, lr_given, ignore, doctor, restart, held) -> int:
    gn.manual_seed(cfg.seed)
    rank, world, local_rank = env_rank()
    if world == 1 and cfg.device_list():  # data parallel in this process: replica 0's device
        dev = gn.device(cfg.device_list()[0])
    else:
        dev = gn.device(cfg.device if world == 1 or cfg.device not in ("auto", "cuda")
                        else (f"cuda:{local_rank}" if gn.is_gpu_available() else "cpu"))
    if cfg.resume and rank == 0:
        folder = run_dir(cfg)
        if not folder.is_dir():
            raise gn.CheckpointError(f"--resume: expected a run folder with a checkpoint at {folder}, found "
                                     f"none (check --name and --out)")
        held.append(lock_run_folder(folder))  # before anything is read: no other run writes it meanwhile
        set_run_folder(folder)
    train_set, val_set, test_set = runconfig.datasets(cfg)
    model = runconfig.build_model(cfg, runconfig.sample_shape(train_set), len(train_set.classes))
    model.to(dev, dtype=cfg.dtype)
    opt = runconfig.build_optimizer(cfg, model.parameters())
    comm = None
    if world > 1:  # started by `gpunet launch`: one replica per process
        comm, why = make_process_communicator(dev)
        console.print(f"rank {rank} of {world}: {why}")
        if rank != 0:  # only rank 0 writes the run folder and prints progress
            return _train_quiet_rank(cfg, model, opt, dev, comm, train_set, val_set, lr_given)
    if not cfg.resume:
        folder = make_run_dir(cfg)
        held.append(lock_run_folder(folder))
        set_run_folder(folder)
    last = folder / "checkpoint-last.npz"
    ckpt = ModelCheckpoint(folder, monitor="val_accuracy", every_n_steps=cfg.checkpoint_every or None)
    loss = losses.SoftmaxCrossEntropy()
    logger = JSONLLogger(folder / "metrics.jsonl", append=cfg.resume)
    trainer = gn.Trainer(model, loss, opt, device=dev, seed=cfg.seed, callbacks=[logger, ckpt],
                         devices=[dev] if comm else cfg.device_list(), comm=comm, reduce=cfg.reduce,
                         lr_scaling=cfg.lr_scaling, warmup_epochs=cfg.warmup_epochs,
                         doctor=doctor, doctor_ignore=ignore)
    trainer.config = dataclasses.asdict(cfg)
    if cfg.resume:  # everything is checked before the first byte is written
        meta = _resume_or_restart(cfg, trainer, last, restart, console)
        if meta is not None:
            # Finished: every epoch trained and the final outputs written (a run killed between
            # its last checkpoint and history.json resumes to write them).
            if trainer.epoch >= cfg.epochs and not trainer._resume_batch and (folder / "history.json").is_file():
                console.print(f"{folder}: the run is finished ({trainer.epoch} of {cfg.epochs} epochs done); "
                              f"nothing to do. Pass a larger --epochs to train it further.")
                return 0
            ckpt.best = meta.get("best")
        else:
            cfg = dataclasses.replace(cfg, resume=False)
            logger.append = False
            trainer.config = dataclasses.asdict(cfg)
    print_config(console, cfg, folder)
    console.print(f"device {dev.name}, {runconfig.param_count(model):,} parameters, "
                  f"{len(train_set)} train / {len(val_set) if val_set else 0} val / {len(test_set)} test samples")
    if doctor and not cfg.resume:
        findings = gn.doctor.preflight(model, train_set, loss, opt, trainer, ignore=ignore)
        if findings:
            gn.doctor.render(findings, console, title="gpunet doctor: preflight (silence with --ignore CODE)")
    atomic_write_bytes(folder / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())
    if cfg.resume:
        for stale in folder.glob(".checkpoint-*.npz.*.tmp"):  # left by a write that was killed
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)
        console.print(f"resumed from {last} at epoch {trainer.epoch}, step {trainer.global_step}")
        if lr_given and opt.lr != cfg.lr:  # e.g. a lower lr after a divergence
            console.print(f"lr: {cfg.lr:g} from the flags replaces the checkpoint's {opt.lr:g}")
            opt.lr = cfg.lr
    history = trainer.fit(train_set, cfg.epochs, cfg.batch_size, val=val_set, verbose=not quiet)
    test = trainer.evaluate(test_set)
    append_bytes(folder / "metrics.jsonl", (json.dumps({"kind": "test", **test}) + "\n").encode())
    history.to_json(folder / "history.json")
    summary(console, history, test, folder, write_curves(history.epochs, folder))
    return 0


def _resume_or_restart(cfg, trainer, last, restart, console):
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
        return _restart_or_stop(e, restart, last, console)
    saved = header.get("meta", {}).get("config") if isinstance(header.get("meta"), dict) else None
    if isinstance(saved, dict):  # settings a resumed run keeps: refused even with --restart
        mismatch = [f"{k}: {saved[k]!r} in the checkpoint, {getattr(cfg, k)!r} now"
                    for k in FROZEN_ON_RESUME if k in saved and saved[k] != getattr(cfg, k)]
        if mismatch:
            raise gn.CheckpointError(f"--resume: {last} was written by a run with other settings; "
                                     + "; ".join(mismatch) + " (a resumed run keeps them). Nothing was changed")
    try:
        return trainer.resume(last)
    except gn.CheckpointError as e:
        return _restart_or_stop(e, restart, last, console)


def _restart_or_stop(e, restart, last, console):
    if not restart:
        raise gn.CheckpointError(f"{e}. Nothing was changed. To start the run over in this folder "
                                 f"(replacing its checkpoints and metrics), add --restart") from None
    console.print(f"--restart: {escape(str(e))}; starting the run over in {last.parent}")
    return None


def _train_quiet_rank(cfg, model, opt, dev, comm, train_set, val_set, lr_given) -> int:
    """A rank other than 0 under `gpunet launch`: same steps, no files, no output."""
    trainer = gn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, device=dev, seed=cfg.seed,
                         devices=[dev], comm=comm, reduce=cfg.reduce, lr_scaling=cfg.lr_scaling,
                         warmup_epochs=cfg.warmup_epochs,
                         doctor=False)  # rank 0 reports; if it stops, the launcher stops this rank
    last = run_dir(cfg) / "checkpoint-last.npz"
    if cfg.resume:
        trainer.resume(last)
        if lr_given:
            opt.lr = cfg.lr  # as rank 0 does: an explicit --lr replaces the checkpoint's
    trainer.fit(train_set, cfg.epochs, cfg.batch_size, val=val_set, verbose=False)
    return 0


def summary(console, history, test, folder, curves) -> None:
    t = Table(title="epochs")
    for col in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples/s"):
        t.add_column(col, justify="right")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for e in history.epochs:
        t.add_row(str(e["epoch"] + 1), fmt(e.get("loss"), ".4f"), fmt(e.get("accuracy"), ".4f"),
                  fmt(e.get("val_loss"), ".4f"), fmt(e.get("val_accuracy"), ".4f"), fmt(e.get("lr"), ".4g"),
                  fmt(e.get("seconds"), ".2f"), fmt(e.get("samples_per_s"), ",.0f"))
    console.print(t)
    console.print(f"[bold]test[/]: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}")
    console.print(f"run folder: {folder}  ({escape(curves)})")


if __name__ == "__main__":
    sys.exit(run(None))
