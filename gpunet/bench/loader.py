"""Benchmark: DataLoader throughput on MNIST next to one MLP training step.

    python scripts/bench_loader.py --device auto --json-out runs/bench_loader.json

For batch sizes 128 and 1024 it times
  - the loader, resident (uint8 data on the device, gather + cast + scale per batch) and
    host-streamed (gather on the host, one transfer per batch), over whole epochs so the
    per-epoch permutation transfer is included;
  - one training step of a 784-512-256-10 ReLU MLP with softmax cross-entropy: forward,
    backward and an SGD update, written with plain xp GEMMs so it costs what the real
    layers cost.
Times are medians over --repeats runs, with a device sync before each clock read.
loader/step < 1 means the loader is not the bottleneck. Results print as a rich
table and are written as JSON (device, date, versions) to --json-out.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import numpy as np

import gpunet as gn
from gpunet.bench import progress
from gpunet.backend import versions
from gpunet.bench.host import device_name, write_json

BATCH_SIZES = (128, 1024)
LAYERS = (784, 512, 256, 10)


def time_loader(loader, dev, repeats: int) -> float:
    """Median seconds per batch over `repeats` full epochs (one warm-up epoch first)."""
    def epoch(e):
        for x, y in loader.iterate(e):
            pass
        dev.synchronize()

    epoch(0)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        epoch(r + 1)
        times.append((time.perf_counter() - t0) / len(loader))
    return statistics.median(times)


def make_mlp(dev, dtype=np.float32):
    rng = np.random.default_rng(0)
    params = []
    for fan_in, fan_out in zip(LAYERS[:-1], LAYERS[1:]):
        w = rng.normal(0, np.sqrt(2 / fan_in), size=(fan_in, fan_out)).astype(dtype)
        params += [dev.asarray(w), dev.asarray(np.zeros(fan_out, dtype))]
    return params


def mlp_step(params, x, y, lr=0.01):
    """Forward, softmax cross-entropy backward and SGD, as the layers will do it."""
    xp = gn.backend.xp_of(x)
    w1, b1, w2, b2, w3, b3 = params
    h1 = xp.maximum(x @ w1 + b1, 0)
    h2 = xp.maximum(h1 @ w2 + b2, 0)
    logits = h2 @ w3 + b3
    p = xp.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[xp.arange(len(y)), y] -= 1
    d3 = p / len(y)
    d2 = (d3 @ w3.T) * (h2 > 0)
    d1 = (d2 @ w2.T) * (h1 > 0)
    grads = [x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ d3, d3.sum(0)]
    for w, g in zip(params, grads):
        w -= lr * g


def time_step(loader, dev, repeats: int, steps: int = 20) -> float:
    """Median seconds per MLP step, on a fixed batch from the loader."""
    x, y = next(iter(loader.iterate(0)))
    x = x.reshape(len(x), -1)
    params = make_mlp(dev)
    mlp_step(params, x, y)
    dev.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            mlp_step(params, x, y)
        dev.synchronize()
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def run(args) -> dict:
    dev = gn.device(args.device)
    ds = gn.data.load("mnist", "train", root=args.root)
    rows = []
    for i, bs in enumerate(BATCH_SIZES):
        progress("loader", i + 1, len(BATCH_SIZES), f"batch size {bs}")
        resident = gn.data.DataLoader(ds, bs, device=dev, seed=0)
        host = gn.data.DataLoader(ds, bs, device=dev, seed=0, resident_budget_bytes=0)
        t_res, t_host = time_loader(resident, dev, args.repeats), time_loader(host, dev, args.repeats)
        t_step = time_step(resident, dev, args.repeats)
        rows.append({"batch_size": bs, "batches_per_s_resident": 1 / t_res,
                     "loader_ms_resident": 1e3 * t_res, "batches_per_s_host": 1 / t_host,
                     "loader_ms_host": 1e3 * t_host, "step_ms": 1e3 * t_step,
                     "ratio_loader_over_step": t_res / t_step})
    return {"benchmark": "bench_loader", "dataset": "mnist/train", "device": dev.name,
            "device_name": device_name(dev), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": versions(), "repeats": args.repeats, "mlp": list(LAYERS), "results": rows}


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"DataLoader vs MLP step, MNIST train, {report['device']} ({report['device_name']})")
    # "resident": data on the device, gathered there; "host": gathered on the host, sent per batch.
    for col in ("batch", "resident b/s", "resident ms", "host b/s", "host ms", "step ms", "loader/step"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in report["results"]:
        t.add_row(str(r["batch_size"]), f"{r['batches_per_s_resident']:.0f}", f"{r['loader_ms_resident']:.3f}",
                  f"{r['batches_per_s_host']:.0f}", f"{r['loader_ms_host']:.3f}", f"{r['step_ms']:.3f}",
                  f"{r['ratio_loader_over_step']:.3f}")
    console = Console()
    console.width = max(console.width, 100)  # pipes default to 80 columns: keep headers whole
    console.print(t)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpunet bench loader", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"], help="cpu, cuda or auto")
    p.add_argument("--json-out", default=None, help="write the results as JSON to this file", metavar="FILE")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--root", default=None, help="folder holding mnist/ (else the usual search)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except gn.GpunetError as e:
        print(f"bench_loader: {e}", file=sys.stderr)
        return 2
    print_table(report)
    if args.json_out:
        write_json(args.json_out, report, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
