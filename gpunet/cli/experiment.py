"""`gpunet experiment NAME [--quick] [--device ...]` and `gpunet experiment --list`."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import experiments
from ..errors import GpunetError


@dataclasses.dataclass
class ExperimentConfig:
    name: str = ""
    quick: bool = False
    device: str = "cpu"
    out: str = ""            # default: runs/experiments/<name>
    list: bool = False


def add_arguments(parser) -> None:
    d = ExperimentConfig()
    parser.add_argument("name", nargs="?", default=d.name, help="the experiment to run (see --list)")
    parser.add_argument("--quick", action="store_true", help="a few seconds on a CPU")
    parser.add_argument("--device", default=d.device, help='"cpu", "cuda", "cuda:N" or "auto"')
    parser.add_argument("--out", default=d.out, help="folder for result.json and plots")
    parser.add_argument("--list", action="store_true", help="list the experiments and their questions")


def run(args) -> int:
    console = Console()
    cfg = ExperimentConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)})
    if cfg.list or not cfg.name:
        t = Table(title="gpunet experiments")
        t.add_column("name")
        t.add_column("question")
        for name, question in experiments.available().items():
            t.add_row(name, escape(question))
        console.print(t)
        return 0 if cfg.list else 2
    try:
        result = experiments.run(cfg.name, quick=cfg.quick, device=cfg.device, out=cfg.out or None)
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    experiments.show(result, console)
    out = Path(cfg.out) if cfg.out else Path("runs") / "experiments" / cfg.name  # as experiments.run chose
    console.print(f"wrote {escape(str(out / 'result.json'))}"
                  + "".join(f", {escape(str(out / f))}" for f in (result.figures or ())), highlight=False)
    return 0
