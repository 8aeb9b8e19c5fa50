"""The `gpunet` command line: one module per subcommand, imported only when used.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`.
Flags are long-only; their defaults come from one dataclass per command.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path

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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        p.set_defaults(_module=module)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an unexpected error")
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


# The folder where the running command keeps its files (set by `gpunet train` once it has
# one): the full traceback of an unexpected error is written there.
RUN_FOLDER: Path | None = None


def set_run_folder(folder) -> None:
    global RUN_FOLDER
    RUN_FOLDER = Path(folder) if folder is not None else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(chosen)  # imports the chosen command (its dependencies may be missing)
    except Exception as e:
        return report_unexpected(e, debug="--debug" in argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails the write with EFBIG, which
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # is reported, instead of killing the process
    set_run_folder(None)
    try:
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the last line of defence: one line, never a bare traceback
        return report_unexpected(e, debug=bool(getattr(args, "debug", False)))


def report_unexpected(e: BaseException, debug: bool = False) -> int:
    """Print one `error:` line for `e` and return the exit code.

    gpunet's own errors and OS errors (a full disk, a read-only folder, ...) are the
    user's to fix: exit code 2. Anything else is a bug: exit code 1, the exception's
    type and message, and the path of a file holding the full traceback (the run
    folder's `error-traceback.txt`, or a temp file when there is no run folder yet).
    """
    from ..errors import GpunetError, describe_os_error
    if isinstance(e, GpunetError):
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, OSError):
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        if debug:
            traceback.print_exception(e)
        return 2
    text = "".join(traceback.format_exception(e))
    where = _write_traceback(text)
    first = (str(e).splitlines() or [""])[0]
    print(f"error: unexpected {type(e).__name__}: {first} (a bug in gpunet; full traceback in "
          f"{where}; rerun with --debug to print it)", file=sys.stderr)
    if debug:
        print(text, file=sys.stderr, end="")
    return 1


def _write_traceback(text: str) -> str:
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    body = f"gpunet {' '.join(sys.argv[1:])}\n{stamp}\n\n{text}".encode()
    if RUN_FOLDER is not None and RUN_FOLDER.is_dir():
        path = RUN_FOLDER / "error-traceback.txt"
        try:
            with open(path, "wb") as f:
                f.write(body)
            return str(path)
        except OSError:
            pass
    try:
        fd, path = tempfile.mkstemp(prefix="gpunet-traceback-", suffix=".txt")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return path
    except OSError as err:
        return f"nowhere (cannot write a traceback file: {err})"
