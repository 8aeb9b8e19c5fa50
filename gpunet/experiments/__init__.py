"""The classic training questions, each answered by a seeded experiment.

    gpunet experiment --list
    gpunet experiment zero-init-softmax [--quick] [--device cpu]
    gpunet experiment zero-init-softmax --check      # rerun, compare with docs/results/

Each lives in its own module here (NAME, QUESTION, run(quick, device, out) -> Result).
Every run limits BLAS to one thread (threadpoolctl), so a result does not depend on the
machine's thread setting, and records versions, BLAS and seeds in result.json.
The committed results that docs/experiments.md is generated from live in
docs/results/<name>.json (full runs, figures in docs/results/figures/) and
docs/results/quick/<name>.json (quick runs, what CI checks against).
"""
from __future__ import annotations

import importlib
import json
import math
import time
from pathlib import Path

from ..errors import GpunetValueError
from .base import Result, environment, save, show  # noqa: F401

# docs/results/ of the source checkout this module lives in (absent from an installed wheel)
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def results_dir() -> Path:
    """The committed results: the source checkout's docs/results, else ./docs/results (an
    installed gpunet run from a checkout); pass results= (--results) for any other place."""
    for root in (RESULTS, Path.cwd() / "docs" / "results"):
        if root.is_dir():
            return root
    raise GpunetValueError(f"committed results: expected a docs/results folder at {RESULTS} or in the current "
                           f"folder, found none; run from a gpunet checkout or pass --results DIR")

# name -> module (in the order of docs/experiments.md)
REGISTRY = {
    "zero-init-softmax": "zero_init_softmax",
    "zero-init-deep": "zero_init_deep",
    "dropout-scaling": "dropout_scaling",
    "momentum-velocity-init": "momentum_velocity_init",
    "soft-targets-precision": "soft_targets_precision",
    "batch-size-nondeterminism": "batch_size_nondeterminism",
    "unnormalized-inputs": "unnormalized_inputs",
    "relu-last-layer": "relu_last_layer",
    "mse-vs-threshold": "mse_vs_threshold",
    "l1-on-softmax": "l1_on_softmax",
    "generalized-dice": "generalized_dice",
    "batchnorm-placement": "batchnorm_placement",
    "multi-gpu-averaging": "multi_gpu_averaging",
}


def available() -> dict:
    """name -> question, for the experiments whose modules are present."""
    out = {}
    for name, mod in REGISTRY.items():
        try:
            out[name] = importlib.import_module(f".{mod}", __name__).QUESTION
        except ModuleNotFoundError:
            continue
    return out


def get(name: str):
    if name not in REGISTRY:
        raise GpunetValueError(f"experiment: expected one of {list(REGISTRY)}, got {name!r}")
    return importlib.import_module(f".{REGISTRY[name]}", __name__)


def seeds_of(module, result) -> list:
    """The seeds a run used: its data's "seeds", else the module's SEEDS or SEED."""
    data = result.data if isinstance(result.data, dict) else {}
    seeds = data.get("seed_list", data.get("seeds"))
    if not isinstance(seeds, (list, tuple)):
        seeds = None
    if seeds is None:
        seeds = getattr(module, "SEEDS", None)
    if seeds is None:
        seeds = [getattr(module, "SEED")] if hasattr(module, "SEED") else []
    return [int(s) for s in seeds]


def run(name: str, quick: bool = False, device: str = "cpu", out=None) -> Result:
    """Run one experiment, save result.json (and its plots) under `out`, return the Result.

    BLAS runs on one thread for the whole experiment, so sums are reduced in one fixed
    order whatever OPENBLAS_NUM_THREADS says, and the numbers reproduce bit for bit on
    the same CPU and library versions."""
    from threadpoolctl import threadpool_limits
    module = get(name)
    out = Path(out) if out is not None else Path("runs") / "experiments" / name
    out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.perf_counter()
        result = module.run(quick=quick, device=device, out=out)
        result.seconds, result.quick, result.device = time.perf_counter() - t0, quick, device
        result.environment = environment(seeds_of(module, result))
    save(result, out)
    return result


