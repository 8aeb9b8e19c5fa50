"""`gpunet launch --nproc N [--timeout S] [--mpiexec PATH] [--hosts H1,H2] -- <command>`: mpiexec, thinly."""
from __future__ import annotations

import dataclasses
import sys

from ..errors import GpunetError, GpunetValueError
from ..parallel.launch import launch


@dataclasses.dataclass
class LaunchConfig:
    nproc: int = 1
    timeout: float = 0.0     # seconds each collective may wait for the slowest rank (0: GPUNET_TIMEOUT or 120)
    mpiexec: str = ""        # the MPI launcher (default: the one next to this Python, then PATH)
    hosts: str = ""          # comma-separated hosts, passed to mpiexec (-hosts / --host)
    grace: float = 30.0      # seconds after a stop request before every rank is killed


def add_arguments(parser) -> None:
    d = LaunchConfig()
    parser.add_argument("--nproc", type=int, default=d.nproc, help=f"MPI ranks (processes) to start (default {d.nproc})")
    parser.add_argument("--timeout", type=float, default=d.timeout,
                        help="seconds any collective may wait before the job stops naming the missing rank "
                             "(sets GPUNET_TIMEOUT; default 120)")
    parser.add_argument("--mpiexec", default=d.mpiexec, help="the mpiexec to run (default: next to this Python)")
    parser.add_argument("--hosts", default=d.hosts, help="hosts for mpiexec, comma-separated (default: this one)")
    parser.add_argument("--grace", type=float, default=d.grace,
                        help="seconds the ranks get to checkpoint and exit after SIGTERM/SIGINT/SIGHUP")
    parser.add_argument("rank_command", nargs="*", metavar="COMMAND", help="the command for every rank, after --")


def check_config(cfg: LaunchConfig, command) -> None:
    """Refuse flags the launcher cannot use, before any process starts."""
    import math
    checks = [("nproc", cfg.nproc >= 1, "an int >= 1"),
              ("timeout", math.isfinite(cfg.timeout) and cfg.timeout >= 0, "seconds >= 0 (0: the default, 120 s)"),
              ("grace", math.isfinite(cfg.grace) and cfg.grace >= 0, "seconds >= 0")]
    for flag, ok, want in checks:
        if not ok:
            raise GpunetValueError(f"--{flag} expected {want}, got {getattr(cfg, flag)!r}")


def run(args) -> int:
    cfg = LaunchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LaunchConfig)})
    command = list(args.rank_command)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        check_config(cfg, command)
        return launch(command, cfg.nproc, timeout=cfg.timeout or None, mpiexec=cfg.mpiexec or None,
                      hosts=cfg.hosts or None, grace=cfg.grace)
    except GpunetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
