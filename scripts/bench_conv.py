"""Conv2d per layer, forward and backward: gpunet's algorithms side by side with PyTorch.

The convolutions of the zoo CNNs (small_cnn at batch 256, the TF CIFAR-10 CNN at 128),
float32, training mode, the first layer's backward without dx as in training. For each
thread count, every variant runs in turn within each repeat (interleaved, so a busy machine
slows all alike); medians are reported with the load average before and after.

    PYTHONPATH=. python scripts/bench_conv.py --threads 1,2 --repeats 9 --json-out auto
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np

import gpunet as gn
from gpunet import threads
from gpunet.bench import host

LAYERS = {  # name: (N, C, O, H, kernel, padding, bias, needs dx)
    "small_cnn.conv1": (256, 1, 32, 28, 3, 1, False, False),
    "small_cnn.conv2": (256, 32, 64, 14, 3, 1, False, True),
    "tf_cifar10_cnn.conv1": (128, 3, 64, 24, 5, 2, True, False),
    "tf_cifar10_cnn.conv2": (128, 64, 64, 12, 5, 2, True, True),
}


def _gpunet(algorithm, spec):
    N, C, O, H, k, p, bias, need_dx = spec
    layer = gn.nn.Conv2d(C, O, k, padding=p, bias=bias, algorithm=algorithm)

    def step(x, dy):
        t0 = time.perf_counter()
        layer.forward(x)
        t1 = time.perf_counter()
        layer.backward(dy, need_input_grad=need_dx)
        return t1 - t0, time.perf_counter() - t1
    return step


def _torch(spec):
    import torch
    N, C, O, H, k, p, bias, need_dx = spec
    layer = torch.nn.Conv2d(C, O, k, padding=p, bias=bias)

    def step(x, dy):
        tx = torch.from_numpy(x).requires_grad_(need_dx)
        tdy = torch.from_numpy(dy)
        t0 = time.perf_counter()
        y = layer(tx)
        t1 = time.perf_counter()
        y.backward(tdy)
        return t1 - t0, time.perf_counter() - t1
    return step


def run(thread_counts, repeats, variants, with_torch):
    results = []
    for n in thread_counts:
        gn.set_threads(n)
        if with_torch:
            import torch
            torch.set_num_threads(n)
        for name, spec in LAYERS.items():
            N, C, O, H, k, p, _, _ = spec
            rng = np.random.default_rng(0)
            x = rng.standard_normal((N, C, H, H), dtype=np.float32)
            dy = rng.standard_normal((N, O, H, H), dtype=np.float32)
            steps = {v: _gpunet(v, spec) for v in variants}
            if with_torch:
                steps["torch"] = _torch(spec)
            times = {v: ([], []) for v in steps}
            load_before = host.load_average()
            for rep in range(repeats + 1):
                for v, step in steps.items():
                    f, b = step(x, dy)
                    if rep:  # the first round warms buffers and caches
                        times[v][0].append(f * 1e3)
                        times[v][1].append(b * 1e3)
            row = {"layer": name, "threads": n, "load_before": load_before, "load_after": host.load_average()}
            for v, (f, b) in times.items():
                row[v] = {"forward_ms": float(np.median(f)), "backward_ms": float(np.median(b)),
                          "forward_spread_ms": [float(np.min(f)), float(np.max(f))],
                          "backward_spread_ms": [float(np.min(b)), float(np.max(b))]}
            results.append(row)
            print(f"{name:22s} {n} thr  " + "  ".join(
                f"{v}: {row[v]['forward_ms']:6.1f}/{row[v]['backward_ms']:6.1f}" for v in steps)
                + f"   load {load_before} -> {row['load_after']}", flush=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats (the median is reported)")
    ap.add_argument("--variants", default="auto,im2col", help="gpunet algorithms to time")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json-out", default=None, help="file, or 'auto' for benchmarks/results/")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    variants = args.variants.split(",")
    results = run(counts, args.repeats, variants, not args.no_torch)
    if args.json_out:
        today = datetime.date.today().isoformat()
        path = args.json_out if args.json_out != "auto" else \
            f"benchmarks/results/conv-cpu-{host.slug(host.cpu_model())}-{today}.json"
        host.write_json(path, {
            "benchmark": "Conv2d per layer, float32, training mode, ms per call (median)",
            "date": today, "cpu": host.cpu_model(), "cores": host.cpu_count(),
            "blas": threads.blas_info()["library"], "repeats": args.repeats,
            "variants": variants + ([] if args.no_torch else ["torch"]), "results": results})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