def committed_path(name: str, quick: bool, results=None) -> Path:
    """Where the committed result of `name` lives: RESULTS/<name>.json or RESULTS/quick/<name>.json."""
    get(name)
    root = Path(results) if results is not None else results_dir()
    return (root / "quick" if quick else root) / f"{name}.json"


def _close(a, b, rtol) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not all(isinstance(v, (int, float)) for v in (a, b)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def _diff(path, a, b, rtol, skip, out) -> None:
    """Append 'path: committed X, rerun Y' for every leaf of a and b that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in skip:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'missing in the rerun' if k in a else 'not in the committed result'}")
            else:
                _diff(f"{path}.{k}", a[k], b[k], rtol, skip, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: committed {len(a)} entries, rerun {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(f"{path}[{i}]", x, y, rtol, skip, out)
    elif not _close(a, b, rtol):
        out.append(f"{path}: committed {a!r}, rerun {b!r}")


def compare(committed: dict, rerun: dict, rtol: float = 1e-9) -> tuple:
    """(differences, notes) between two result.json dicts.

    Compared: columns, every table cell (the extra tables in data["tables"] too), every
    finding (numbers to a relative rtol, the rest exactly) and the conclusion text. Not compared: wall-clock entries the experiment
    marks volatile, the date, the run time. Notes name environment differences (versions,
    BLAS), which explain a difference but are not one."""
    skip = set(committed.get("volatile", [])) | set(rerun.get("volatile", []))
    diffs = []
    if committed.get("quick") != rerun.get("quick"):
        diffs.append(f"mode: committed {'quick' if committed.get('quick') else 'full'}, "
                     f"rerun {'quick' if rerun.get('quick') else 'full'}")
    _diff("columns", committed.get("columns"), rerun.get("columns"), rtol, set(), diffs)
    rows_a, rows_b = committed.get("rows", []), rerun.get("rows", [])
    if len(rows_a) != len(rows_b):
        diffs.append(f"rows: committed {len(rows_a)}, rerun {len(rows_b)}")
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        _diff(f"rows[{i}]", ra, rb, rtol, skip, diffs)
    _diff("findings", committed.get("findings", {}), rerun.get("findings", {}), rtol, skip, diffs)
    _diff("data.tables", committed.get("data", {}).get("tables", []), rerun.get("data", {}).get("tables", []),
          rtol, skip, diffs)
    if committed.get("conclusion") != rerun.get("conclusion"):
        a, b = committed.get("conclusion", ""), rerun.get("conclusion", "")
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        diffs.append(f"conclusion differs from character {i}: committed …{a[max(0, i - 40):i + 60]!r}…, "
                     f"rerun …{b[max(0, i - 40):i + 60]!r}…")
    notes = []
    ea, eb = committed.get("environment", {}), rerun.get("environment", {})
    for k in ("python", "numpy", "gpunet", "blas", "blas_threads", "seeds"):
        if ea.get(k) != eb.get(k):
            notes.append(f"environment.{k}: committed {ea.get(k)!r}, rerun {eb.get(k)!r}")
    return diffs, notes


def check(name: str, quick: bool = False, device: str = "cpu", out=None, results=None, rtol: float = 1e-9):
    """Rerun `name` and compare with its committed result: (differences, notes, Result)."""
    path = committed_path(name, quick, results)
    if not path.is_file():
        raise GpunetValueError(f"experiment --check: expected a committed result at {path}, found none "
                               f"(pass --results DIR holding {path.name})")
    committed = json.loads(path.read_text())
    result = run(name, quick=quick, device=device, out=out)
    diffs, notes = compare(committed, json.loads(json.dumps(result.to_json(), default=float)), rtol)
    return diffs, notes, result
