"""Per-layer CPU times of the non-convolution layers of small_cnn and the TF CIFAR-10 CNN:
gpunet's NumPy path, its compiled path (gpunet[cpu], Numba) and PyTorch, side by side.

    python scripts/bench_cpu_layers.py [--threads 1,2] [--repeats 15] [--out FILE]

Training mode, float32, the shapes each layer sees in those models. For every thread
count, each repeat times every layer's forward and backward on every path in turn
(interleaved, so load drifts hit them alike); the JSON keeps the medians and minima in
ms, gpunet/PyTorch ratios of the medians, the load average before and after, the CPU and
the BLAS library. Writes benchmarks/results/cpu-layers-<cpu>-<date>.json by default.
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np

import gpunet as gn
from gpunet import nn, threads
from gpunet.bench import host
from gpunet.nn import _jit

CASES = [  # name, gpunet layer, torch layer, input shape
    ("small_cnn BatchNorm2d 1", lambda: nn.BatchNorm2d(32), "BatchNorm2d(32)", (256, 32, 28, 28)),
    ("small_cnn ReLU 1", lambda: nn.ReLU(), "ReLU()", (256, 32, 28, 28)),
    ("small_cnn MaxPool2d 1", lambda: nn.MaxPool2d(2), "MaxPool2d(2)", (256, 32, 28, 28)),
    ("small_cnn BatchNorm2d 2", lambda: nn.BatchNorm2d(64), "BatchNorm2d(64)", (256, 64, 14, 14)),
    ("small_cnn ReLU 2", lambda: nn.ReLU(), "ReLU()", (256, 64, 14, 14)),
    ("small_cnn MaxPool2d 2", lambda: nn.MaxPool2d(2), "MaxPool2d(2)", (256, 64, 14, 14)),
    ("tf_cnn ReLU 1", lambda: nn.ReLU(), "ReLU()", (128, 64, 24, 24)),
    ("tf_cnn MaxPool2d 3/2/1 1", lambda: nn.MaxPool2d(3, 2, 1), "MaxPool2d(3, 2, 1)", (128, 64, 24, 24)),
    ("tf_cnn LocalResponseNorm", lambda: nn.LocalResponseNorm(9, 0.001, 0.75, 1.0),
     "LocalResponseNorm(9, 0.001, 0.75, 1.0)", (128, 64, 12, 12)),
    ("tf_cnn MaxPool2d 3/2/1 2", lambda: nn.MaxPool2d(3, 2, 1), "MaxPool2d(3, 2, 1)", (128, 64, 12, 12)),
]


def _gpunet_runner(make, x, dy_shape_of, compiled):
    layer = make()

    def fwd():
        old = _jit.use(compiled)
        try:
            return layer.forward(x)
        finally:
            _jit.use(old)

    dy = np.random.default_rng(1).standard_normal(dy_shape_of(fwd())).astype(np.float32)

    def bwd():
        old = _jit.use(compiled)
        try:
            layer.backward(dy)
        finally:
            _jit.use(old)
    return fwd, bwd


def _torch_runner(torch, spec, x):
    layer = eval("torch.nn." + spec)  # noqa: S307 - the fixed specs above
    xt = torch.from_numpy(x).requires_grad_(True)
    state = {}

    def fwd():
        state["y"] = layer(xt)

    fwd()
    dy = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(state["y"].shape)).astype(np.float32))

    def bwd():
        xt.grad = None
        state["y"].backward(dy)
    return fwd, bwd


def measure(n_threads, repeats, torch):
    threads.set_threads(n_threads)
    if torch is not None:
        torch.set_num_threads(n_threads)
    compiled_ok = _jit.kernels() is not None
    rows = []
    for name, make, spec, shape in CASES:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        runners = {"numpy": _gpunet_runner(make, x, np.shape, False)}
        if compiled_ok:
            runners["compiled"] = _gpunet_runner(make, x, np.shape, True)
        if torch is not None:
            runners["torch"] = _torch_runner(torch, spec, x)
        times = {k: ([], []) for k in runners}
        for _ in range(repeats + 1):                 # the first round warms up (and compiles)
            for key, (fwd, bwd) in runners.items():
                t0 = time.perf_counter()
                fwd()
                t1 = time.perf_counter()
                bwd()
                t2 = time.perf_counter()
                times[key][0].append(t1 - t0)
                times[key][1].append(t2 - t1)
        row = {"layer": name, "input": list(shape)}
        for key, (f, b) in times.items():
            f, b = np.array(f[1:]) * 1e3, np.array(b[1:]) * 1e3
            row[key] = {"forward_ms": round(float(np.median(f)), 3), "backward_ms": round(float(np.median(b)), 3),
                        "forward_min_ms": round(float(f.min()), 3), "backward_min_ms": round(float(b.min()), 3)}
        if "torch" in row:
            best = row.get("compiled", row["numpy"])
            total = row["torch"]["forward_ms"] + row["torch"]["backward_ms"]
            row["torch_over_gpunet"] = round(total / (best["forward_ms"] + best["backward_ms"]), 3)
        rows.append(row)
        print(f"{n_threads} thread(s)  {name:26s} " + "  ".join(
            f"{k} {row[k]['forward_ms']:7.2f}/{row[k]['backward_ms']:7.2f}" for k in runners))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per layer and path (default 15)")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/cpu-layers-<cpu>-<date>.json)")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    if args.repeats < 1 or any(t < 1 for t in counts):
        ap.error(f"--repeats and --threads expected positive integers, got {args.repeats} and {args.threads}")
    try:
        import torch
    except ImportError:
        torch = None
    load_before = host.load_average()
    results = {str(n): measure(n, args.repeats, torch) for n in counts}
    report = {
        "what": "per-layer CPU times, training mode, float32, medians and minima of interleaved rounds (ms)",
        "cpu": host.cpu_model(), "cores": host.cpu_count(), "blas": threads.blas_info()["library"],
        "numba": getattr(_jit.kernels(), "numba_version", None),
        "torch": None if torch is None else torch.__version__, "gpunet": gn.__version__,
        "repeats": args.repeats, "load_average_before": load_before, "load_average_after": host.load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": results,
    }
    out = Path(args.out) if args.out else (Path(__file__).resolve().parents[1] / "benchmarks" / "results" /
                                           f"cpu-layers-{host.slug(host.cpu_model())}-{datetime.date.today()}.json")
    host.write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
