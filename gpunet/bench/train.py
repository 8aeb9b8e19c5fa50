"""Benchmark: training throughput of gpunet against PyTorch on the same workloads.

    gpunet bench train --device cpu --json-out auto
    python scripts/bench_train.py --device cuda --json-out benchmarks/results/train-h100.json

Workloads (float32, SGD with momentum 0.9, softmax cross-entropy):
    mlp-b128, mlp-b1024   MLP 784-512-256-10 on MNIST, batch 128 and 1024
    small-cnn             gn.models.small_cnn on Fashion-MNIST, batch 256
    tf-cifar10-cnn        gn.models.tf_cifar10_cnn on random 3×24×24 data, batch 128

Fairness. One process runs both sides. PyTorch's model is built layer by layer from
gpunet's (gpunet.bench.torch_twin) and starts from a copy of gpunet's initial weights.
Both see the same batches, already on the device, and neither reads the loss on the host
inside a timed segment. PyTorch gets as many CPU threads as NumPy's BLAS (both recorded);
on a GPU, TF32 is switched off in PyTorch because CuPy's float32 GEMMs do not use it.

Correctness first. Before timing, both sides train `--check-steps` steps from the same
weights on the same batches; the losses must agree to a relative `--check-rtol`
(default 1e-3), else the row is marked FAIL and the command exits 1. `--check-float64`
repeats the check in float64, where agreement to 1e-9 shows the same formulas rather than
merely close ones (float32 trajectories drift apart by rounding, faster at high lr).

Timing. After `--warmup` steps per side, each round times one segment per side of about
`--seconds` seconds (a whole number of steps, device synced at both ends), alternating
which side goes first to cancel drift; samples/s is the median over `--rounds` rounds.
The ratio is paired: each round's gpunet segment over the PyTorch segment next to it, so
both saw the same machine; the row reports the median of these per-round ratios with their
min, max and quartiles. The load average is recorded before and after each row.

Threads. `--threads 1,2` sweeps: for each count both sides get that many threads (gpunet
through gn.set_threads, i.e. its BLAS and its own CPU workers; PyTorch through
torch.set_num_threads), and the JSON holds one row per (workload, threads).

Where the time goes. `--layers` adds, per row, the forward and backward milliseconds of each
top-level layer on both sides (gpunet.bench.train_layers), and `--rss` the peak RSS of one
epoch of each side in a fresh interpreter (gpunet.bench.train_rss).
scripts/perf_table.py turns a committed JSON into the README's tables.

Precision. `--precision tf32|bf16|fp16` runs gpunet at that precision (gpunet.precision; fp16
with its dynamic loss scaler, through the Trainer's engine) and PyTorch under
`torch.autocast` in the same dtype (fp16 with a GradScaler; tf32 through
`torch.backends.cuda.matmul.allow_tf32`, a GPU setting: on the CPU PyTorch's side stays
float32, as the row records). The loss check then allows `CHECK_RTOL_LOW` (the two round at
different points). On the CPU gpunet emulates the low precisions (docs/precision.md): their
numbers are not speed claims.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import numpy as np

from .. import backend, precision, threads
from ..errors import GpunetError, GpunetValueError
from . import host, perf_table, torch_twin, train_layers, train_rss
from .train_sides import WORKLOADS, batches, build_sides, synchronizer
from .train_sides import Workload, random_images  # noqa: F401 - part of this module's interface
from .host import write_json

CHECK_RTOL = 1e-3
CHECK_RTOL_FLOAT64 = 1e-9
CHECK_RTOL_LOW = 5e-2  # --precision tf32/bf16/fp16: both sides round, at different points


# ---------------------------------------------------------------- check, then time

def to_float(loss) -> float:
    if hasattr(loss, "detach"):
        return float(loss.detach().cpu())  # sync
    return float(backend.to_numpy(loss))  # sync


def check_losses(sides, data, steps: int, rtol: float) -> dict:
    """Train `steps` steps on each side from the same weights; compare the loss curves."""
    curves = {}
    for side, (step, _) in sides.items():
        pool = data[side]
        curves[side] = [to_float(step(*pool[i % len(pool)])) for i in range(steps)]
    out = {"steps": steps, "rtol": rtol, "gpunet_losses": curves["gpunet"]}
    if "torch" not in curves:
        out.update(ok=None, note="PyTorch not installed: no reference")
        return out
    a, b = np.array(curves["gpunet"]), np.array(curves["torch"])
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
    out.update(torch_losses=curves["torch"], final_gpunet=float(a[-1]), final_torch=float(b[-1]),
               final_rel_diff=float(rel[-1]), max_rel_diff=float(rel.max()),
               ok=bool(np.all(np.isfinite(a)) and rel.max() <= rtol))
    return out


def run_segment(step, pool, sync, n_steps: int, start: int) -> float:
    """Seconds for n_steps steps, synced at both ends (the loss is never read on the host)."""
    sync()
    t0 = time.perf_counter()
    for i in range(start, start + n_steps):
        step(*pool[i % len(pool)])
    sync()
    return time.perf_counter() - t0


def time_sides(sides, data, dev, args) -> dict:
    """Median samples/s per side over alternating rounds of ~args.seconds segments."""
    syncs = {s: synchronizer(s, dev) for s in sides}
    n_steps = {}
    for side, (step, _) in sides.items():
        run_segment(step, data[side], syncs[side], args.warmup, 0)
        per_step = run_segment(step, data[side], syncs[side], 3, 0) / 3
        n_steps[side] = max(2, int(round(args.seconds / max(per_step, 1e-6))))
    rates = {s: [] for s in sides}
    order = list(sides)
    for r in range(args.rounds):
        for side in (order if r % 2 == 0 else order[::-1]):
            bs = len(data[side][0][1])
            secs = run_segment(sides[side][0], data[side], syncs[side], n_steps[side], r)
            rates[side].append(n_steps[side] * bs / secs)
    out = {s: {"samples_per_s": statistics.median(v), "segments": [round(x, 1) for x in v],
               "steps_per_segment": n_steps[s]} for s, v in rates.items()}
    if "torch" in rates:
        out["ratio"] = paired_ratios(rates["gpunet"], rates["torch"])
    return out


def spread(values) -> dict:
    """Median, min, max and quartiles (linear interpolation, as numpy's default) of `values`."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise GpunetValueError(f"bench train: spread expected finite values, got {list(values)!r}")
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "min": float(v.min()), "max": float(v.max()),
            "q1": float(q1), "q3": float(q3), "n": int(v.size)}


