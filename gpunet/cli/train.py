"""`gpunet train`: train a zoo model on a dataset and write a run folder.

runs/<name>/ holds config.json, metrics.jsonl (epoch lines plus sparse step lines),
checkpoint-last.npz, checkpoint-best.npz, history.json and curves.png (matplotlib)
or curves.svg. `--resume` continues runs/<name>/checkpoint-last.npz exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import gpunet as gn

from .. import losses
from ..callbacks import ClipGradNorm, CSVLogger, EarlyStopping, JSONLLogger, ModelCheckpoint, TensorBoardLogger
from ..fileio import append_bytes, atomic_write_bytes
from .flags import add_field_flag
from ..errors import GpunetError, GpunetValueError, RunFolderError, describe_os_error
from ..parallel import mpi
from ..plot import write_curves
from ..runlock import lock_run_folder
from . import recipe, resume, set_run_folder


HELP = {  # one line per flag; the default is appended as the user would type it
    "dataset": "built-in set, npz:FILE.npz (arrays x, y) or folder:DIR (one subfolder per class)",
    "model": "zoo model", "hidden": "mlp hidden widths, comma-separated", "epochs": "epochs in total",
    "batch_size": "samples per step", "lr": "learning rate", "optimizer": "optimizer",
    "momentum": "SGD momentum", "weight_decay": "L2 weight decay", "init": "weight initialiser",
    "dropout": "mlp dropout probability", "dtype": "floating-point type",
    "device": "cpu, cuda, cuda:N or auto (a GPU when usable)", "seed": "seed of weights, split and shuffles",
    "val_fraction": "share of the training set held out for validation", "out": "folder of run folders",
    "name": "run folder name", "resume": "continue OUT/NAME from its last checkpoint",
    "checkpoint_every": "also checkpoint every K steps (0: at epoch ends only)",
    "data_root": "dataset folder",
    "devices": "data parallel in this process, one replica per device: cpu,cpu or cuda:0,cuda:1",
    "reduce": "data parallel: combine replica gradients by mean or sum",
    "lr_scaling": "data parallel: linear multiplies lr by the replicas", "warmup_epochs": "linear lr warmup",
    "threads": "BLAS threads on the CPU (0: gpunet's choice, 1)", "schedule": recipe.SCHEDULE_HELP,
    "early_stopping": "stop after N epochs without a lower val_loss (0: never)",
    "clip_grad_norm": "clip the global gradient norm (0: off)",
    "augment": "random crop (and flip for cifar10, fashion-mnist) of training images",
    "log": "extra epoch logs beside metrics.jsonl: csv, tensorboard or csv,tensorboard",
    "accumulate": "run each batch as K micro-batches: same step, 1/K of the activation memory",
    "precision": "compute precision of matrix products and convolutions (float32 master weights; "
                 "fp16 with dynamic loss scaling; bf16 needs ml_dtypes)",
    "fused": "fused optimizer step: parameters, gradients and state in flat buffers, one update per "
             "parameter group (one CUDA kernel on a GPU); sgd, adam and adamw",
}
SHOWN_DEFAULT = {"name": "<dataset>-<model>", "data_root": "$GPUNET_DATA, then the cache",
                 "devices": "one device", "log": "none", "threads": "0"}


def _choices():
    from .. import models, nn, optim
    from ..parallel.engine import REDUCES
    from .. import precision
    from ..train import LR_SCALINGS
    return {"model": tuple(sorted(models.ZOO)), "optimizer": tuple(optim.OPTIMIZERS), "init": tuple(nn.init.NAMES),
            "dtype": recipe.DTYPES, "schedule": tuple(recipe.SCHEDULES), "reduce": tuple(REDUCES),
            "lr_scaling": tuple(LR_SCALINGS), "precision": precision.PRECISIONS}


def add_arguments(parser) -> None:
    choices = _choices()
    for name, field in recipe.FIELDS.items():  # default None: "not given", so config files can fill it
        shown = SHOWN_DEFAULT.get(name, "off" if field.default is False else field.default)
        add_field_flag(parser, name, field.type, None, f"{HELP[name]} (default {shown})",
                       choices=choices.get(name))
    parser.add_argument("--config", default=None, metavar="FILE.toml",
                        help="read settings from a TOML or JSON file; flags override it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ignore", nargs="+", action="extend", default=[], metavar="CODE",
                        help="silence these gpunet doctor codes (GN101, symmetric-init, ...)")
    parser.add_argument("--no-doctor", action="store_true", help="skip the doctor's preflight and live checks")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="multi-process runs: seconds any collective may wait for the slowest rank before "
                             "the job stops naming it (default $GPUNET_TIMEOUT or 120)")
    parser.add_argument("--restart", action="store_true",
                        help="with --resume: when the run has no readable checkpoint-last.npz, start it over "
                             "in the same folder (its checkpoints and metrics are replaced)")





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
    console.print(f"gpunet train → {escape(str(folder))}", highlight=False)
    t = Table(show_header=False)
    for k, v in dataclasses.asdict(cfg).items():
        t.add_row(k, escape(repr(cfg.run_name if k == "name" else v)))
    console.print(t)


def run(args) -> int:
    console = Console()
    try:
        flags = {k: getattr(args, k) for k in recipe.FIELDS}
        cfg = recipe.resolve(flags, args.config)
        if args.restart and not cfg.resume:
            raise GpunetValueError("--restart: expected together with --resume (a run without --resume "
                                   "always starts in a new folder), got --restart alone")
        if cfg.resume:  # continue with the run's own settings; flags given now override them
            saved = resume.saved_config(run_dir(cfg))
            cfg = recipe.resolve(flags, args.config, base=saved)
            resume.check_frozen(saved, flags, args.config, "config.json")
        if args.timeout is not None and not args.timeout > 0:
            raise gn.GpunetValueError(f"--timeout: expected seconds > 0, got {args.timeout!r}")
        given = recipe.given_settings(flags, args.config)
        return train(cfg, console, quiet=args.quiet, lr_given=flags["lr"] is not None,
                     ignore=tuple(args.ignore), doctor=not args.no_doctor, timeout=args.timeout, given=given,
                     restart=args.restart)
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(cli_advice(str(e)))}")
        return 2


def cli_advice(message: str) -> str:
    """A config error in the words of the command line: "TrainConfig: lr expected ..." -> "--lr expected ..."."""
    return re.sub(r"\bTrainConfig: (\w+)", lambda m: "--" + m.group(1).replace("_", "-"), message)


def pick_device(cfg, world: int, local_rank: int):
    """This process's device. In a multi-process job (world > 1) "cuda" binds cuda:<local rank>
    before any communicator exists and fails without a GPU, as it does in one process; only
    "auto" falls back to the CPU. In one process with --devices: replica 0's device."""
    if world > 1:
        return mpi.bind_device(cfg.device, local_rank)
    return gn.device(cfg.device_list()[0] if cfg.device_list() else cfg.device)


