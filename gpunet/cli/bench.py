"""`gpunet bench train|kernels|loader|parallel|doctor|optim`: run one benchmark with its own flags.

    gpunet bench train --device cpu --json-out auto
    gpunet bench loader --device cuda --json-out runs/bench_loader.json

Every benchmark ships in the package (gpunet/bench/<name>.py), so this works from an
installed wheel; scripts/bench_<name>.py in a checkout run the same modules.
"""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "train": "gpunet vs PyTorch training throughput (MLP, small CNN, CIFAR CNN)",
    "kernels": "the CUDA kernels against their NumPy twins (gpunet.bench.kernels)",
    "loader": "DataLoader throughput next to an MLP step (gpunet.bench.loader)",
    "parallel": "data-parallel overhead at N=1 and N simulated replicas (gpunet.bench.parallel)",
    "doctor": "LiveDoctor's overhead on a training run (gpunet.bench.doctor)",
    "mpi": "MPI all-reduce and bucketed overlap across real ranks on the CPU (gpunet.bench.mpi)",
    "optim": "optimizer step time, fused=True against per-parameter, on the TF CIFAR-10 CNN (gpunet.bench.optim)",
    "host_overhead": "host time of one fused-CE / ReLU-backward call on the GPU wrapper path (gpunet.bench.host_overhead)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=list(BENCHMARKS),
                        help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="the benchmark's own flags (see gpunet bench NAME --help)")


def load(name: str):
    """The benchmark module gpunet.bench.<name> (each has `main(argv) -> int`)."""
    return importlib.import_module(f"gpunet.bench.{name}")


def run(args) -> int:
    argv = list(args.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return int(load(args.benchmark).main(argv) or 0)