def paired_ratios(gpunet_rates, torch_rates) -> dict:
    """Per-round gpunet/PyTorch ratios (round r's two segments ran next to each other) and
    their spread: {"rounds": [...], "median", "min", "max", "q1", "q3", "n"}."""
    if len(gpunet_rates) != len(torch_rates) or not len(gpunet_rates):
        raise GpunetValueError(f"bench train: paired ratios expected as many gpunet as PyTorch rounds "
                               f"(at least 1), got {len(gpunet_rates)} and {len(torch_rates)}")
    rounds = [g / t for g, t in zip(gpunet_rates, torch_rates)]
    return {"rounds": [round(r, 4) for r in rounds], **spread(rounds)}


def run_workload(w: Workload, dev, args, with_torch: bool) -> dict:
    prec = getattr(args, "precision", "fp32")
    load_before = host.load_average()
    sides = build_sides(w, dev, args.seed, with_torch, **({} if prec == "fp32" else {"prec": prec}))
    data, what = batches(w, dev, args.pool, args.seed, with_torch)
    check = check_losses(sides, data, args.check_steps, args.check_rtol)
    timing = time_sides(sides, data, dev, args)
    row = {"workload": w.name, "batch_size": w.batch_size, "data": what, "lr": w.lr,
           "momentum": w.momentum, "precision": prec, "gpunet": timing["gpunet"], "check": check}
    if with_torch and prec != "fp32":
        row["torch_precision"] = torch_twin.autocast_description(prec, dev.is_gpu)
    if with_torch and getattr(args, "check_float64", False):
        # Same steps in float64: rounding no longer hides a wrong formula (agreement ~1e-15).
        sides64 = build_sides(w, dev, args.seed, with_torch, dtype="float64")
        data64, _ = batches(w, dev, args.pool, args.seed, with_torch, dtype="float64")
        row["check_float64"] = check_losses(sides64, data64, args.check_steps, CHECK_RTOL_FLOAT64)
        check["ok"] = check["ok"] and row["check_float64"]["ok"]
    if with_torch:
        row["torch"] = timing["torch"]
        row["ratio"] = timing["ratio"]["median"]  # median of the paired per-round ratios
        row["ratio_spread"] = timing["ratio"]
        row["ratio_of_medians"] = timing["gpunet"]["samples_per_s"] / timing["torch"]["samples_per_s"]
    if getattr(args, "layers", False):
        row["layers"] = train_layers.profile(w, dev, args, with_torch, build_sides, batches)
    row["load_average_before"], row["load_average_after"] = load_before, host.load_average()
    return row


