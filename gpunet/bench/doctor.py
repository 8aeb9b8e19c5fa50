"""Overhead of LiveDoctor on the MNIST MLP (784-512-256-10, batch 128, one epoch, CPU by default).

Runs epochs alternately with and without a LiveDoctor (fresh model each time, same
seed; "without" is `Trainer(doctor=False)`, since the Trainer adds a LiveDoctor by
default) and reports the median epoch time of each, wall clock and process CPU time, and

    overhead = median(with) / median(without) − 1.

On a shared machine the epoch-to-epoch noise can exceed the overhead, so the doctor's
own work is also timed directly: the time inside its callbacks plus, for each sampled
step, the cost of ‖g‖² and ‖w‖² of every parameter (timed separately afterwards):

    direct overhead = doctor seconds / epoch seconds without the doctor.

Usage: python -m gpunet bench doctor [--dataset mnist] [--repeats 5] [--device cpu] [--json-out bench.json]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time

import numpy as np

from rich.console import Console
from rich.table import Table

import gpunet as gn
from gpunet.bench import progress
from gpunet import backend, data, doctor, losses, models, optim
from gpunet.bench.host import blas_threads, cpu_count, device_name, load_average, write_json


class TimedLiveDoctor(doctor.LiveDoctor):
    """A LiveDoctor that adds up the wall time spent in its own callbacks."""

    seconds = 0.0

    def _timed(self, method, *args):
        t0 = time.perf_counter()
        try:
            return method(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def on_train_begin(self, logs=None):
        self._timed(super().on_train_begin, logs)

    def on_batch_end(self, step, logs=None):
        self._timed(super().on_batch_end, step, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._timed(super().on_epoch_end, epoch, logs)

    def on_train_end(self, logs=None):
        self._timed(super().on_train_end, logs)


def sample_cost(params, repeats=20) -> float:
    """Seconds for one gradient sample: ‖g‖² and ‖w‖² of every parameter, stacked (as live.py)."""
    xp = backend.xp_of(params[0].data)
    t0 = time.perf_counter()
    for _ in range(repeats):
        s = xp.stack([xp.stack([xp.vdot(p.grad.ravel(), p.grad.ravel()), xp.vdot(p.data.ravel(), p.data.ravel())])
                      for p in params])
    float(s.sum())  # sync
    return (time.perf_counter() - t0) / repeats


def make_trainer(train, device, with_doctor: bool):
    """A fresh model and Trainer with exactly one LiveDoctor (timed) or none at all.

    The Trainer adds a LiveDoctor by default (`doctor=True`), so the baseline must say
    `doctor=False`: otherwise "without" would carry a doctor too and the overhead would
    be about 0 by construction.
    """
    gn.manual_seed(0)
    model = models.mlp([int(np.prod(train.x.shape[1:])), 512, 256, 10])
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    live = TimedLiveDoctor(verbose=False) if with_doctor else None
    trainer = gn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, device=device, doctor=False,
                         callbacks=[live] if live else [])
    doctors = [cb for cb in trainer.callbacks.callbacks if isinstance(cb, doctor.LiveDoctor)]
    if doctors != ([live] if live else []):
        raise AssertionError(f"bench_doctor: expected {'one timed' if live else 'no'} LiveDoctor, "
                             f"the trainer has {doctors}")
    return trainer, live, opt


def one_epoch(train, device, with_doctor: bool, batch_size: int) -> dict:
    trainer, live, opt = make_trainer(train, device, with_doctor)
    loader = trainer.loader(train, batch_size)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(loader, 1, batch_size)  # fit ends in a sync (the epoch's loss is read on the host)
    out = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    if live is not None:
        if live.findings:
            raise AssertionError(f"unexpected findings on a healthy run: {live.findings}")
        samples = len(live._points)  # one sampled step per logging point
        out["doctor"] = live.seconds + samples * sample_cost(opt.params)
        out["samples"] = samples
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpunet bench doctor", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist", help="dataset of the timed epochs (default mnist)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per side; the median is kept")
    ap.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    ap.add_argument("--json-out", default="", help="write the results as JSON to this file", metavar="FILE")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    train = data.load(args.dataset, "train")
    load_before = load_average()
    progress("doctor", 0, args.repeats, "warm-up epoch")
    one_epoch(train, args.device, True, args.batch_size)  # warm-up (allocator, BLAS threads, caches)
    runs = {"without": [], "with": []}
    for i in range(args.repeats):  # alternate, so drift in machine load hits both sides alike
        progress("doctor", i + 1, args.repeats, "an epoch without and one with the doctor")
        for kind in (("without", "with") if i % 2 == 0 else ("with", "without")):
            runs[kind].append(one_epoch(train, args.device, kind == "with", args.batch_size))
    med = {(k, m): statistics.median(r[m] for r in v) for k, v in runs.items() for m in ("wall", "cpu")}
    doctor_s = statistics.median(r["doctor"] for r in runs["with"])
    dev = gn.device(args.device)
    threads, blas = blas_threads()
    result = {"benchmark": "doctor_overhead", "date": datetime.date.today().isoformat(),
              "device_name": device_name(dev), "cpu_count": cpu_count(), "blas_threads": threads, "blas": blas,
              "load_average_before": load_before, "load_average_after": load_average(),
              "baseline": "Trainer(doctor=False), no LiveDoctor at all",
              "dataset": args.dataset, "device": dev.name, "batch_size": args.batch_size,
              "model": f"mlp {int(np.prod(train.x.shape[1:]))}-512-256-10", "repeats": args.repeats, "epochs": runs,
              "median_wall_without_s": med["without", "wall"], "median_wall_with_s": med["with", "wall"],
              "median_cpu_without_s": med["without", "cpu"], "median_cpu_with_s": med["with", "cpu"],
              "overhead_wall": med["with", "wall"] / med["without", "wall"] - 1.0,
              "overhead_cpu": med["with", "cpu"] / med["without", "cpu"] - 1.0,
              "min_wall_without_s": min(r["wall"] for r in runs["without"]),
              "min_wall_with_s": min(r["wall"] for r in runs["with"]),
              "doctor_seconds_per_epoch": doctor_s, "overhead_direct": doctor_s / med["without", "wall"]}
    result["overhead_min_wall"] = result["min_wall_with_s"] / result["min_wall_without_s"] - 1.0
    # Spread: the epochs' range and the per-round ratios (each round ran both sides back to back).
    for kind in ("without", "with"):
        result[f"max_wall_{kind}_s"] = max(r["wall"] for r in runs[kind])
    ratios = [w["wall"] / wo["wall"] - 1.0 for w, wo in zip(runs["with"], runs["without"])]
    result["overhead_wall_per_round"] = ratios
    result["overhead_wall_per_round_min"], result["overhead_wall_per_round_max"] = min(ratios), max(ratios)
    result["overhead_wall_per_round_median"] = statistics.median(ratios)
    table = Table(title=f"LiveDoctor overhead: {result['model']}, {args.dataset}, batch {args.batch_size}, "
                        f"{result['device']}")
    for col in ("", "median wall s", "median CPU s", "best wall s", "wall s per epoch"):
        table.add_column(col, justify="right")
    for kind in ("without", "with"):
        table.add_row(f"{kind} LiveDoctor", f"{med[kind, 'wall']:.3f}", f"{med[kind, 'cpu']:.3f}",
                      f"{result[f'min_wall_{kind}_s']:.3f}",
                      ", ".join(f"{r['wall']:.2f}" for r in runs[kind]))
    console = Console()
    console.print(table)
    console.print(f"overhead: median wall {result['overhead_wall']:+.2%}, median CPU {result['overhead_cpu']:+.2%}, "
                  f"best wall {result['overhead_min_wall']:+.2%}; "
                  f"direct: {doctor_s * 1e3:.1f} ms of doctor work per epoch = {result['overhead_direct']:.3%} "
                  f"of the epoch ({statistics.median(r['samples'] for r in runs['with'])} checks); "
                  f"per round median {result['overhead_wall_per_round_median']:+.2%}, "
                  f"range {result['overhead_wall_per_round_min']:+.2%} .. "
                  f"{result['overhead_wall_per_round_max']:+.2%}; load average {load_before} -> "
                  f"{result['load_average_after']}")
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