def train(cfg, console, quiet=False, lr_given=False, ignore=(), doctor=True, timeout=None, given=(),
          restart=False) -> int:
    """Run (or resume) one training run; the run folder is locked while this runs."""
    rank, world, local_rank = mpi.env_rank()
    recipe.check_applicable(cfg, given, replicas=max(world, len(cfg.device_list() or ())))
    if world == 1 and timeout is not None:
        raise gn.GpunetValueError(f"--timeout: applies to multi-process runs (gpunet launch, mpiexec, srun), "
                                  f"and this is a single process; got --timeout {timeout:g}")
    held = []
    try:
        if world > 1:  # one rank of a multi-process job (gpunet launch, mpiexec, srun)
            return _train_rank(cfg, console, quiet, lr_given, ignore, doctor, timeout, rank, world, local_rank,
                               restart, held)
        return _train(cfg, console, quiet, lr_given, ignore, doctor, restart=restart, held=held)
    finally:
        for lock in held:
            lock.release()


def _train_rank(cfg, console, quiet, lr_given, ignore, doctor, timeout, rank, world, local_rank,
                restart, held) -> int:
    """Bind this rank's device before any communicator, join the job, train under the guard:
    a failure anywhere ends every rank with one line naming this rank and the cause."""
    mpi.install_stop_handlers()
    dev = pick_device(cfg, world, local_rank)
    comm, why = mpi.make_process_communicator(dev, timeout=timeout)
    mpi.note_pid(rank)
    if rank != 0:  # rank 0 alone prints progress and writes the run folder
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    console.print(f"rank {rank} of {world}: {why}; collectives time out after {comm.timeout:g} s")
    with mpi.rank_guard(comm):
        if cfg.device_list():
            raise gn.DistributedError(f"--devices: one device per process in a {world}-rank job (use --device, "
                                      f"or cuda to bind cuda:LOCAL_RANK), got {cfg.devices!r}", reporter=0,
                                      exit_code=2)
        try:
            return _train(cfg, console, quiet, lr_given, ignore, doctor, dev=dev, comm=comm, restart=restart,
                          held=held)
        except mpi.JobStopped as stop:
            if rank == 0:
                print(f"gpunet: {stop}; every rank stopped there"
                      + (f"; checkpoint written to {_stop_checkpoint}" if _stop_checkpoint else ""),
                      file=sys.stderr, flush=True)
            return stop.exit_code