# ---------------------------------------------------------------- environment and report

def configure_torch(dev) -> dict:
    """Give PyTorch NumPy's BLAS thread count (CPU) and plain float32 math (GPU); record both."""
    import torch
    blas, _ = host.blas_threads()
    info = {"torch_version": torch.__version__}
    if dev.is_gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        info.update(tf32=False, cudnn=torch.backends.cudnn.version())
    else:
        torch.set_num_threads(blas or host.cpu_count())
    info["torch_threads"] = torch.get_num_threads()
    return info


def environment(dev, with_torch: bool) -> dict:
    blas, blas_lib = host.blas_threads()
    env = {"device": dev.name, "device_name": host.device_name(dev),
           "cpu_model": host.cpu_model(), "cpu_count": host.cpu_count(), "blas": blas_lib,
           "blas_threads": blas, "versions": backend.versions(), "cpu_loops": cpu_loops()}
    if with_torch:
        env.update(configure_torch(dev))
    return env


def cpu_loops() -> str:
    """Which CPU loops the layers run: Numba's compiled ones (gpunet[cpu]) or the NumPy paths."""
    from ..nn import _jit
    return _jit.describe()


def default_out(report: dict) -> str:
    kind = "cpu" if report["device"] == "cpu" else report["device"].split(":")[0]
    name = host.slug(report["device_name"])
    return f"benchmarks/results/train-{kind}-{name}-{report['date'][:10]}.json"


def print_table(report: dict) -> None:
    """The ratio table (and the per-layer and RSS tables when measured), as perf_table's rows."""
    from rich.console import Console
    from rich.table import Table
    env = report["environment"]
    console = Console()
    console.width = max(console.width, 170)  # pipes default to 80 columns: keep headers whole
    t = Table(title=f"gpunet vs PyTorch training, {env['device']} ({env['device_name']}); "
                    f"ratio: median of per-round paired ratios (min–max)")
    for col in perf_table.MAIN_HEADER + [f"loss check ({report['check_steps']} steps)"]:
        t.add_column(col, justify="right", no_wrap=True)
    for r, cells in zip(report["results"], perf_table.main_rows(report)):
        c = r["check"]
        verdict = ("no torch" if c["ok"] is None else
                   f"{'ok' if c['ok'] else '[red]FAIL[/red]'} (rel {c['max_rel_diff']:.1e}"
                   + (f"; f64 {r['check_float64']['max_rel_diff']:.0e})" if "check_float64" in r else ")"))
        t.add_row(*cells, verdict)
    console.print(t)
    extra = (("per layer, ms per step (median over steps)", perf_table.LAYER_HEADER,
              perf_table.layer_rows(report)),
             ("peak RSS over one epoch, fresh interpreter per side", perf_table.RSS_HEADER,
              perf_table.rss_rows(report)))
    for title, header, rows in extra:
        if rows:
            t = Table(title=title)
            for col in header:
                t.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
            for cells in rows:
                t.add_row(*cells)
            console.print(t)


