"""Findings: what the doctor reports, the catalogue of codes, and the rich report.

A `Finding` is one diagnosis: a severity ("info" < "warning" < "error"), a stable
code ("GN101-symmetric-init"), a one-line message, the numbers it rests on
(`evidence`) and a one-line fix. Codes never change meaning once published, so
scripts and `--ignore` lists can rely on them. `--ignore` accepts the full code,
its number ("GN101") or its name ("symmetric-init").

GN1xx are static checks (before training, on one sample batch); GN2xx are live
checks (during `fit`, at the trainer's logging points).
"""
from __future__ import annotations

import dataclasses
import math
import sys

from ..errors import GpunetValueError

SEVERITIES = ("info", "warning", "error")

# code -> one-line description (docs/doctor.md lists the same codes with real output)
CODES = {
    "GN101-symmetric-init": "a hidden layer's units start identical (all-zero or constant weights)",
    "GN102-logits-activation": "an activation squashes the logits fed to a loss that applies its own",
    "GN103-input-scale": "inputs far outside the range the first layer was initialized for",
    "GN104-mse-on-labels": "mean squared error on class labels",
    "GN105-bce-one-of-many": "per-class sigmoid/BCE on a one-of-many (single-label) problem",
    "GN106-dead-relu": "ReLU units never active on the sample batch",
    "GN107-init-loss": "initial loss far from its expected value at initialization",
    "GN108-optimizer-state": "optimizer state (momentum velocity) starts non-zero",
    "GN109-step-too-large": "one step of lr × gradient would move weights by more than their norm",
    "GN110-dp-sum-lr": "data parallel reduce='sum' with an lr meant for one device",
    "GN201-non-finite": "NaN/Inf in the loss or the weights: training diverged",
    "GN202-divergence": "the loss exploded (finite but huge): training diverged",
    "GN203-priors-plateau": "the loss sits at the value of predicting the class priors",
    "GN204-accuracy-at-chance": "the loss falls but the accuracy stays at chance",
    "GN205-exploding-gradient": "a layer's gradient norm grew by orders of magnitude",
    "GN206-vanishing-gradient": "a layer's gradient is orders of magnitude below the others'",
    "GN207-fp16-overflow": "fp16 without loss scaling: gradients overflowed fp16's range (NaN/Inf)",
    "GN208-loss-scale-floor": "the fp16 loss scale sits at its floor and steps keep being skipped",
}


def code(name: str) -> str:
    """The full code for a full code, its number or its name ("GN101", "symmetric-init")."""
    for full in CODES:
        number, _, short = full.partition("-")
        if name in (full, number, short):
            return full
    raise GpunetValueError(f"doctor code: expected one of {list(CODES)} (or its number or name), got {name!r}")


@dataclasses.dataclass
class Finding:
    """One diagnosis. evidence: {name: number or short string}; fix: one line."""

    severity: str
    code: str
    message: str
    evidence: dict
    fix: str
    step: int | None = None  # the global step of a live finding (None: before training)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise GpunetValueError(f"Finding: severity expected one of {SEVERITIES}, got {self.severity!r}")
        self.code = code(self.code)

    @property
    def level(self) -> int:
        return SEVERITIES.index(self.severity)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self):
        where = f" (step {self.step})" if self.step is not None else ""
        return f"{self.severity} {self.code}{where}: {self.message} Fix: {self.fix}"


def ignored(findings, ignore=()) -> list:
    """The findings whose code is not in `ignore` (full codes, numbers or names)."""
    skip = {code(c) for c in ignore}
    return [f for f in findings if f.code not in skip]


def worst(findings) -> str | None:
    """The highest severity among `findings` (None when there are none)."""
    return SEVERITIES[max(f.level for f in findings)] if findings else None


def has_problems(findings) -> bool:
    """True when any finding is a warning or an error."""
    return any(f.level >= SEVERITIES.index("warning") for f in findings)


def fmt(v) -> str:
    """Evidence values, compactly: 3 significant digits for floats."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, ".3g")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}


def render(findings, console=None, title="gpunet doctor") -> None:
    """Print `findings` as a rich table (severity, code, message, evidence, fix)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(stderr=True)
    if not findings:
        console.print(f"[green]{escape(title)}: no findings[/]")
        return
    table = Table(title=title, show_lines=True)
    for col in ("severity", "code", "message", "evidence", "fix"):
        table.add_column(col, overflow="fold", no_wrap=col in ("severity", "code"))
    for f in sorted(findings, key=lambda f: -f.level):
        evidence = "\n".join(f"{k}={fmt(v)}" for k, v in f.evidence.items())
        where = f" (step {f.step})" if f.step is not None else ""
        table.add_row(f"[{STYLE[f.severity]}]{f.severity}[/]", f.code, escape(f.message + where),
                      escape(evidence), escape(f.fix))
    console.print(table)


def print_live(finding, console=None) -> None:
    """One finding as it appears during training: a short rich line to stderr."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console(stderr=True, file=sys.stderr)
    where = f" (step {finding.step})" if finding.step is not None else ""
    console.print(f"[{STYLE[finding.severity]}]doctor {finding.severity}[/] {finding.code}{where}: "
                  f"{escape(finding.message)} [dim]Fix: {escape(finding.fix)}[/]")
