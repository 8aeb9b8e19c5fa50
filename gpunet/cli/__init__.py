"""The `gpunet` command line: one module per subcommand, imported only when used.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`.
Flags are long-only; their defaults come from one dataclass per command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported lazily so `gpunet info`
# works even where a heavier command's optional dependencies are missing.
COMMANDS = {
    "train": ("gpunet.cli.train", "train a model and write a run folder (the main job)"),
    "evaluate": ("gpunet.cli.evaluate", "evaluate a checkpoint on a dataset"),
    "bench": ("gpunet.cli.bench", "benchmarks: train (gpunet vs PyTorch), kernels, loader, parallel"),
    "compare": ("gpunet.cli.compare", "compare single- against multi-device runs: a table plus curves"),
    "doctor": ("gpunet.cli.doctor", "diagnose a model setup with static checks and a short probe run"),
    "experiment": ("gpunet.cli.experiment", "run an experiment that answers a classic training question"),
    "launch": ("gpunet.cli.launch", "start one process per rank for multi-process data parallel"),
    "info": ("gpunet.cli.info", "report devices, versions and kernel status"),
    "summary": ("gpunet.cli.summary", "show a zoo model layer by layer: output shapes, parameters, memory"),
    "export": ("gpunet.cli.export", "write a trained run's model as ONNX and/or safetensors (PyTorch names)"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (for its flags)."""
    parser = argparse.ArgumentParser(prog="gpunet", allow_abbrev=False,
                                     description="GPU-accelerated neural-network training (CuPy/NumPy).")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"gpunet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        p.set_defaults(_module=module)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
