"""Overhead of the data-parallel wrapper at N=1 against the plain trainer, side by side.

Trains the MNIST MLP (784-512-256-10, batch 128) for a few epochs both ways in one
process, alternating, and reports the median epoch time of each and their ratio.
Also times N simulated replicas on the same device for reference.

    python scripts/bench_parallel.py --device cpu --json-out benchmarks/results/parallel-cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys

from rich.console import Console
from rich.table import Table

import gpunet as gn
from gpunet.bench import progress
from gpunet.bench.host import device_name, load_average, write_json


def make_trainer(device, devices):
    gn.manual_seed(0)
    model = gn.models.mlp([784, 512, 256, 10])
    model.to(device)
    opt = gn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device=device, devices=devices)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpunet bench parallel", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto; every replica shares it (default cpu)")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per case; the median is kept")
    ap.add_argument("--samples", type=int, default=20000, help="MNIST training samples per epoch")
    ap.add_argument("--replicas", type=int, default=4, help="also time this many simulated replicas")
    ap.add_argument("--json-out", default=None, help="write the results as JSON to this file", metavar="FILE")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dev = gn.device(args.device)
    except gn.GpunetError as e:
        print(f"bench_parallel: {e}", file=sys.stderr)
        return 2
    data = gn.data.load("mnist", "train")
    data = data.subset(range(min(args.samples, len(data))))
    setups = {"plain trainer": None, "data parallel, N=1": [dev.name],
              f"data parallel, N={args.replicas} on one device": [dev.name] * args.replicas}
    trainers = {k: make_trainer(dev, v) for k, v in setups.items()}
    times = {k: [] for k in setups}
    for r in range(args.repeats + 1):  # the first round warms up and is dropped
        progress("parallel", r + 1, args.repeats + 1, "warm-up round" if r == 0 else f"round {r}")
        for name, t in trainers.items():
            t.epoch = 0
            t.history.epochs.clear()
            t.fit(data, epochs=1, batch_size=128)
            times[name].append(t.history.seconds[0])
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    base = med["plain trainer"]
    rows = [{"setup": k, "median_epoch_s": m, "samples_per_s": len(data) / m, "ratio_vs_plain": m / base,
             "all_epoch_s": times[k][1:]} for k, m in med.items()]
    where = device_name(dev)
    t = Table(title=f"data-parallel overhead on {dev.name} ({where})")
    for c in ("setup", "median epoch (s)", "samples/s", "time vs plain"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["setup"], f"{r['median_epoch_s']:.3f}", f"{r['samples_per_s']:,.0f}", f"{r['ratio_vs_plain']:.3f}×")
    Console().print(t)
    result = {"benchmark": "parallel_overhead", "device": dev.name, "device_name": where,
              "machine": platform.machine(), "load_average": load_average(),
              "date": datetime.date.today().isoformat(), "samples": len(data), "batch_size": 128,
              "repeats": args.repeats, "rows": rows}
    if args.json_out:
        write_json(args.json_out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
