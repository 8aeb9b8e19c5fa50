"""`gpunet bench train|kernels|loader|parallel`: run one benchmark with its own flags.

    gpunet bench train --device cpu --out auto
    gpunet bench loader --device cuda --out runs/bench_loader.json

`train` ships with the package (gpunet.bench.train). kernels, loader and parallel are
scripts in the source tree (scripts/bench_<name>.py, not inside the wheel): they run
from a checkout, and an installed package says where to find them.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = {
    "train": "gpunet vs PyTorch training throughput (MLP, small CNN, CIFAR CNN)",
    "kernels": "the CUDA kernels against their NumPy twins (scripts/bench_kernels.py)",
    "loader": "DataLoader throughput next to an MLP step (scripts/bench_loader.py)",
    "parallel": "data-parallel overhead at N=1 and N simulated replicas (scripts/bench_parallel.py)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=list(BENCHMARKS),
                        help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="the benchmark's own flags (see gpunet bench NAME --help)")


def scripts_dir() -> Path:
    """scripts/ of a source checkout: the one this package was imported from (an editable
    install), else the current directory's (an installed wheel run inside a checkout)."""
    beside = Path(__file__).resolve().parents[2] / "scripts"
    return beside if (beside / "bench_train.py").is_file() else Path.cwd() / "scripts"


def load_script(name: str):
    """The module scripts/bench_<name>.py, or None when this is not a source checkout."""
    path = scripts_dir() / f"bench_{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"gpunet_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args) -> int:
    argv = list(args.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if args.benchmark == "train":
        from ..bench.train import main
        return main(argv)
    module = load_script(args.benchmark)
    if module is None:
        print(f"gpunet bench {args.benchmark}: scripts/bench_{args.benchmark}.py is only in the source "
              f"tree (not in the installed package); run it from a checkout of gpunet", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)
