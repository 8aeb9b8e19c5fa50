"""Write docs/experiments.md from real runs of every experiment.

For each experiment: the question, the command, the measured table (with the device
and date of the run), the conclusion the experiment computed from its numbers, and
the explanation (the module's docstring).

    python scripts/experiments_doc.py                      # run all (full mode), write the doc
    python scripts/experiments_doc.py --reuse runs/experiments   # render existing result.json files
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

import gpunet as gn
from gpunet import experiments
from gpunet.bench.host import cpu_count, cpu_model


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 or v == 0 else f"{v:.3e}"
    return str(v).replace("|", "\\|")


def table(result: dict) -> str:
    cols = result["columns"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in result["rows"]:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def section(i: int, name: str, result: dict) -> str:
    module = experiments.get(name)
    explanation = inspect.cleandoc(module.__doc__ or "")
    mode = "quick" if result.get("quick") else "full"
    return "\n".join([
        f"## {i}. `{name}`", "",
        f"**Question.** {result['question']}", "",
        f"**Command.** `gpunet experiment {name}`" + (" (this table: `--quick`)" if mode == "quick" else ""), "",
        f"**Measured** ({mode} run on {result['device']}, {result.get('date', '?')}, "
        f"{result.get('seconds', 0):.0f} s):", "",
        table(result), "",
        f"**What the numbers say.** {result['conclusion']}", "",
        "**Why.**", "", explanation, "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/experiments.md")
    ap.add_argument("--runs", default="runs/experiments", help="where result.json files are written/read")
    ap.add_argument("--reuse", action="store_true", help="render existing result.json files, run nothing")
    ap.add_argument("--only", nargs="*", default=None, help="run only these (others are reused)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    sections = []
    for i, name in enumerate(experiments.REGISTRY, start=1):
        path = runs / name / "result.json"
        rerun = not args.reuse and (args.only is None or name in args.only)
        if rerun:
            print(f"running {name} ...", flush=True)
            experiments.run(name, quick=False, device=args.device, out=runs / name)
        if not path.is_file():
            print(f"no result for {name} at {path}; skipped", file=sys.stderr)
            continue
        sections.append(section(i, name, json.loads(path.read_text())))
    head = ["# The classic questions, answered by experiment", "",
            "Each section below was produced by `python scripts/experiments_doc.py`, which runs "
            "`gpunet experiment NAME` in full mode and copies its table and its computed conclusion "
            "here. Every experiment is seeded; rerun any command to reproduce its numbers. "
            f"gpunet {gn.__version__}; the runs below used {args.device} on {cpu_model()} "
            f"({cpu_count()} cores), OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(head + sections))
    print(f"wrote {args.out} ({len(sections)} experiments)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
