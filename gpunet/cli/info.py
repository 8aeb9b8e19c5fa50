"""`gpunet info`: versions, GPU usability (and why not), visible GPUs, kernel sources."""
from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import backend, threads


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def collect() -> dict:
    status = backend.gpu_status()
    kdir = backend.kernels_dir()
    return {
        "versions": backend.versions(),
        "gpu_available": status.available,
        "gpu_missing": status.missing,
        "gpu_reason": status.reason,
        "default_device": backend.device("auto").name,
        "gpus": list(status.devices),
        "kernels_dir": str(kdir) if kdir else None,
        "kernels": sorted(p.name for p in kdir.glob("*.cu")) if kdir else [],
        "blas": threads.blas_info(),
        "train_threads": threads.AUTO_THREADS,
    }


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    console = Console()
    t = Table(title="gpunet info", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    v = info["versions"]
    t.add_row("Python", v["python"])
    t.add_row("NumPy", v["numpy"])
    t.add_row("CuPy", v["cupy"] or "not installed")
    t.add_row("GPU usable", "yes" if info["gpu_available"] else escape(f"no: {info['gpu_reason']}"))
    t.add_row("default device", info["default_device"] + ("" if info["gpu_available"] else " (CPU fallback)"))
    b = info["blas"]
    t.add_row("BLAS threads", escape(f"{b['threads']} now ({b['library']}); gpunet train uses "
                                     f"{info['train_threads']} unless --threads N"))
    t.add_row("kernels", escape(f"{', '.join(info['kernels'])} in {info['kernels_dir']}")
              if info["kernels_dir"] else "not found (GPU kernels unavailable)")
    console.print(t)
    if info["gpus"]:
        g = Table(title="visible GPUs")
        for col in ("index", "name", "memory (GiB)", "compute capability"):
            g.add_column(col)
        for d in info["gpus"]:
            g.add_row(str(d["index"]), escape(d["name"]), f"{d['memory_gib']:.1f}", d["compute_capability"])
        console.print(g)
    return 0
