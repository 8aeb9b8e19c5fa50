"""`gpunet launch --nproc N [--host H --port P --nnodes M --node-rank R] -- <gpunet command>`."""
from __future__ import annotations

import dataclasses
import sys

from ..errors import GpunetError, GpunetValueError
from ..parallel.launch import launch


@dataclasses.dataclass
class LaunchConfig:
    nproc: int = 1
    host: str = "127.0.0.1"
    port: int = 29500
    nnodes: int = 1
    node_rank: int = 0
    timeout: float = 0.0     # seconds for the whole run; 0: no limit
    grace: float = 10.0      # seconds between SIGTERM and SIGKILL when stopping ranks


def add_arguments(parser) -> None:
    d = LaunchConfig()
    parser.add_argument("--nproc", type=int, default=d.nproc, help="processes (ranks) on this node")
    parser.add_argument("--host", default=d.host, help="address of rank 0")
    parser.add_argument("--port", type=int, default=d.port, help="port of rank 0")
    parser.add_argument("--nnodes", type=int, default=d.nnodes)
    parser.add_argument("--node-rank", type=int, default=d.node_rank)
    parser.add_argument("--timeout", type=float, default=d.timeout, help="limit for the whole run (s)")
    parser.add_argument("--grace", type=float, default=d.grace)
    parser.add_argument("rank_command", nargs="*", metavar="COMMAND", help="the command for every rank, after --")


def check_config(cfg: LaunchConfig, command) -> None:
    """Refuse flags the launcher cannot use, before any process starts."""
    import math
    checks = [("port", 1 <= cfg.port <= 65535, "in 1-65535"), ("nproc", cfg.nproc >= 1, ">= 1"),
              ("nnodes", cfg.nnodes >= 1, ">= 1"), ("node-rank", 0 <= cfg.node_rank < max(cfg.nnodes, 1),
                                                     f"in [0, {cfg.nnodes})"),
              ("timeout", math.isfinite(cfg.timeout) and cfg.timeout >= 0, ">= 0 (0: no limit)"),
              ("grace", math.isfinite(cfg.grace) and cfg.grace >= 0, ">= 0")]
    for flag, ok, want in checks:
        if not ok:
            raise GpunetValueError(f"--{flag}: expected a value {want}, got {getattr(cfg, flag.replace('-', '_'))!r}")


def run(args) -> int:
    cfg = LaunchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LaunchConfig)})
    command = list(args.rank_command)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        check_config(cfg, command)
        return launch(command, cfg.nproc, cfg.nnodes, cfg.node_rank, cfg.host, cfg.port,
                      timeout=cfg.timeout or None, grace=cfg.grace,
                      log=lambda m: print(m, file=sys.stderr))
    except GpunetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
