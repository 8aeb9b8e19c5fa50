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
    check: bool = False      # rerun and compare with the committed result
    results: str = ""        # default: docs/results of the source checkout
    rtol: float = 1e-9


def add_arguments(parser) -> None:
    d = ExperimentConfig()
    parser.add_argument("name", nargs="?", default=d.name, help="the experiment to run (see --list)")
    parser.add_argument("--quick", action="store_true", help="a few seconds on a CPU")
    parser.add_argument("--device", default=d.device,
                        help="cpu, cuda, cuda:N or auto (default cpu, not auto as in train: the committed "
                             "results in docs/results were recorded on the CPU, where --check reproduces "
                             "them bit for bit)")
    parser.add_argument("--out", default=d.out, help="folder for result.json and plots")
    parser.add_argument("--list", action="store_true", help="list the experiments and their questions")
    parser.add_argument("--check", action="store_true",
                        help="rerun and compare with the committed result (docs/results/NAME.json, "
                             "or docs/results/quick/NAME.json with --quick); exit 1 when they differ")
    parser.add_argument("--results", default=d.results, help="folder of committed results for --check")
    parser.add_argument("--rtol", type=float, default=d.rtol, help="relative tolerance of --check")


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
    if not cfg.check and (cfg.results or cfg.rtol != ExperimentConfig.rtol):
        console.print("[bold red]error:[/] --results and --rtol expected --check, got them without it")
        return 2
    if not (cfg.rtol >= 0):
        console.print(f"[bold red]error:[/] --rtol expected a number >= 0, got {cfg.rtol}")
        return 2
    try:
        if cfg.check:
            diffs, notes, result = experiments.check(cfg.name, quick=cfg.quick, device=cfg.device,
                                                     out=cfg.out or None, results=cfg.results or None,
                                                     rtol=cfg.rtol)
        else:
            result = experiments.run(cfg.name, quick=cfg.quick, device=cfg.device, out=cfg.out or None)
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    experiments.show(result, console)
    out = Path(cfg.out) if cfg.out else Path("runs") / "experiments" / cfg.name  # as experiments.run chose
    console.print(f"wrote {escape(str(out / 'result.json'))}"
                  + "".join(f", {escape(str(out / f))}" for f in (result.figures or ())), highlight=False)
    if not cfg.check:
        return 0
    where = experiments.committed_path(cfg.name, cfg.quick, cfg.results or None)
    for n in notes:
        console.print(f"[yellow]note:[/] {escape(n)}")
    if diffs:
        console.print(f"[bold red]check failed:[/] {len(diffs)} difference(s) from {escape(str(where))} "
                      f"(rtol {cfg.rtol:g}):")
        for d in diffs:
            console.print(f"  {escape(d)}")
        return 1
    console.print(f"[green]check passed:[/] table, findings and conclusion match {escape(str(where))} "
                  f"(rtol {cfg.rtol:g})")
    return 0
