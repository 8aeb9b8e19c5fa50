"""`gpunet compare`: single- against multi-device runs of one model, a table plus curves.

    gpunet compare --dataset mnist --model mlp --replicas 1,2,4 --reduce mean,sum --epochs 3
    gpunet compare --devices cuda:0,cuda:1 ...         # real GPUs
    gpunet compare --replicas 4 --device cuda:0 ...    # simulated replicas on one device
    gpunet compare --replicas 1,2 --processes ...      # the multi-device side as real MPI processes
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import gpunet as gn

from .. import compare
from ..fileio import atomic_write_bytes
from ..plot import pyplot
from ..errors import GpunetError, GpunetValueError
from . import recipe
from .flags import add_field_flag


@dataclasses.dataclass
class CompareConfig:
    dataset: str = "mnist"
    model: str = "mlp"
    hidden: str = "512,256"
    replicas: str = "1,2,4"
    reduce: str = "mean,sum"
    keep: str = "global,replica"
    lr_scaling: str = "none"
    warmup_epochs: float = 0.0
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    device: str = "auto"          # as in gpunet train: a GPU when usable, else the CPU
    devices: str = ""             # e.g. "cuda:0,cuda:1": one replica per listed GPU
    seed: int = 0
    dtype: str = "float32"
    train_samples: int = 0        # 0: the whole training split
    data_root: str = ""
    out: str = "runs/compare"
    processes: bool = False       # run each N > 1 configuration as N MPI processes (gpunet launch)
    timeout: float = 120.0        # --processes: seconds any collective may wait


HELP = {
    "dataset": "dataset", "model": "zoo model", "hidden": "mlp hidden widths",
    "replicas": "replica counts to compare, comma-separated", "reduce": "gradient reductions: mean, sum",
    "keep": "what stays fixed as replicas grow: global batch, replica batch",
    "lr_scaling": "none or linear (lr × replicas)", "warmup_epochs": "linear lr warmup",
    "epochs": "epochs per run", "batch_size": "global batch size", "lr": "learning rate",
    "momentum": "SGD momentum", "device": "cpu, cuda, cuda:N or auto; simulated replicas share it",
    "devices": "one replica per listed device instead: cuda:0,cuda:1", "seed": "seed of every run",
    "dtype": "float32 or float64", "train_samples": "training samples used (0: all)",
    "data_root": "dataset folder", "out": "folder for compare.json and the curves",
    "processes": "run each N > 1 configuration as N real MPI processes, not N replicas in one",
    "timeout": "with --processes: seconds any collective may wait before the job stops",
}
SHOWN_DEFAULT = {"devices": "none", "data_root": "$GPUNET_DATA, then the cache", "train_samples": "0 (all)"}


def add_arguments(parser) -> None:
    for f in dataclasses.fields(CompareConfig):
        shown = SHOWN_DEFAULT.get(f.name, f.default)
        add_field_flag(parser, f.name, f.type, f.default, f"{HELP[f.name]} (default {shown})")


def _csv(text, kind=str, flag="", minimum=None):
    """The comma-separated values of a flag; ints are ASCII digits and at least `minimum`."""
    parts = [v.strip() for v in text.split(",") if v.strip()]
    if kind is int:
        if not parts or not all(p.isascii() and p.isdigit() and int(p) >= (minimum or 0) for p in parts):
            raise GpunetValueError(f"--{flag}: expected comma-separated ints >= {minimum or 0} such as '1,2,4', "
                                   f"got {text!r}")
        return [int(p) for p in parts]
    return parts


def check_config(cfg: CompareConfig) -> None:
    """Refuse values no comparison can run with, before any data is loaded."""
    import math
    checks = [("epochs", cfg.epochs >= 1, ">= 1"), ("batch-size", cfg.batch_size >= 1, ">= 1"),
              ("lr", math.isfinite(cfg.lr) and cfg.lr > 0, "> 0 and finite"),
              ("momentum", 0 <= cfg.momentum < 1, "in [0, 1)"),
              ("warmup-epochs", math.isfinite(cfg.warmup_epochs) and cfg.warmup_epochs >= 0, ">= 0 and finite"),
              ("train-samples", cfg.train_samples >= 0, ">= 0 (0: all)"), ("seed", cfg.seed >= 0, ">= 0")]
    for flag, ok, want in checks:
        if not ok:
            raise GpunetValueError(f"--{flag}: expected a value {want}, got {getattr(cfg, flag.replace('-', '_'))!r}")
    _csv(cfg.replicas, int, "replicas", minimum=1)
    recipe.TrainConfig(hidden=cfg.hidden).hidden_sizes()


def run(args) -> int:
    console = Console()
    cfg = CompareConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CompareConfig)})
    try:
        records = run_compare(cfg, console)
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    show(records, console)
    console.print(escape(compare.conclusion(records)))
    return 0


def run_compare(cfg: CompareConfig, console) -> list:
    check_config(cfg)
    devices = _csv(cfg.devices) or None
    replicas = _csv(cfg.replicas, int, "replicas", minimum=1)
    if cfg.processes and devices:
        raise GpunetValueError(f"--processes: expected no --devices (each rank takes --device; cuda binds "
                               f"cuda:LOCAL_RANK), got --devices {cfg.devices!r}")
    if not cfg.timeout > 0:
        raise GpunetValueError(f"--timeout: expected seconds > 0, got {cfg.timeout!r}")
    if devices and max(replicas) > len(devices):
        raise GpunetValueError(f"--replicas: expected at most {len(devices)} (one per --devices entry), "
                               f"got {max(replicas)}")
    train, test, make_model = _data_and_model(cfg)
    grid = compare.configurations(replicas, _csv(cfg.reduce), _csv(cfg.keep), _csv(cfg.lr_scaling),
                                  cfg.warmup_epochs, processes=cfg.processes)
    records = []
    for i, c in enumerate(grid):
        console.print(f"[{i + 1}/{len(grid)}] {escape(c.label)}")
        if c.processes and c.replicas > 1:
            records.append(_run_processes(cfg, c))
            continue
        records.append(compare.run_config(c, train, test, make_model, batch_size=cfg.batch_size, lr=cfg.lr,
                                          momentum=cfg.momentum, epochs=cfg.epochs, device=cfg.device,
                                          devices=devices, seed=cfg.seed, dtype=cfg.dtype))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device_name = devices or [gn.device(cfg.device).name]
    payload = {"config": dataclasses.asdict(cfg), "devices": device_name, "records": records,
               "conclusion": compare.conclusion(records)}
    atomic_write_bytes(out / "compare.json", json.dumps(payload, indent=1).encode())
    console.print(escape(f"wrote {out / 'compare.json'}; {plot(records, out)}"))
    return records


def _data_and_model(cfg: CompareConfig):
    tcfg = recipe.TrainConfig(dataset=cfg.dataset, model=cfg.model, hidden=cfg.hidden, seed=cfg.seed,
                                 val_fraction=0.0, data_root=cfg.data_root)
    train, _, test = recipe.datasets(tcfg)
    if cfg.train_samples:
        train = train.subset(range(min(cfg.train_samples, len(train))))
    shape, classes = recipe.sample_shape(train), len(train.classes)

    def make_model():
        gn.manual_seed(cfg.seed)
        return recipe.build_model(tcfg, shape, classes)
    return train, test, make_model


def _run_processes(cfg: CompareConfig, c) -> dict:
    """One configuration as c.replicas MPI ranks (gpunet launch); rank 0 returns the record."""
    from ..parallel.launch import launch
    with tempfile.TemporaryDirectory(prefix="gpunet-compare-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"cfg": dataclasses.asdict(cfg), "config": dataclasses.asdict(c),
                                   "record": str(Path(tmp) / "record.json")}))
        code = launch([sys.executable, "-m", "gpunet.cli.compare", str(job)], c.replicas, timeout=cfg.timeout)
        record = Path(tmp) / "record.json"
        if code != 0 or not record.is_file():
            raise GpunetError(f"--processes: the {c.replicas}-process run of {c.label!r} failed (exit code {code}); "
                              "its ranks' line above says why")
        return json.loads(record.read_text())


def rank_main(job_path) -> int:
    """One rank of a `--processes` configuration (run by gpunet launch)."""
    from ..parallel import mpi
    job = json.loads(Path(job_path).read_text())
    cfg, c = CompareConfig(**job["cfg"]), compare.RunSpec(**job["config"])
    rank, world, local_rank = mpi.env_rank()
    dev = mpi.bind_device(cfg.device, local_rank)
    comm, _ = mpi.make_process_communicator(dev, timeout=cfg.timeout)
    mpi.note_pid(rank)
    with mpi.rank_guard(comm):
        train, test, make_model = _data_and_model(cfg)
        record = compare.run_config(c, train, test, make_model, batch_size=cfg.batch_size, lr=cfg.lr,
                                    momentum=cfg.momentum, epochs=cfg.epochs, device=dev, seed=cfg.seed,
                                    dtype=cfg.dtype, comm=comm)
        if rank == 0:
            atomic_write_bytes(Path(job["record"]), json.dumps(record).encode())
    return 0


def show(records, console) -> None:
    t = Table(title="single vs multi-device")
    cols = ("configuration", "ran as", "global batch", "lr", "effective lr", "final test acc", "best test acc",
            "final loss", "s/epoch", "samples/s")
    for c in cols:
        t.add_column(c, justify="right")
    for r in records:
        t.add_row(escape(r["label"]), escape(r.get("ran_as", "")), str(r["global_batch"]), f"{r['lr']:g}", f"{r['effective_lr']:g}",
                  f"{r['final_test_accuracy']:.4f}", f"{r['best_test_accuracy']:.4f}", f"{r['final_loss']:.4f}",
                  f"{r['seconds_per_epoch']:.2f}", f"{r['samples_per_s']:,.0f}")
    console.print(t)


def plot(records, out) -> str:
    plt = pyplot()
    if plt is None:
        return "no compare.png (install gpunet[plot] for curves)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in records:
        epochs = range(1, len(r["curves"]["loss"]) + 1)
        axes[0].plot(epochs, r["curves"]["loss"], marker="o", label=r["label"])
        axes[1].plot(epochs, r["curves"]["test_accuracy"], marker="o", label=r["label"])
    for ax, title in zip(axes, ("train loss", "test accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=100)
    plt.close(fig)
    return f"wrote {out / 'compare.png'}"


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1]))
