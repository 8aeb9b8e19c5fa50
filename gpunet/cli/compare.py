"""`gpunet compare`: single- against multi-device runs of one model, a table plus curves.

    gpunet compare --dataset mnist --model mlp --replicas 1,2,4 --reduce mean,sum --epochs 3
    gpunet compare --devices cuda:0,cuda:1 ...         # real GPUs
    gpunet compare --replicas 4 --device cuda:0 ...    # simulated replicas on one device
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import gpunet as gn

from .. import compare, runconfig
from ..checkpoint import atomic_write_bytes
from ..errors import GpunetError, GpunetValueError
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
    device: str = "cpu"
    devices: str = ""             # e.g. "cuda:0,cuda:1": one replica per listed GPU
    seed: int = 0
    dtype: str = "float32"
    train_samples: int = 0        # 0: the whole training split
    data_root: str = ""
    out: str = "runs/compare"


def add_arguments(parser) -> None:
    for f in dataclasses.fields(CompareConfig):
        add_field_flag(parser, f.name, f.type, f.default, f"(default {f.default!r})")


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
    runconfig.TrainConfig(hidden=cfg.hidden).hidden_sizes()


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
    if devices and max(replicas) > len(devices):
        raise GpunetValueError(f"--replicas: expected at most {len(devices)} (one per --devices entry), "
                               f"got {max(replicas)}")
    tcfg = runconfig.TrainConfig(dataset=cfg.dataset, model=cfg.model, hidden=cfg.hidden, seed=cfg.seed,
                                 val_fraction=0.0, data_root=cfg.data_root)
    train, _, test = runconfig.datasets(tcfg)
    if cfg.train_samples:
        train = train.subset(range(min(cfg.train_samples, len(train))))
    shape, classes = runconfig.sample_shape(train), len(train.classes)

    def make_model():
        gn.manual_seed(cfg.seed)
        return runconfig.build_model(tcfg, shape, classes)

    grid = compare.configurations(replicas, _csv(cfg.reduce), _csv(cfg.keep), _csv(cfg.lr_scaling),
                                  cfg.warmup_epochs)
    records = []
    for i, c in enumerate(grid):
        console.print(f"[{i + 1}/{len(grid)}] {escape(c.label)}")
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


def show(records, console) -> None:
    t = Table(title="single vs multi-device")
    cols = ("configuration", "global batch", "lr", "effective lr", "final test acc", "best test acc",
            "final loss", "s/epoch", "samples/s")
    for c in cols:
        t.add_column(c, justify="right")
    for r in records:
        t.add_row(escape(r["label"]), str(r["global_batch"]), f"{r['lr']:g}", f"{r['effective_lr']:g}",
                  f"{r['final_test_accuracy']:.4f}", f"{r['best_test_accuracy']:.4f}", f"{r['final_loss']:.4f}",
                  f"{r['seconds_per_epoch']:.2f}", f"{r['samples_per_s']:,.0f}")
    console.print(t)


def plot(records, out) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
