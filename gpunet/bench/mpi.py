"""Multi-process data parallel on the CPU with MPI: all-reduce cost and backward overlap.

Starts real MPI jobs (the mpiexec next to this Python) and reports medians:
- an all-reduce of a 0.94 MB float32 buffer (a 235k-parameter MLP's gradient), 2 and 4
  ranks, the way gpunet runs it (Iallreduce polled with a short sleep between tests, so a
  waiting rank yields its core; a blocking MPI_Allreduce spins, which on an
  oversubscribed machine starves the rank it waits for);
- one training step of an MLP (784-1024-1024-1024-10, float32, 64 samples per rank)
  three ways, interleaved in blocks: compute only (no communication), all buckets
  started after backward (overlap off), and buckets started as their layers finish
  backward (overlap on, the default). overlap gain = (off - on) / (off - compute),
  the share of the communication time hidden behind backward.

    gpunet bench mpi --json-out benchmarks/results/mpi-cpu-<cpu>-<date>.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gpunet.bench.host import write_json

def rank_main(out_path, steps, blocks):
    import gpunet as gn
    from gpunet.parallel import MpiCommunicator, ProcessDataParallel
    from gpunet.step import forward_backward

    comm = MpiCommunicator(timeout=120)
    result = {"world": comm.world_size}
    buf = np.ones(235_146, dtype=np.float32)  # 0.94 MB
    times = []
    for i in range(60):
        comm.barrier()
        t0 = time.perf_counter()
        comm.all_reduce([buf])
        times.append(time.perf_counter() - t0)
    result["allreduce_0.94MB_ms"] = statistics.median(times[10:]) * 1e3

    rng = np.random.default_rng(comm.rank)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)

    def make(overlap):
        gn.manual_seed(0)
        model = gn.models.mlp([784, 1024, 1024, 1024, 10])
        opt = gn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return ProcessDataParallel(model, gn.losses.SoftmaxCrossEntropy(), opt, "cpu", comm, overlap=overlap,
                                   bucket_bytes=1 << 20), model, opt
    engines = {"overlap on": make(True), "overlap off": make(False)}
    _, model_c, opt_c = make(False)
    loss_c = gn.losses.SoftmaxCrossEntropy()
    samples = {"compute only": [], "overlap off": [], "overlap on": []}
    for block in range(blocks):
        for name in ("compute only", "overlap off", "overlap on"):
            comm.barrier()
            for s in range(steps):
                t0 = time.perf_counter()
                if name == "compute only":
                    forward_backward(model_c, loss_c, x, y)
                    opt_c.step()
                    opt_c.zero_grad()
                else:
                    engines[name][0].train_step(x, y)
                dt = time.perf_counter() - t0
                if block or s >= 2:  # warm-up steps dropped
                    samples[name].append(dt)
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    result["step_ms"] = med
    result["buckets"] = len(engines["overlap on"][0].buckets)
    comm_ms = med["overlap off"] - med["compute only"]
    result["communication_ms"] = comm_ms
    result["overlap_gain"] = (med["overlap off"] - med["overlap on"]) / comm_ms if comm_ms > 0 else None
    result["ratio_on_vs_off"] = med["overlap on"] / med["overlap off"]
    if comm.rank == 0:
        Path(out_path).write_text(json.dumps(result))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpunet bench mpi", description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="2,4", help="rank counts to measure, comma-separated (default 2,4)")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block (default 10)")
    ap.add_argument("--blocks", type=int, default=5, help="alternating blocks per side (default 5)")
    ap.add_argument("--json-out", default=None, metavar="FILE", help="write the results as JSON to this file")
    ap.add_argument("--rank-job", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 3 or args.blocks < 1:  # the first 2 steps of the first block are warm-up
        raise SystemExit(f"gpunet bench mpi: --steps expected >= 3 and --blocks >= 1, got {args.steps} and {args.blocks}")
    if args.rank_job:
        rank_main(args.rank_job, args.steps, args.blocks)
        return 0
    from gpunet.bench.host import cpu_model, load_average
    from gpunet.parallel.launch import find_mpiexec, mpiexec_argv
    from gpunet.bench import progress
    runs = []
    counts = [int(v) for v in args.ranks.split(",")]
    for i, n in enumerate(counts):
        progress("mpi", i + 1, len(counts), f"{n} ranks")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
            load_before = load_average()
            argv = mpiexec_argv(find_mpiexec(), n, [sys.executable, "-m", "gpunet.bench.mpi", "--rank-job", str(out),
                                                   "--steps", str(args.steps), "--blocks", str(args.blocks)])
            subprocess.run(argv, check=True, env=env, timeout=1200)
            r = json.loads(out.read_text())
            r["load_average_before"] = load_before
            runs.append(r)
            print(json.dumps(r, indent=1))
    from gpunet.parallel.launch import flavour
    result = {"benchmark": "mpi_data_parallel", "device": "cpu", "device_name": cpu_model(),
              "cores": os.cpu_count(), "machine": platform.machine(), "mpi": flavour(find_mpiexec()),
              "blas_threads_per_rank": 1, "load_average_after": load_average(),
              "date": datetime.date.today().isoformat(), "model": "mlp 784-1024-1024-1024-10 float32",
              "batch_per_rank": 64, "steps_per_block": args.steps, "blocks": args.blocks, "runs": runs}
    if args.json_out:
        write_json(args.json_out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
