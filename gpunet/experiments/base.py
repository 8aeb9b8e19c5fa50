"""What every experiment returns, and how it is shown and saved.

An experiment module defines NAME, QUESTION and `run(quick, device, out) -> Result`.
It is built only from public gpunet APIs. Its conclusion is a paragraph computed
from the measured numbers (f-strings over the results), never a canned sentence.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..fileio import atomic_write_bytes
from ..plot import pyplot


@dataclasses.dataclass
class Result:
    name: str
    question: str
    columns: list                     # column names of the table, in order
    rows: list                        # list of dicts keyed by column name
    conclusion: str                   # computed from the numbers
    data: dict = dataclasses.field(default_factory=dict)   # extra measurements (curves, ...)
    findings: dict = dataclasses.field(default_factory=dict)  # the key numbers tests assert on
    figures: list = dataclasses.field(default_factory=list)   # files written beside result.json
    quick: bool = False
    device: str = "cpu"
    seconds: float = 0.0
    # wall-clock measurements (column names / findings keys): reported, never compared by --check
    volatile: list = dataclasses.field(default_factory=list)
    environment: dict = dataclasses.field(default_factory=dict)  # versions, BLAS, threads, seeds

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["date"] = datetime.date.today().isoformat()
        d["machine"] = platform.machine()
        return d


def _fmt(v):
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def show(result: Result, console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"{result.name}: {result.question}")
    for c in result.columns:
        t.add_column(c, justify="right")
    for row in result.rows:
        t.add_row(*(escape(_fmt(row.get(c, ""))) for c in result.columns))
    console.print(t)
    for extra in (result.data.get("tables", []) if isinstance(result.data, dict) else []):
        e = Table(title=extra["title"])
        for c in extra["columns"]:
            e.add_column(c, justify="right")
        for row in extra["rows"]:
            e.add_row(*(escape(_fmt(row.get(c, ""))) for c in extra["columns"]))
        console.print(e)
    console.print(escape(result.conclusion))
    if isinstance(result.data, dict) and result.data.get("timing"):
        console.print(f"[dim]{escape(result.data['timing'])}[/]")
    mode = "quick" if result.quick else "full"
    console.print(f"[dim]{mode} run on {result.device} in {result.seconds:.1f} s[/]")


def save(result: Result, out, filename: str = "result.json") -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    atomic_write_bytes(path, json.dumps(result.to_json(), indent=1, default=float).encode())
    return path


def environment(seeds) -> dict:
    """Versions, BLAS library and its thread setting (as in effect now), and the seeds of a run."""
    import sys

    import numpy as np

    from .. import __version__
    blas = []
    try:
        from threadpoolctl import threadpool_info
        blas = [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    return {"python": sys.version.split()[0], "numpy": np.__version__, "gpunet": __version__,
            "platform": platform.platform(), "blas": blas,
            "blas_threads": sorted({b["num_threads"] for b in blas}), "seeds": list(seeds)}


def save_figure(fig, out, name: str, dpi: int = 110) -> list:
    """Lay out, save as out/name and close a matplotlib figure; returns [name] for Result.figures."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(Path(out) / name, dpi=dpi)
    plt.close(fig)
    return [name]


def try_plot():
    """matplotlib.pyplot with the Agg backend, or None when matplotlib is missing."""
    return pyplot()


# Line styles for curves that may coincide (a run stuck on the same plateau as another):
# each later curve is thinner and dashed differently, so one never hides another.
STYLES = [dict(ls="-", lw=3.0, alpha=0.6), dict(ls="--", lw=2.2), dict(ls=":", lw=2.2),
          dict(ls="-.", lw=1.6), dict(ls=(0, (5, 1, 1, 1, 1, 1)), lw=1.3), dict(ls=(0, (1, 1)), lw=1.0)]


def style(i: int) -> dict:
    """Matplotlib keyword arguments of the i-th curve (see STYLES)."""
    return dict(STYLES[i % len(STYLES)])


def integer_ticks(axis) -> None:
    """Whole-number ticks only (epochs, steps) on a matplotlib axis (ax.xaxis)."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def difference(a, b, paired: bool = True) -> dict:
    """mean(a) − mean(b) over seeds with its standard error and 95% t-interval.

    paired: a[i] and b[i] share seed i (same initial weights and batch order), so the
    interval is that of the per-seed differences; otherwise Welch's standard error
    sqrt(s_a²/n_a + s_b²/n_b) with min(n_a, n_b) − 1 degrees of freedom."""
    import numpy as np
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        d = a - b
        n = len(d)
        se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        df = n - 1
    else:
        n = min(len(a), len(b))
        se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))) if n > 1 else float("nan")
        df = n - 1
    mean = float(a.mean() - b.mean())
    t = _T975[df - 1] if 1 <= df <= len(_T975) else 1.96
    lo, hi = mean - t * se, mean + t * se
    return {"mean": mean, "se": se, "lo": lo, "hi": hi, "n": int(n), "paired": paired,
            "resolved": bool(lo > 0 or hi < 0)}


def difference_words(d: dict, what: str, higher: str = "higher", lower: str = "lower") -> str:
    """The difference worded only as strongly as its 95% interval allows."""
    ci = f"{d['mean']:+.4f}, 95% interval [{d['lo']:+.4f}, {d['hi']:+.4f}] over {d['n']} seeds"
    if d["n"] < 2:
        return f"{what} differs by {d['mean']:+.4f} in a single seed, which cannot resolve a difference"
    if d["resolved"]:
        return f"{what} is {higher if d['mean'] > 0 else lower} ({ci}): the interval excludes zero"
    return f"{what} shows no resolved difference ({ci}): the interval includes zero"
