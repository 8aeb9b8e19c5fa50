"""Benchmark: gpunet against PyTorch on the same training workloads (MLP, small CNN, CIFAR CNN).

    python scripts/bench_train.py --device cpu --json-out auto
    python scripts/bench_train.py --device cuda --json-out benchmarks/results/train-h100.json
    python scripts/bench_train.py --device cuda --precision bf16   # beside PyTorch's torch.autocast

The logic lives in gpunet.bench.train (scripts/ is not inside the wheel), so
`gpunet bench train` runs the same thing from an installed package. PyTorch is optional:
without it only gpunet's column is filled.
"""
from __future__ import annotations

import sys

from gpunet.bench.train import main

if __name__ == "__main__":
    sys.exit(main())
