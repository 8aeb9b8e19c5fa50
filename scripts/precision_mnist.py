"""Mixed precision on the CPU: test accuracy of the README's MNIST MLP at each precision,
`gpunet train --dataset mnist --model mlp --hidden 512,256 --epochs 2 --precision P --seed S`.

    python scripts/precision_mnist.py --json-out benchmarks/results/precision-mnist-mlp-<date>.json

The CPU emulates bf16/fp16/tf32 by rounding the GEMM operands and results (gpunet.precision),
so these runs show the numerics of the low precisions, not their speed. The claim checked:
bf16 and fp16 (with dynamic loss scaling) end within 0.5 points of fp32 after 2 epochs, on
the full training set. Each run is a separate `gpunet train` process (one BLAS thread).
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpunet.bench.host import cpu_model, load_average, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds_mnist import COMMAND, test_accuracy  # noqa: E402  (the README command and its reader)

PRECISIONS = ("fp32", "bf16", "fp16", "tf32")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--json-out", default=None, metavar="FILE", help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="gpunet-precision-"))
    report = {"benchmark": "precision-mnist-mlp", "date": datetime.date.today().isoformat(),
              "device": f"cpu ({cpu_model()}), emulated low precision",
              "command": "gpunet train " + " ".join(COMMAND) + " --precision P --seed S",
              "load_average_before": load_average(), "precisions": {}}
    for p in args.precisions.split(","):
        rows = {}
        for s in seeds:
            run = root / f"{p}{s}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "gpunet", "train", *COMMAND, "--precision", p, "--seed", str(s),
                            "--out", str(root), "--name", run.name, "--quiet", "--no-doctor"],
                           check=True, env=os.environ.copy(), stdout=subprocess.DEVNULL)
            rows[s] = {**test_accuracy(run), "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{p:5} seed {s}: test accuracy {rows[s]['test_accuracy']:.4f} ({rows[s]['seconds']} s)")
        report["precisions"][p] = rows
    base = report["precisions"].get("fp32")
    if base:
        report["points_below_fp32"] = {p: {s: round(100 * (base[s]["test_accuracy"] - r["test_accuracy"]), 2)
                                           for s, r in rows.items()}
                                       for p, rows in report["precisions"].items() if p != "fp32"}
        report["all_within_0.5_points"] = all(v <= 0.5 for rows in report["points_below_fp32"].values()
                                              for v in rows.values())
    report["load_average_after"] = load_average()
    if args.json_out:
        write_json(args.json_out, report)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