_stop_checkpoint = None


def _train(cfg, console, quiet=False, lr_given=False, ignore=(), doctor=True, dev=None, comm=None,
           restart=False, held=None) -> int:
    held = [] if held is None else held
    gn.manual_seed(cfg.seed)
    if dev is None:
        dev = pick_device(cfg, 1, 0)
    folder = None
    if cfg.resume and (comm is None or comm.rank == 0):
        folder = run_dir(cfg)
        if not folder.is_dir():
            raise gn.CheckpointError(f"--resume: expected a run folder with a checkpoint at {folder}, found "
                                     f"none (check --name and --out)")
        held.append(lock_run_folder(folder))  # before anything is read: no other run writes it meanwhile
        set_run_folder(folder)
    train_set, val_set, test_set = recipe.datasets(cfg)
    if comm is not None and comm.world_size > min(len(train_set), cfg.batch_size):
        raise gn.DistributedError(f"--nproc: {comm.world_size} ranks, but the global batch is {cfg.batch_size} and "
                                  f"the training set has {len(train_set)} samples: every rank needs at least "
                                  "one sample of each batch; use fewer ranks or a larger --batch-size",
                                  reporter=0, exit_code=2)
    cfg = dataclasses.replace(cfg, threads=gn.threads.set_threads(cfg.threads))  # config.json shows the count used
    model = recipe.build_model(cfg, recipe.sample_shape(train_set), len(train_set.classes))
    model.to(dev, dtype=cfg.dtype)
    opt = recipe.build_optimizer(cfg, model.parameters())
    if comm is not None and comm.rank != 0:  # only rank 0 writes the run folder and prints progress
        return _train_quiet_rank(cfg, model, opt, dev, comm, train_set, val_set, lr_given)
    if not cfg.resume:
        folder = make_run_dir(cfg)
        held.append(lock_run_folder(folder))
        set_run_folder(folder)
    last = folder / "checkpoint-last.npz"
    ckpt = ModelCheckpoint(folder, monitor="val_accuracy", every_n_steps=cfg.checkpoint_every or None)
    loss = losses.SoftmaxCrossEntropy()
    logger = JSONLLogger(folder / "metrics.jsonl", append=cfg.resume)
    trainer = gn.Trainer(model, loss, opt, device=dev, seed=cfg.seed,
                         schedule=run_schedule(cfg, opt, train_set),
                         accumulate=1 if (comm or cfg.device_list()) else cfg.accumulate,
                         callbacks=[logger, ckpt, *extra_callbacks(cfg, folder)],
                         devices=[dev] if comm else cfg.device_list(), comm=comm, reduce=cfg.reduce,
                         lr_scaling=cfg.lr_scaling, warmup_epochs=cfg.warmup_epochs,
                         doctor=doctor, doctor_ignore=ignore, precision=cfg.precision)
    trainer.config = dataclasses.asdict(cfg)
    if comm is not None:
        trainer.engine.check_every = cfg.checkpoint_every or None
    if cfg.resume:  # everything is checked before the first byte is written
        meta = resume.resume_or_restart(cfg, trainer, last, restart, console)
        if meta is not None:
            # Finished: every epoch trained and the final outputs written (a run killed between
            # its last checkpoint and history.json resumes to write them).
            if trainer.epoch >= cfg.epochs and not trainer._resume_batch and (folder / "history.json").is_file():
                console.print(f"--resume: {folder}: the run is finished ({trainer.epoch} of {cfg.epochs} epochs done); "
                              f"nothing to do. To train longer, give --epochs N with N > {trainer.epoch}")
                return 0
            ckpt.best = meta.get("best")
        else:
            cfg = dataclasses.replace(cfg, resume=False)
            logger.append = False
            trainer.config = dataclasses.asdict(cfg)
    print_config(console, cfg, folder)
    console.print(f"device {dev.name}, {cfg.threads} BLAS thread{'s' if cfg.threads > 1 else ''}, "
                  f"{recipe.param_count(model):,} parameters")
    console.print(f"data: {len(train_set)} train / {len(val_set) if val_set else 0} val / {len(test_set)} test samples")
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
            trainer.set_lr(cfg.lr)
    transform = recipe.augmentation(cfg, recipe.sample_shape(train_set))
    fit_data = train_set if transform is None else gn.data.DataLoader(
        train_set, cfg.batch_size, shuffle=True, device=dev, seed=cfg.seed, dtype=model.dtype, transform=transform)
    try:
        history = trainer.fit(fit_data, cfg.epochs, cfg.batch_size, val=val_set, verbose=not quiet)
    except mpi.JobStopped as stop:  # every rank agreed to stop at this step: keep it
        global _stop_checkpoint
        stop.step = trainer.global_step
        _stop_checkpoint = trainer.save(ckpt.last_path, best=ckpt.best)
        raise
    except KeyboardInterrupt:
        console.print(f"\ninterrupted at epoch {trainer.epoch + 1}, step {trainer.global_step}. "
                      f"Continue from {last} with:\n  gpunet train --out {escape(cfg.out)} "
                      f"--name {escape(cfg.run_name)} --resume", highlight=False)
        raise
    test = trainer.evaluate(test_set)
    append_bytes(folder / "metrics.jsonl", (json.dumps({"kind": "test", **test}) + "\n").encode())
    history.to_json(folder / "history.json")
    summary(console, history, test, folder, write_curves(history.epochs, folder))
    return 0


