"""Benchmark gpunet's CUDA kernels: fused softmax cross-entropy and ReLU backward.

Every kernel is first checked against its twin, then timed with CUDA events after a
warm-up (median of --repeats runs). The cross-entropy call is timed as training runs it
(check_labels="deferred": no sync per call); "sync ms" is the same call with
check_labels="sync" (one device-to-host read per call), and "launch ms" the raw kernel
launch alone, with the arguments the wrapper passed (no checks, no allocations, no
reductions). All of it next to:
  * a device-to-device copy of the same bytes (the bandwidth ceiling; "% copy"),
  * the same maths as plain CuPy array ops (the twins, or xp.where for ReLU),
  * PyTorch on the same GPU when torch is importable: F.cross_entropy forward+backward,
    and torch.ops.aten.threshold_backward.
Effective GB/s counts the bytes that must move: for cross-entropy the logits read once,
dlogits written once and the labels; for ReLU backward dy and y read, dx written.

    python scripts/bench_kernels.py --device cuda --json-out results.json [--repeats 20] [--quick]
"""
from __future__ import annotations

import argparse
import importlib
import datetime
import statistics
import sys

import numpy as np

import gpunet as gn  # noqa: E402
from gpunet.bench import progress  # noqa: E402
from gpunet import ops  # noqa: E402
from gpunet.ops import relu as relu_mod  # noqa: E402
from gpunet.ops.relu import relu_backward_mask_xp, relu_backward_xp  # noqa: E402
from gpunet.ops.softmax_cross_entropy_xp import softmax_cross_entropy_xp  # noqa: E402
from gpunet.bench.host import write_json

