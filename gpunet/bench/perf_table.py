"""The README's performance tables, from a committed `gpunet bench train` JSON.

    python scripts/perf_table.py benchmarks/results/train-cpu-....json

prints markdown: the ratio table (one row per workload and thread count: samples/s of each
side, the median of the paired per-round gpunet/PyTorch ratios with their min–max, the load
average before and after the row), then, when the JSON has them, the per-layer split and the
peak RSS. `gpunet bench train` prints the same rows (through rich) after a run, so the
documentation's numbers are whatever a committed file says, never typed in by hand.

A JSON written before the paired ratios existed still works: its per-round segments are in
round order, so the per-round ratios follow from them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAIN_HEADER = ["workload", "batch", "threads", "gpunet samples/s", "PyTorch samples/s",
               "gpunet / PyTorch (min–max)", "rounds", "load before→after"]
LAYER_HEADER = ["workload", "threads", "#", "layer", "gpunet fwd ms", "PyTorch fwd ms",
                "gpunet bwd ms", "PyTorch bwd ms"]
RSS_HEADER = ["workload", "threads", "samples", "gpunet peak RSS MB", "PyTorch peak RSS MB",
              "gpunet / PyTorch"]


def ratio_spread(row: dict):
    """The row's paired-ratio spread: recorded, derived from the segments, or None (no torch)."""
    if "ratio_spread" in row:
        return row["ratio_spread"]
    if "torch" not in row:
        return None
    from .train import paired_ratios
    return paired_ratios(row["gpunet"]["segments"], row["torch"]["segments"])


def _load(row: dict, report: dict) -> str:
    before = row.get("load_average_before", report.get("load_average_before", []))
    after = row.get("load_average_after", report.get("load_average_after", []))
    return f"{before[0] if before else '?'}→{after[0] if after else '?'}"


def _threads(row: dict, report: dict):
    t = row.get("threads")
    return str(t) if t is not None else str(report.get("environment", {}).get("blas_threads", "?"))


def main_rows(report: dict) -> list:
    out = []
    for r in report["results"]:
        s = ratio_spread(r)
        ratio = "—" if s is None else f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"
        torch_rate = f"{r['torch']['samples_per_s']:,.0f}" if "torch" in r else "—"
        out.append([r["workload"], str(r["batch_size"]), _threads(r, report),
                    f"{r['gpunet']['samples_per_s']:,.0f}", torch_rate, ratio,
                    str(len(r["gpunet"]["segments"])), _load(r, report)])
    return out


def layer_rows(report: dict) -> list:
    out = []
    for r in report["results"]:
        if "layers" not in r:
            continue
        g, t = r["layers"]["gpunet"], r["layers"].get("torch")
        tl = t["layers"] if t else [None] * len(g["layers"])
        for a, b in zip(g["layers"], tl):
            fused = f" (in {a['backward_in']})" if "backward_in" in a else ""
            out.append([r["workload"], _threads(r, report), str(a["index"]), a["layer"],
                        f"{a['forward_ms']:.2f}", f"{b['forward_ms']:.2f}" if b else "—",
                        f"{a['backward_ms']:.2f}{fused}", f"{b['backward_ms']:.2f}" if b else "—"])
        out.append([r["workload"], _threads(r, report), "", "whole step (rest: loss, optimizer)",
                    f"{g['step_ms']:.2f} (rest {g['rest_ms']:.2f})",
                    f"{t['step_ms']:.2f} (rest {t['rest_ms']:.2f})" if t else "—", "", ""])
    return out


def rss_rows(report: dict) -> list:
    out = []
    for r in report["results"]:
        m = r.get("peak_rss")
        if not m:
            continue
        t = m.get("torch")
        out.append([r["workload"], _threads(r, report), f"{m['gpunet']['samples']:,}",
                    f"{m['gpunet']['peak_rss_mb']:.0f}", f"{t['peak_rss_mb']:.0f}" if t else "—",
                    f"{m['gpunet_over_torch']:.2f}×" if t else "—"])
    return out


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The tables of `report` (a bench train JSON) as markdown, with the machine named."""
    env = report.get("environment", {})
    loads = [x for r in report["results"] for k in ("load_average_before", "load_average_after")
             for x in r.get(k, [])[:1]] or [x for k in ("load_average_before", "load_average_after")
                                            for x in report.get(k, [])[:1]]
    head = (f"{report.get('date', '?')[:10]}, {env.get('device_name', report.get('device', '?'))} "
            f"({env.get('cpu_count', '?')} cores), {env.get('blas', '?')}, "
            f"PyTorch {env.get('torch_version', 'not measured')}; 1-min load "
            f"{min(loads) if loads else '?'}–{max(loads) if loads else '?'}; ratio: median of "
            f"per-round paired ratios (min–max).")
    parts = [head, "", markdown_table(MAIN_HEADER, main_rows(report))]
    layers = layer_rows(report)
    if layers:
        parts += ["", "Per layer, ms per step (median over steps; backward fused with the next "
                      "layer shown there):", "", markdown_table(LAYER_HEADER, layers)]
    rss = rss_rows(report)
    if rss:
        parts += ["", "Peak RSS over one epoch, each side in a fresh interpreter:", "",
                  markdown_table(RSS_HEADER, rss)]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/perf_table.py",
                                description="markdown tables from a `gpunet bench train` JSON")
    p.add_argument("json", help="a JSON written by gpunet bench train --json-out")
    a = p.parse_args(argv)
    try:
        report = json.loads(Path(a.json).read_text())
        if (not isinstance(report, dict) or report.get("benchmark") != "bench_train"
                or not isinstance(report.get("results"), list)):
            raise ValueError(f"expected a `gpunet bench train` JSON (benchmark \"bench_train\" with "
                             f"results), got {str(report)[:60]!r}")
        text = markdown(report)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"perf_table: {a.json}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
