"""Optimizer step time: fused=True (flat buffers, one kernel per parameter group) against the
per-parameter optimizer, on the TF CIFAR-10 CNN's parameters (gn.models.tf_cifar10_cnn).

Only the optimizer is timed: the gradients are fixed random arrays, so what is measured is
opt.step() (+ zero_grad()) and clip_grad_norm, nothing of forward/backward. The two sides
run interleaved, --steps steps per segment, device synced at both ends of a segment; the
per-step median over --repeats segments is reported with the ratio per-parameter / fused.
Before timing, one step of each is checked to agree (the fused path must compute the same).

    gpunet bench optim --device cuda --json-out benchmarks/results/<date>-<gpu>-optim.json
"""
from __future__ import annotations

import argparse
import copy
import datetime
import statistics
import time

import numpy as np

import gpunet as gn
from gpunet.bench import progress
from gpunet.bench.host import blas_threads, cpu_count, device_name, load_average, write_json

CASES = {
    "sgd": (gn.optim.SGD, dict(lr=0.01, momentum=0.9, weight_decay=5e-4)),
    "sgd-nesterov": (gn.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
    "adam": (gn.optim.Adam, dict(lr=1e-3)),
    "adamw": (gn.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2)),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpunet bench optim", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help='"cpu", "cuda", "cuda:N" or "auto"')
    p.add_argument("--optimizers", default="sgd,adamw", help=f"comma-separated, from {sorted(CASES)}")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timed segment")
    p.add_argument("--repeats", type=int, default=7, help="timed segments per side; the median is kept")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--json-out", default=None, metavar="FILE", help="write the results as JSON to this file")
    return p


def _model(dev, dtype):
    gn.manual_seed(0)
    m = gn.models.tf_cifar10_cnn().to(dev, dtype=dtype)
    r = np.random.default_rng(1)
    for p in m.parameters():
        p.grad[...] = dev.asarray(r.standard_normal(p.shape) * 1e-2, dtype=p.dtype)
    return m


def _segment(fn, steps, sync) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t) / steps * 1e6


def _timed(sides: dict, steps: int, repeats: int, sync) -> dict:
    """Median µs per call of each side, the sides interleaved segment by segment."""
    for fn in sides.values():  # warm-up (kernel compile, allocations)
        _segment(fn, 2, sync)
    times = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            times[k].append(_segment(fn, steps, sync))
    return {k: statistics.median(v) for k, v in times.items()}


def _check_agree(name, cls, kw, dev, dtype):
    a, b = _model(dev, dtype), _model(dev, dtype)
    oa, ob = cls(a.parameters(), **kw), cls(b.parameters(), fused=True, **kw)
    oa.step()
    ob.step()
    worst = max(float(np.abs(gn.backend.to_numpy(p.data) - gn.backend.to_numpy(q.data)).max())
                for p, q in zip(a.parameters(), b.parameters()))
    tol = 1e-5 if dtype == "float32" else 1e-12
    if worst > tol:
        raise AssertionError(f"bench optim: {name} fused differs from per-parameter by {worst:.3g} (> {tol})")
    return worst


def run_case(name, dev, args):
    cls, kw = CASES[name]
    agree = _check_agree(name, cls, kw, dev, args.dtype)
    per, fused = _model(dev, args.dtype), _model(dev, args.dtype)
    grads = [copy.deepcopy(p.grad) for p in per.parameters()]
    o_per, o_fused = cls(per.parameters(), **kw), cls(fused.parameters(), fused=True, **kw)

    def step(opt, model):
        def fn():
            opt.step()
            for p, g in zip(model.parameters(), grads):  # same work both sides: restore the grads
                p.grad[...] = g
        return fn
    sync = dev.synchronize
    steps = _timed({"per_parameter": step(o_per, per), "fused": step(o_fused, fused)}, args.steps, args.repeats,
                   sync)
    restore = _timed({"per_parameter": lambda: [p.grad.__setitem__(Ellipsis, g) for p, g in
                                                zip(per.parameters(), grads)]}, args.steps, args.repeats, sync)
    clip = _timed({"per_parameter": lambda: gn.optim.clip_grad_norm(per.parameters(), 1e9),
                   "fused": lambda: gn.optim.clip_grad_norm(fused.parameters(), 1e9)}, args.steps, args.repeats, sync)
    n = sum(p.size for p in per.parameters())
    # The grads are restored after each step on both sides; that copy is timed alone and subtracted.
    per_us = steps["per_parameter"] - restore["per_parameter"]
    fused_us = steps["fused"] - restore["per_parameter"]
    return {"optimizer": name, "hyper": {k: v for k, v in kw.items()}, "parameters": len(per.parameters()),
            "elements": n, "agree_max_abs": agree,
            "step_us": {"per_parameter": per_us, "fused": fused_us},
            "step_ratio_per_parameter_over_fused": per_us / fused_us if fused_us > 0 else None,
            "grad_restore_us": restore["per_parameter"],
            "clip_grad_norm_us": clip,
            "clip_ratio_per_parameter_over_fused": clip["per_parameter"] / clip["fused"]}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    unknown = [s for s in names if s not in CASES]
    if unknown or not names:
        raise SystemExit(f"gpunet bench optim: --optimizers expected names from {sorted(CASES)}, "
                         f"got {args.optimizers!r}")
    if args.steps < 1 or args.repeats < 1:
        raise SystemExit(f"gpunet bench optim: --steps and --repeats expected >= 1, got {args.steps}, {args.repeats}")
    dev = gn.device(args.device)
    load_before = load_average()
    rows = []
    for i, name in enumerate(names):
        progress("optim", i + 1, len(names), name)
        rows.append(run_case(name, dev, args))
    out = {"benchmark": "optim", "model": "tf_cifar10_cnn", "dtype": args.dtype,
           "device": dev.name, "device_name": device_name(dev), "cpu_count": cpu_count(),
           "blas_threads": blas_threads()[0], "load_average_before": load_before,
           "load_average_after": load_average(), "steps_per_segment": args.steps, "repeats": args.repeats,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "results": rows}
    print(f"optimizer step on tf_cifar10_cnn ({rows[0]['elements']} {args.dtype} in {rows[0]['parameters']} "
          f"params) on {out['device_name']} ({dev.name}), median µs per step:")
    print(f"{'optimizer':14} {'per-param':>10} {'fused':>10} {'ratio':>7}   {'clip per-param':>14} {'clip fused':>10}")
    for r in rows:
        s, c = r["step_us"], r["clip_grad_norm_us"]
        print(f"{r['optimizer']:14} {s['per_parameter']:10.1f} {s['fused']:10.1f} "
              f"{r['step_ratio_per_parameter_over_fused'] or float('nan'):7.2f}   "
              f"{c['per_parameter']:14.1f} {c['fused']:10.1f}")
    if args.json_out:
        print(f"wrote {write_json(args.json_out, out)}")
    return 0
