"""Benchmarks, all inside the package so `gpunet bench NAME` works from an installed wheel.

    train     gpunet against PyTorch on the same training workloads (gpunet.bench.train)
    kernels   the CUDA kernels against their NumPy twins (gpunet.bench.kernels)
    loader    DataLoader throughput next to an MLP step (gpunet.bench.loader)
    parallel  data-parallel overhead at N=1 and N simulated replicas (gpunet.bench.parallel)
    doctor    LiveDoctor's overhead on a training run (gpunet.bench.doctor)
    optim     optimizer step time, fused=True against per-parameter (gpunet.bench.optim)

Each module has `main(argv) -> int`; scripts/bench_<name>.py in a checkout call the same.
Shared helpers: host.py (device name, load average), torch_twin.py (the PyTorch side).
train's parts: train_layers.py (per-layer split), train_rss.py (peak RSS of an epoch in a
fresh interpreter), perf_table.py (the README's tables from a committed JSON).
Every benchmark says where it is with `progress` (a line per case or round on stderr, so
stdout stays the table).
"""
from __future__ import annotations

import sys


def progress(bench: str, i: int, n: int, what: str) -> None:
    """One line on stderr: "bench NAME: i/n: what ..." (flushed, so pipes and logs see it now)."""
    print(f"bench {bench}: {i}/{n}: {what} ...", file=sys.stderr, flush=True)
