"""Peak resident memory of one training epoch, each side alone in a fresh interpreter.

    gpunet bench train --workloads small-cnn --threads 1 --rss

For each row, `measure` starts `python -m gpunet.bench.train_rss SIDE WORKLOAD ...` twice
(gpunet, then PyTorch). The child loads the workload's data set once (float32, the array the
timing uses; both sides hold the same bytes, PyTorch through `torch.from_numpy` without a
copy), builds its model and trains one epoch over it at the row's thread count, then prints
one JSON line: the peak resident set (VmHWM, the kernel's high-water mark of this address
space; ru_maxrss where there is no /proc) and the RSS right before the first step, so that
what training adds is visible apart from the interpreter, the libraries and the data.

The gpunet child never imports torch (it says so in its JSON: `torch_imported`). The PyTorch
child imports gpunet to build the same architecture and copy its weights (as the timing
does), and drops gpunet's copy of the model before training.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EPOCH_SAMPLES = {"idx": 60000, "random": 50000}  # MNIST's training set; CIFAR-10's


def rss_mb() -> float:
    """Current resident set of this process in MB (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_mb()


def peak_mb() -> float:
    """Peak resident set of this process in MB: VmHWM on Linux, else ru_maxrss.

    VmHWM belongs to the process's current address space, which exec starts afresh. Linux's
    ru_maxrss does not: exec folds the parent's peak into it (a child spawned by a 900 MB
    benchmark reports at least 900 MB), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource  # Unix only: imported here so that `gpunet bench train` loads anywhere
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def epoch_samples(name: str, requested) -> int:
    from .train_sides import WORKLOADS
    if requested is not None:
        return int(requested)
    kind = "idx" if getattr(WORKLOADS[name].data, "__qualname__", "").startswith("idx_images") else "random"
    return EPOCH_SAMPLES[kind]


def child(side: str, name: str, threads_n, samples: int, seed: int, device: str) -> dict:
    """One epoch of workload `name` on `side` in this process; the figures as a dict."""
    from .. import backend
    from .. import threads as gthreads
    from .train_sides import WORKLOADS, build_sides, synchronizer
    w = WORKLOADS[name]
    if threads_n is not None:
        gthreads.set_threads(threads_n)
    with_torch = side == "torch"
    if with_torch:
        import torch
        if threads_n is not None:
            torch.set_num_threads(threads_n)
    dev = backend.device(device)
    x, y, what = w.data(samples, seed)
    steps = len(x) // w.batch_size
    models = {}
    sides = build_sides(w, dev, seed, with_torch, models_out=models)
    step = sides[side][0]
    if with_torch:
        from . import torch_twin
        del sides["gpunet"], models["gpunet"]  # gpunet's copy of the weights is not PyTorch's memory
        tdev = sides[side][1]
        convert = lambda a: torch_twin.to_torch(a, tdev)  # noqa: E731
    else:
        convert = dev.asarray
    import gc
    gc.collect()
    before, peak_before = rss_mb(), peak_mb()
    sync = synchronizer(side, dev)
    t0 = time.perf_counter()
    for i in range(steps):
        sl = slice(i * w.batch_size, (i + 1) * w.batch_size)
        step(convert(x[sl]), convert(y[sl]))
    sync()
    seconds = time.perf_counter() - t0
    return {"side": side, "workload": name, "threads": threads_n, "samples": steps * w.batch_size,
            "steps": steps, "data": what, "data_mb": round((x.nbytes + y.nbytes) / 2**20, 1),
            "rss_before_training_mb": round(before, 1),
            "peak_before_training_mb": round(peak_before, 1), "peak_rss_mb": round(peak_mb(), 1),
            "seconds": round(seconds, 2), "torch_imported": "torch" in sys.modules}


def measure(name: str, dev, threads_n, args, with_torch: bool) -> dict:
    """{"gpunet": child figures, "torch": child figures}: each side in its own interpreter."""
    from ..errors import GpunetError
    samples = epoch_samples(name, getattr(args, "rss_samples", None))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the gpunet package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = {"samples": samples, "method": "peak resident set (VmHWM) of a fresh interpreter running one epoch"}
    for side in ["gpunet"] + (["torch"] if with_torch else []):
        cmd = [sys.executable, "-m", "gpunet.bench.train_rss", side, name, "--samples", str(samples),
               "--seed", str(args.seed), "--device", dev.name]
        if threads_n is not None:
            cmd += ["--threads", str(threads_n)]
        print(f"bench train: peak RSS of one epoch, {side} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise GpunetError(f"--rss: the {side} child for {name} exited {proc.returncode}: "
                              f"{proc.stderr.strip()[-800:]}")
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    if with_torch:
        out["gpunet_over_torch"] = round(out["gpunet"]["peak_rss_mb"] / out["torch"]["peak_rss_mb"], 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpunet.bench.train_rss",
                                description="one epoch of a bench-train workload on one side; prints JSON")
    p.add_argument("side", choices=["gpunet", "torch"])
    p.add_argument("workload")
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    print(json.dumps(child(a.side, a.workload, a.threads, a.samples, a.seed, a.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
