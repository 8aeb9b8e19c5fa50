"""The README's MNIST claim over seeds 0-4: test accuracy of
`gpunet train --dataset mnist --model mlp --hidden 512,256 --epochs 2 [--schedule cosine|onecycle]`.

    python scripts/seeds_mnist.py --json-out benchmarks/results/mnist-mlp-seeds-<date>.json
    python scripts/seeds_mnist.py --collect RUNS_DIR --json-out ...   # runs named <variant><seed>

Each run is a separate `gpunet train` process (one BLAS thread, gpunet's default).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from gpunet.bench.host import write_json

COMMAND = ["--dataset", "mnist", "--model", "mlp", "--hidden", "512,256", "--epochs", "2"]
VARIANTS = {"plain": [], "cos": ["--schedule", "cosine"], "onecycle": ["--schedule", "onecycle"]}


def test_accuracy(run: Path) -> dict:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    test = [ln for ln in lines if ln.get("kind") == "test"][-1]
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {','.join(VARIANTS)}")
    ap.add_argument("--collect", default=None, help="read finished runs from this folder instead of training")
    ap.add_argument("--json-out", default=None, metavar="FILE", help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.collect) if args.collect else Path(tempfile.mkdtemp(prefix="gpunet-seeds-"))
    report = {"benchmark": "mnist-mlp-seeds", "date": datetime.date.today().isoformat(),
              "command": "gpunet train " + " ".join(COMMAND) + " --seed S", "variants": {}}
    for name in args.variants.split(","):
        extra = VARIANTS[name]
        rows = {}
        for s in seeds:
            run = root / f"{name}{s}"
            if not args.collect:
                subprocess.run([sys.executable, "-m", "gpunet", "train", *COMMAND, *extra, "--seed", str(s),
                                "--out", str(root), "--name", run.name, "--quiet", "--no-doctor"],
                               check=True, env=os.environ.copy(), stdout=subprocess.DEVNULL)
            rows[s] = test_accuracy(run)
        accs = [r["test_accuracy"] for r in rows.values()]
        report["variants"][name] = {"flags": " ".join(extra), "per_seed": rows, "min": min(accs), "max": max(accs),
                                    "all_at_least_0.97": all(a >= 0.97 for a in accs)}
        print(f"{name:6} {' '.join(extra) or '(defaults)':20} test accuracy {min(accs):.4f}-{max(accs):.4f} "
              f"over seeds {args.seeds}")
    if args.json_out:
        write_json(args.json_out, report)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