def run_schedule(cfg, opt, train_set):
    """The --schedule of this run, with its steps per epoch (one per global batch); the Trainer
    applies --lr-scaling to it."""
    return recipe.schedule(cfg, opt, math.ceil(len(train_set) / cfg.batch_size))


def extra_callbacks(cfg, folder) -> list:
    """Callbacks for --early-stopping, --clip-grad-norm and --log."""
    out = []
    if cfg.early_stopping:
        out.append(EarlyStopping("val_loss", patience=cfg.early_stopping))
    if cfg.clip_grad_norm:
        out.append(ClipGradNorm(cfg.clip_grad_norm))
    logs = cfg.log_list()
    if "csv" in logs:
        out.append(CSVLogger(folder / "metrics.csv", append=cfg.resume))
    if "tensorboard" in logs:
        out.append(TensorBoardLogger(folder / "tensorboard"))
    return out


def _train_quiet_rank(cfg, model, opt, dev, comm, train_set, val_set, lr_given) -> int:
    """A rank other than 0 under `gpunet launch`: same steps, no files, no output."""
    trainer = gn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, device=dev, seed=cfg.seed,
                         schedule=run_schedule(cfg, opt, train_set), devices=[dev], comm=comm,
                         reduce=cfg.reduce, lr_scaling=cfg.lr_scaling,
                         warmup_epochs=cfg.warmup_epochs, precision=cfg.precision,
                         doctor=False)  # rank 0 reports; ProcessSync spreads its stop to every rank
    trainer.config = dataclasses.asdict(cfg)
    trainer.engine.check_every = cfg.checkpoint_every or None
    last = run_dir(cfg) / "checkpoint-last.npz"
    if cfg.resume:
        trainer.resume(last)
        if lr_given:
            trainer.set_lr(cfg.lr)  # as rank 0 does: an explicit --lr replaces the checkpoint's
    trainer.fit(train_set, cfg.epochs, cfg.batch_size, val=val_set, verbose=False)
    return 0


def summary(console, history, test, folder, curves) -> None:
    t = Table(title="epochs")
    for col in ("epoch", "loss", "acc", "val_loss", "val_acc", "lr", "seconds", "samples/s"):  # 80 columns
        t.add_column(col, justify="right")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for e in history.epochs:
        t.add_row(str(e["epoch"] + 1), fmt(e.get("loss"), ".4f"), fmt(e.get("accuracy"), ".4f"),
                  fmt(e.get("val_loss"), ".4f"), fmt(e.get("val_accuracy"), ".4f"), fmt(e.get("lr"), ".4g"),
                  fmt(e.get("seconds"), ".2f"), fmt(e.get("samples_per_s"), ",.0f"))
    console.print(t)
    console.print(f"[bold]test[/]: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}")
    console.print(f"run folder: {folder}  ({escape(curves)})")