def parse_threads(value) -> list:
    """--threads as a list of counts: "2" -> [2], "1,2" -> [1, 2], None -> [None] (leave the
    libraries' own counts); 0 stands for gpunet train's choice (AUTO_THREADS)."""
    if value is None:
        return [None]
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        items = [value]
    counts = []
    for item in items:
        try:
            n = int(item) if isinstance(item, str) else item
        except ValueError:
            n = item  # refused just below, the entry named
        try:
            counts.append(threads.resolve_threads(n))
        except GpunetError:
            raise GpunetValueError(f"--threads: expected a comma-separated list of thread counts >= 0 "
                                   f"(0: gpunet's choice, {threads.AUTO_THREADS}), such as 1,2; "
                                   f"got {value!r} (bad entry {item!r})") from None
    repeated = sorted({n for n in counts if counts.count(n) > 1})
    if repeated:
        raise GpunetValueError(f"--threads: expected each thread count once (0 means "
                               f"{threads.AUTO_THREADS}), got {value!r}: {repeated} repeated")
    return counts


def apply_threads(n, with_torch: bool) -> dict:
    """Give both sides `n` threads (None: leave gpunet's, give PyTorch NumPy's BLAS count);
    return what is now in effect on each side."""
    if n is not None:
        threads.set_threads(n)
    blas = threads.blas_info()["threads"]
    info = {"requested": n, "gpunet_blas": blas, "gpunet_workers": threads.workers(),
            "gpunet_split_gemms": threads.split_gemms()}
    if with_torch:
        import torch
        if n is not None:
            torch.set_num_threads(n)
        info["torch"] = torch.get_num_threads()
    return info


def check_settings(args) -> list:
    """Refuse bad or ineffective settings before anything runs; the workload names."""
    for arg in ("rounds", "warmup", "pool", "check_steps"):
        minimum = 1 if arg in ("rounds", "pool") else 0
        value = getattr(args, arg)
        if value < minimum:
            raise GpunetValueError(f"--{arg.replace('_', '-')}: expected an int >= {minimum}, got {value}")
    for flag, needs in (("layer_steps", "layers"), ("rss_samples", "rss")):
        if getattr(args, flag, None) is not None and not getattr(args, needs, False):
            raise GpunetValueError(f"--{flag.replace('_', '-')}: only has an effect with --{needs}, "
                                   f"which was not given")
    if getattr(args, "layers", False) and (args.layer_steps is not None and args.layer_steps < 1):
        raise GpunetValueError(f"--layer-steps: expected an int >= 1, got {args.layer_steps}")
    if getattr(args, "rss_samples", None) is not None and args.rss_samples < 1:
        raise GpunetValueError(f"--rss-samples: expected an int >= 1, got {args.rss_samples}")
    if getattr(args, "rss", False) and getattr(args, "precision", "fp32") != "fp32":
        raise GpunetValueError(f"--rss: measures fp32 runs only, got --precision {args.precision}; "
                               f"measure peak memory without --precision")
    if not args.seconds > 0:
        raise GpunetValueError(f"--seconds: expected a length > 0, got {args.seconds}")
    names = args.workloads.split(",") if args.workloads else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise GpunetError(f"--workloads: expected names from {sorted(WORKLOADS)}, got {unknown}")
    rss_samples = getattr(args, "rss_samples", None) if getattr(args, "rss", False) else None
    small = [n for n in names if rss_samples is not None and rss_samples < WORKLOADS[n].batch_size]
    if small:
        raise GpunetValueError(f"--rss-samples: expected at least one batch of each workload "
                               f"({', '.join(f'{n}: {WORKLOADS[n].batch_size}' for n in small)}), "
                               f"got {args.rss_samples}")
    return names


