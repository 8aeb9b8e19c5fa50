"""Long-run soak: train the MNIST MLP for many epochs and fail if memory keeps growing.

    python scripts/soak.py --epochs 20 --device auto --json-out runs/soak.json
    python scripts/soak.py --epochs 20 --subset 10000 --hidden 128,64   # quicker

Every epoch runs the paths a long job runs: `Trainer.fit` steps, a validation pass
(`evaluate`) and an atomic checkpoint write (`ModelCheckpoint`). After each epoch the
script records

  - host RSS (VmRSS from /proc/self/status, after a gc.collect(); where /proc is
    missing, ru_maxrss, which is a peak and so can only over-report growth), and
  - on a GPU, the CuPy memory pool's used and held bytes (`dev.memory_info()`).

Epoch 1 is warm-up (allocator pools, kernel caches, the resident dataset copy), so the
verdict looks at epochs 2..N: the least-squares slope (MiB per epoch) and the growth
from epoch 2 to the last. Either above its threshold -> exit status 1. A bounded
process plateaus after epoch 1; a leak of even a few KiB per step grows linearly with
the epochs and shows up in both numbers.

`--leak-mib X` deliberately keeps X MiB per epoch alive, to check that the detector
fires (the test suite runs it both ways on the small digits set).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import platform
import resource
import sys
import tempfile

import numpy as np

import gpunet as gn
from gpunet.backend import versions
from gpunet.callbacks import Callback, ModelCheckpoint
from gpunet.bench.host import write_json

MIB = 2.0 ** 20


def host_rss_mib() -> float:
    """Current resident set size in MiB (peak RSS where /proc is unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MIB  # the value is in kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB  # bytes on macOS, KiB on Linux


class MemoryProbe(Callback):
    """Records host RSS and the device pool after every epoch (optionally leaking on purpose)."""

    def __init__(self, dev, leak_mib: float = 0.0, verbose: bool = True):
        self.dev, self.leak_mib, self.verbose, self.rows, self._hoard = dev, leak_mib, verbose, [], []

    def on_epoch_end(self, epoch, logs=None):
        if self.leak_mib:
            self._hoard.append(np.ones(int(self.leak_mib * MIB) // 8))  # touched, so resident
        gc.collect()
        self.dev.synchronize()
        pool = self.dev.memory_info()
        logs = logs or {}
        self.rows.append({
            "epoch": epoch + 1, "rss_mib": round(host_rss_mib(), 3),
            "gpu_used_mib": round(pool["used_bytes"] / MIB, 3) if pool else None,
            "gpu_held_mib": round(pool["total_bytes"] / MIB, 3) if pool else None,
            "loss": logs.get("loss"), "val_accuracy": logs.get("val_accuracy"), "seconds": logs.get("seconds")})
        if self.verbose:
            r = self.rows[-1]
            gpu = f", GPU pool used {r['gpu_used_mib']:.1f} MiB" if pool else ""
            print(f"epoch {r['epoch']}: RSS {r['rss_mib']:.1f} MiB{gpu}, loss {r['loss']:.4f}, "
                  f"{r['seconds']:.1f} s", flush=True)


def slope_per_epoch(values) -> float:
    """Least-squares slope of `values` against 0, 1, 2, ... (0 for fewer than 2 points)."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values), dtype=np.float64), np.asarray(values, np.float64), 1)[0])


def verdict(rows, key, max_slope, max_growth) -> dict:
    """Growth statistics of column `key` over epochs 2..N and whether they are bounded."""
    series = [r[key] for r in rows[1:] if r[key] is not None]
    if len(series) < 2:
        return {"metric": key, "checked": False, "ok": True, "reason": "fewer than 3 epochs or no data"}
    slope, growth = slope_per_epoch(series), series[-1] - series[0]
    ok = slope <= max_slope and growth <= max_growth
    return {"metric": key, "checked": True, "ok": ok, "slope_mib_per_epoch": round(slope, 4),
            "growth_mib": round(growth, 3), "max_slope_mib_per_epoch": max_slope, "max_growth_mib": max_growth}


def load_data(args):
    train = gn.data.load(args.dataset, "train", root=args.data_root or None)
    val = gn.data.load(args.dataset, "test", root=args.data_root or None)
    if args.subset and args.subset < len(train):
        train = train.subset(np.arange(args.subset), split="train")
        val = val.subset(np.arange(min(len(val), max(args.subset // 6, 1))), split="test")
    return train, val


def run(args) -> dict:
    gn.manual_seed(args.seed)
    dev = gn.device(args.device)
    train, val = load_data(args)
    c_h_w = train.x.shape[1:]
    sizes = [int(np.prod(c_h_w)), *[int(s) for s in args.hidden.split(",") if s.strip()], train.num_classes]
    model = gn.models.mlp(sizes, init="he_normal")
    model.to(dev)
    opt = gn.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    probe = MemoryProbe(dev, args.leak_mib, verbose=not args.quiet)
    with tempfile.TemporaryDirectory(prefix="gpunet-soak-") as ckdir:
        trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device=dev, seed=args.seed,
                             callbacks=[ModelCheckpoint(ckdir, monitor="val_accuracy"), probe])
        rss_start = host_rss_mib()
        trainer.fit(train, args.epochs, args.batch_size, val=val)
    checks = [verdict(probe.rows, "rss_mib", args.max_slope_mib, args.max_growth_mib)]
    if dev.is_gpu:
        checks += [verdict(probe.rows, k, args.max_slope_mib, args.max_growth_mib)
                   for k in ("gpu_used_mib", "gpu_held_mib")]
    return {"script": "soak", "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "device": dev.name, "host": platform.node(), "versions": versions(), "args": vars(args),
            "model": sizes, "train_samples": len(train), "val_samples": len(val),
            "rss_before_fit_mib": round(rss_start, 3), "epochs": probe.rows, "checks": checks,
            "ok": all(c["ok"] for c in checks)}


def report(result) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    t = Table(title=f"soak: {result['model']} on {result['device']}, {result['train_samples']} samples")
    for col in ("epoch", "RSS MiB", "GPU used MiB", "GPU held MiB", "loss", "val acc", "s"):
        t.add_column(col, justify="right")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in result["epochs"]:
        t.add_row(str(r["epoch"]), fmt(r["rss_mib"], ".1f"), fmt(r["gpu_used_mib"], ".1f"),
                  fmt(r["gpu_held_mib"], ".1f"), fmt(r["loss"], ".4f"), fmt(r["val_accuracy"], ".4f"),
                  fmt(r["seconds"], ".2f"))
    console.print(t)
    for c in result["checks"]:
        if not c["checked"]:
            console.print(f"{c['metric']}: not checked ({c['reason']})")
            continue
        status = "[green]bounded[/]" if c["ok"] else "[bold red]GROWING[/]"
        console.print(f"{c['metric']}: slope {c['slope_mib_per_epoch']:+.3f} MiB/epoch "
                      f"(max {c['max_slope_mib_per_epoch']}), growth epoch 2→{len(result['epochs'])} "
                      f"{c['growth_mib']:+.1f} MiB (max {c['max_growth_mib']}): {status}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--json-out", default="", metavar="FILE.json", help="write the figures as JSON here")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default="")
    p.add_argument("--subset", type=int, default=0, help="train on the first N samples (0: all)")
    p.add_argument("--hidden", default="512,256", help="hidden widths (784-512-256-10 by default)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-slope-mib", type=float, default=0.5, help="max RSS/pool slope over epochs 2..N")
    p.add_argument("--max-growth-mib", type=float, default=16.0, help="max growth from epoch 2 to the last")
    p.add_argument("--leak-mib", type=float, default=0.0, help="leak this much per epoch (detector check)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines while running")
    args = p.parse_args(argv)
    if args.epochs < 3:
        p.error(f"--epochs: expected at least 3 (epoch 1 is warm-up), got {args.epochs}")
    try:
        result = run(args)
    except gn.GpunetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report(result)
    if args.json_out:
        write_json(args.json_out, result, indent=1)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