ce_mod = importlib.import_module("gpunet.ops.softmax_cross_entropy")   # the module, not the function
CE_SHAPES = [(128, 10), (4096, 10), (65536, 10), (16384, 1000), (8192, 32768), (4096, 131072)]
RELU_SIZES = [2**20, 2**24, 2**28]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpunet bench kernels", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="a CUDA device: cuda or cuda:N (default: cuda)")
    p.add_argument("--json-out", default=None, help="write the results as JSON to this file", metavar="FILE")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per case; the median is kept (>= 20)")
    p.add_argument("--quick", action="store_true", help="skip the largest cases (a smoke run)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def timer(xp, repeats):
    """time_ms(fn): median milliseconds of fn() over `repeats` runs, by CUDA events, after warm-up."""
    def time_ms(fn):
        for _ in range(3):
            fn()
        xp.cuda.Device().synchronize()
        times = []
        for _ in range(repeats):
            start, end = xp.cuda.Event(), xp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(xp.cuda.get_elapsed_time(start, end))
        return statistics.median(times)
    return time_ms


def load_torch():
    try:
        import torch
        import torch.nn.functional as F
    except Exception:
        return None
    return (torch, F) if torch.cuda.is_available() else None


def capture_launch(module, call):
    """A function that repeats only the kernel launch `call()` makes through `module`'s wrapper,
    with the same grid, block and arguments."""
    real, seen = module.function, []

    def recording(dev, mod, name):
        fn = real(dev, mod, name)

        def launch(grid, block, args, **kw):
            seen.append((fn, grid, block, args))
            return fn(grid, block, args, **kw)
        return launch
    module.function = recording
    try:
        call()
    finally:
        module.function = real
    fn, grid, block, args = seen[-1]
    return lambda: fn(grid, block, args)


def max_rel_err(got, want):
    got, want = gn.backend.to_numpy(got).astype(np.float64), gn.backend.to_numpy(want).astype(np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def bench_ce(dev, time_ms, torch_mods, N, C):
    """One cross-entropy shape: checks, then kernel / copy / CuPy / torch timings."""
    xp = dev.xp
    rng = np.random.default_rng(0)
    x = dev.asarray(rng.standard_normal((N, C), dtype=np.float32) * 3)
    y = dev.asarray(rng.integers(0, C, N))
    g = xp.empty_like(x)
    loss, _, _ = ops.softmax_cross_entropy(x, y, out=g)
    rloss, rg, _ = softmax_cross_entropy_xp(x, y)
    err = max(max_rel_err(loss, rloss), max_rel_err(g, rg))
    row = {"N": N, "C": C, "dtype": "float32", "check_max_rel_err": err, "check_ok": err < 1e-4}
    if not row["check_ok"]:
        return row
    nbytes = 2 * x.nbytes + y.nbytes
    copy_dst = xp.empty_like(x)
    row["kernel_ms"] = time_ms(lambda: ops.softmax_cross_entropy(x, y, out=g, check_labels="deferred"))
    row["sync_ms"] = time_ms(lambda: ops.softmax_cross_entropy(x, y, out=g, check_labels="sync"))
    row["launch_ms"] = time_ms(capture_launch(ce_mod, lambda: ops.softmax_cross_entropy(
        x, y, out=g, check_labels="deferred")))
    row["eval_ms"] = time_ms(lambda: ops.softmax_cross_entropy_eval(x, y, check_labels="deferred"))
    ops.raise_deferred_errors(dev)   # the labels are valid: nothing may be pending
    row["copy_ms"] = time_ms(lambda: xp.copyto(copy_dst, x))
    row["cupy_ms"] = time_ms(lambda: softmax_cross_entropy_xp(x, y))
    row["GBps"] = nbytes / row["kernel_ms"] / 1e6
    row["pct_of_copy"] = 100 * row["GBps"] / (2 * x.nbytes / row["copy_ms"] / 1e6)
    row["speedup_vs_cupy"] = row["cupy_ms"] / row["kernel_ms"]
    if torch_mods:
        torch, F = torch_mods
        xt = torch.from_dlpack(x).clone().requires_grad_(True)
        yt = torch.from_dlpack(y)
        tl = F.cross_entropy(xt, yt)
        (tg,) = torch.autograd.grad(tl, xt)
        row["torch_max_rel_err"] = max_rel_err(g, xp.from_dlpack(tg))

        def torch_step():
            return torch.autograd.grad(F.cross_entropy(xt, yt), xt)
        row["torch_ms"] = time_ms(torch_step)
        row["speedup_vs_torch"] = row["torch_ms"] / row["kernel_ms"]
    return row


def bench_relu(dev, time_ms, torch_mods, n):
    """ReLU backward over n float32 elements (y and 1-bit mask variants)."""
    xp = dev.xp
    dy = dev.uniform((n,), np.float32) - 0.5
    y = xp.maximum(dev.uniform((n,), np.float32) - 0.5, 0)
    dx = xp.empty_like(dy)
    mask = ops.relu_pack_mask(y)
    err = max(max_rel_err(ops.relu_backward(dy, y, out=dx), relu_backward_xp(dy, y)),
              max_rel_err(ops.relu_backward_mask(dy, mask, out=dx), relu_backward_mask_xp(dy, mask)))
    row = {"n": n, "dtype": "float32", "check_max_rel_err": err, "check_ok": err == 0.0}
    if not row["check_ok"]:
        return row
    copy_dst = xp.empty_like(dy)
    row["kernel_ms"] = time_ms(lambda: ops.relu_backward(dy, y, out=dx))
    row["launch_ms"] = time_ms(capture_launch(relu_mod, lambda: ops.relu_backward(dy, y, out=dx)))
    row["mask_kernel_ms"] = time_ms(lambda: ops.relu_backward_mask(dy, mask, out=dx))
    row["copy_ms"] = time_ms(lambda: xp.copyto(copy_dst, dy))
    row["cupy_where_ms"] = time_ms(lambda: xp.where(y > 0, dy, 0))
    row["GBps"] = 3 * dy.nbytes / row["kernel_ms"] / 1e6
    row["pct_of_copy"] = 100 * row["GBps"] / (2 * dy.nbytes / row["copy_ms"] / 1e6)
    row["speedup_vs_cupy"] = row["cupy_where_ms"] / row["kernel_ms"]
    if torch_mods:
        torch, _ = torch_mods
        dyt, yt = torch.from_dlpack(dy), torch.from_dlpack(y)
        row["torch_ms"] = time_ms(lambda: torch.ops.aten.threshold_backward(dyt, yt, 0))
        row["speedup_vs_torch"] = row["torch_ms"] / row["kernel_ms"]
    return row


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_tables(results):
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"softmax cross-entropy (float32, fwd+bwd, deferred label check) on {results['device']}")
    for col in ("N x C", "check", "kernel ms", "sync ms", "launch ms", "GB/s", "% copy", "eval ms", "vs CuPy",
                "vs torch"):
        t.add_column(col, justify="right")
    for r in results["softmax_cross_entropy"]:
        t.add_row(f"{r['N']} x {r['C']}", "ok" if r["check_ok"] else f"FAIL {r['check_max_rel_err']:.2e}",
                  fmt(r.get("kernel_ms"), ".4f"), fmt(r.get("sync_ms"), ".4f"), fmt(r.get("launch_ms"), ".4f"),
                  fmt(r.get("GBps"), ".0f"), fmt(r.get("pct_of_copy"), ".0f"),
                  fmt(r.get("eval_ms"), ".4f"), fmt(r.get("speedup_vs_cupy"), ".2f"),
                  fmt(r.get("speedup_vs_torch"), ".2f"))
    u = Table(title="ReLU backward (float32)")
    for col in ("n", "check", "kernel ms", "launch ms", "mask ms", "GB/s", "% copy", "vs CuPy where", "vs torch"):
        u.add_column(col, justify="right")
    for r in results["relu"]:
        u.add_row(str(r["n"]), "ok" if r["check_ok"] else f"FAIL {r['check_max_rel_err']:.2e}",
                  fmt(r.get("kernel_ms"), ".4f"), fmt(r.get("launch_ms"), ".4f"), fmt(r.get("mask_kernel_ms"), ".4f"),
                  fmt(r.get("GBps"), ".0f"),
                  fmt(r.get("pct_of_copy"), ".0f"), fmt(r.get("speedup_vs_cupy"), ".2f"),
                  fmt(r.get("speedup_vs_torch"), ".2f"))
    console = Console()
    console.print(t)
    console.print(u)


def resolve_device(spec):
    """The CUDA device, or exit 2 with the reason (no GPU here, or a CPU device asked for)."""
    if not gn.is_gpu_available():
        sys.exit(f"bench_kernels: needs a usable NVIDIA GPU, and there is none: {gn.gpu_status().reason}")
    try:
        dev = gn.device(spec)
    except gn.GpunetError as e:
        sys.exit(f"bench_kernels: {e}")
    if not dev.is_gpu or not ops.kernels_available(dev):
        sys.exit(f"bench_kernels: expected a CUDA device with gpunet's kernels, got {spec!r}")
    return dev


def main(argv=None):
    args = parse_args(argv)
    if args.repeats < 20:
        sys.exit(f"bench_kernels: --repeats expected >= 20 (median of at least 20 runs), got {args.repeats}")
    dev = resolve_device(args.device)
    torch_mods = load_torch()
    time_ms = timer(dev.xp, args.repeats)
    ce_shapes = CE_SHAPES[:4] if args.quick else CE_SHAPES
    relu_sizes = RELU_SIZES[:2] if args.quick else RELU_SIZES
    info = gn.gpu_status().devices[dev.index]
    versions = dict(gn.backend.versions(), gpunet=gn.__version__,
                    torch=torch_mods[0].__version__ if torch_mods else None)
    results = {"device": info["name"], "device_index": dev.index, "compute_capability": info["compute_capability"],
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "versions": versions, "repeats": args.repeats, "timing": "CUDA events, median after 3 warm-up runs"}
    results["softmax_cross_entropy"], results["relu"] = [], []

    def save():   # after every case: a crash keeps what was measured
        if args.json_out:
            write_json(args.json_out, results, indent=2)
    cases = len(ce_shapes) + len(relu_sizes)
    with dev:
        for i, (N, C) in enumerate(ce_shapes):
            progress("kernels", i + 1, cases, f"softmax_cross_entropy N={N} C={C}")
            results["softmax_cross_entropy"].append(bench_ce(dev, time_ms, torch_mods, N, C))
            save()
        for i, n in enumerate(relu_sizes):
            progress("kernels", len(ce_shapes) + i + 1, cases, f"relu n={n}")
            results["relu"].append(bench_relu(dev, time_ms, torch_mods, n))
            save()
    print_tables(results)
    if args.json_out:
        print(f"wrote {args.json_out}")
    failed = [r for r in results["softmax_cross_entropy"] + results["relu"] if not r["check_ok"]]
    if failed:
        print(f"bench_kernels: {len(failed)} kernel(s) disagree with their twin; see check_max_rel_err",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