def run(args) -> dict:
    dev = backend.device(args.device)
    counts = parse_threads(getattr(args, "threads", None))
    names = check_settings(args)
    if counts[0] is not None:  # before environment(): PyTorch gets the same count
        threads.set_threads(counts[0])
    with_torch = torch_twin.available() and not args.no_torch
    env = environment(dev, with_torch)
    prec = getattr(args, "precision", "fp32")
    if args.check_rtol is None:
        args.check_rtol = CHECK_RTOL if prec == "fp32" else CHECK_RTOL_LOW
    report = {"benchmark": "bench_train", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "device": dev.name, "device_name": env["device_name"], "environment": env,
              "torch": with_torch, "load_average_before": host.load_average(),
              "settings": {k: getattr(args, k) for k in ("warmup", "seconds", "rounds", "pool", "seed")},
              "precision": prec,
              "threads": counts, "check_steps": args.check_steps, "check_rtol": args.check_rtol,
              "results": []}
    layers, rss = bool(getattr(args, "layers", False)), bool(getattr(args, "rss", False))
    report["settings"].update(
        layers=layers, layer_steps=(getattr(args, "layer_steps", None) or train_layers.LAYER_STEPS) if layers else None,
        rss=rss, rss_samples=getattr(args, "rss_samples", None))
    cases = [(name, n) for name in names for n in counts]
    for i, (name, n) in enumerate(cases):  # says where it is (on stderr: stdout stays the table)
        label = name if n is None else f"{name}, {n} thread{'s' if n > 1 else ''}"
        print(f"bench train: workload {i + 1}/{len(cases)}: {label} ...", file=sys.stderr, flush=True)
        info = apply_threads(n, with_torch)
        row = run_workload(WORKLOADS[name], dev, args, with_torch)
        row = {"workload": row.pop("workload"), "threads": info["gpunet_workers"], "thread_info": info, **row}
        if rss:
            row["peak_rss"] = train_rss.measure(name, dev, n, args, with_torch)
        report["results"].append(row)
    report["load_average_after"] = host.load_average()
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpunet bench train", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--workloads", default=None, help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--json-out", default=None, metavar="FILE",
                   help="write the results as JSON to this file; 'auto' picks "
                        "benchmarks/results/train-<device>-<model>-<date>.json")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per side before timing")
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed segment")
    p.add_argument("--rounds", type=int, default=5, help="timed segments per side; the median is reported")
    p.add_argument("--pool", type=int, default=8, help="distinct batches kept on the device, cycled")
    p.add_argument("--check-steps", type=int, default=20, help="steps of the loss-agreement check")
    p.add_argument("--check-rtol", type=float, default=None,
                   help=f"allowed relative loss difference (default {CHECK_RTOL}; {CHECK_RTOL_LOW} with --precision)")
    p.add_argument("--precision", default="fp32", choices=precision.PRECISIONS,
                   help="gpunet's precision= and PyTorch's torch.autocast dtype (default fp32)")
    p.add_argument("--check-float64", action="store_true",
                   help="also run the check in float64 (relative 1e-9): the same formulas, not just close")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="time gpunet only")
    p.add_argument("--threads", type=_threads_arg, default=None, metavar="N[,N...]",
                   help="threads for both sides, or a comma list to sweep (one row per workload and "
                        f"count; 0: gpunet train's choice, {threads.AUTO_THREADS}; "
                        "default: leave the library's own count)")
    p.add_argument("--layers", action="store_true",
                   help="also time each top-level layer's forward and backward on both sides")
    p.add_argument("--layer-steps", type=int, default=None, metavar="N",
                   help=f"profiled steps per side for --layers (the median is reported; "
                        f"default {train_layers.LAYER_STEPS})")
    p.add_argument("--rss", action="store_true",
                   help="also measure each side's peak RSS over one epoch, each in a fresh interpreter")
    p.add_argument("--rss-samples", type=int, default=None, metavar="N",
                   help="samples in the --rss epoch (default: the dataset's training set, 60,000 for "
                        "MNIST; 50,000 random images otherwise)")
    return p


def _threads_arg(text: str) -> list:
    try:
        return parse_threads(text)
    except GpunetError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--threads: ")) from None


build_parser = parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        report = run(args)
    except GpunetError as e:
        print(f"bench train: {e}", file=sys.stderr)
        return 2
    print_table(report)
    if args.json_out:
        out = write_json(default_out(report) if args.json_out == "auto" else args.json_out, report)
        print(f"wrote {out}")
    failed = [r["workload"] for r in report["results"] if r["check"]["ok"] is False]
    if failed:
        print(f"bench train: gpunet and PyTorch losses disagree on {failed} "
              f"(relative difference > {args.check_rtol}): the timings compare different computations",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
