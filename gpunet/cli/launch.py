"""`gpunet launch --nproc N [--host H --port P --nnodes M --node-rank R] -- <gpunet command>`."""
from __future__ import annotations

import dataclasses
import sys

from ..errors import GpunetError
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
    parser.add_argument("--nproc", type=int, default=d.nproc, help=f"processes (ranks) on this node (default {d.nproc})")
    parser.add_argument("--host", default=d.host, help=f"address of rank 0 (default {d.host})")
    parser.add_argument("--port", type=int, default=d.port, help=f"port of rank 0 (default {d.port})")
    parser.add_argument("--nnodes", type=int, default=d.nnodes, help=f"machines in the run (default {d.nnodes})")
    parser.add_argument("--node-rank", type=int, default=d.node_rank,
                        help=f"this machine's index, 0 on the one with rank 0 (default {d.node_rank})")
    parser.add_argument("--timeout", type=float, default=d.timeout,
                        help="limit for the whole run in seconds (default 0: none)")
    parser.add_argument("--grace", type=float, default=d.grace,
                        help=f"seconds between SIGTERM and SIGKILL when stopping ranks (default {d.grace:g})")
    parser.add_argument("rank_command", nargs="*", metavar="COMMAND", help="the command for every rank, after --")


def run(args) -> int:
    cfg = LaunchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LaunchConfig)})
    command = list(args.rank_command)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        return launch(command, cfg.nproc, cfg.nnodes, cfg.node_rank, cfg.host, cfg.port,
                      timeout=cfg.timeout or None, grace=cfg.grace,
                      log=lambda m: print(m, file=sys.stderr))
    except GpunetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
