"""Why the prediction for one sample changes with the batch it is in.

The question: a model's prediction for sample 0 differs, in the last digits, between
`predict(X)[0]`, `predict(X[:1])` and the formula w·x + b written by hand. The answer there
calls matrix multiplication "non-deterministic". It is not: every path below gives bitwise the
same result every time it is repeated. What changes is the *order of summation*.

A Linear layer computes y_j = Σ_i x_i·W_ji + b_j. Floating-point addition is not
associative, so each way of grouping the 784 products rounds differently, by a few ulps.
BLAS chooses the grouping from the shapes:

- one row (batch 1) goes to a matrix-vector kernel (gemv): one dot product per output;
- two rows or more go to the matrix-matrix kernel (gemm), which cuts k into cache blocks and
  keeps several partial sums per SIMD register (interleaved over k), added together at the
  end; its blocking and edge handling depend on M (the batch), N and k, and threads split
  the work by shape too;
- `einsum` without BLAS, a copied transposed weight (another memory layout, so another
  kernel), and a hand-written dot per unit are still other orders.

Each order is exact to within a few roundings of the true sum, so the paths differ by a few
ulps of the outputs, in float64 as in float32: float64 makes the differences ~5e8× smaller
in absolute terms, not zero. Differences in ulps are measured against the largest |output|
of the row (the ulp of a near-zero output would exaggerate them). The network is an
MLP 784-256-128-10 with He-initialised weights in eval mode: summation order does not care
whether the weights were trained.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gpunet as gn
from .base import Result, save_figure, try_plot

NAME = "batch-size-nondeterminism"
SEED = 0   # every random draw here (initial weights, batch order) is seeded with it
QUESTION = "Why does a model's prediction for one sample change with the batch size?"

BATCHES = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 1024)
SHOWN = (8, 128, 1024)
GEMV = "W @ x (matrix-vector)"


def _model(dtype):
    gn.manual_seed(SEED)
    return gn.models.mlp([784, 256, 128, 10], activation="relu", init="he_normal").to(dtype=dtype).eval()


def manual_forward(model, x, matmul):
    """The model's forward with `matmul(x, W)` in place of Linear's x @ W.T."""
    for layer in model:
        if isinstance(layer, gn.nn.Linear):
            x = matmul(x, layer.weight.data) + layer.bias.data
        elif isinstance(layer, gn.nn.Flatten):
            x = x.reshape(len(x), -1)
        else:
            x = layer(x)
    return x


def _paths(xp):
    """name -> matmul(x, W) computing x @ W.T in another order."""
    return {
        "W @ x (matrix-vector)": lambda x, W: xp.stack([W @ row for row in x]),
        "einsum": lambda x, W: xp.einsum("ni,oi->no", x, W),
        "W.T copied (in, out layout)": lambda x, W: x @ xp.ascontiguousarray(W.T),
        "one dot per unit": lambda x, W: xp.stack([xp.stack([xp.dot(w, row) for w in W]) for row in x]),
    }


def _ulps(y, ref) -> float:
    """max |y − ref| in ulps of the row's largest |ref| (host float arrays of one dtype)."""
    return float(np.abs(y - ref).max() / np.spacing(np.abs(ref).max()))


def measure(dtype, x_all, dev) -> dict:
    """Sample 0's outputs along every path, compared with sample 0 alone (batch 1)."""
    model = _model(dtype).to(dev)
    x = dev.asarray(x_all, dtype=dtype)
    ref = gn.backend.to_numpy(model(x[:1]))[0]
    out = {"ref": ref, "batch": {}, "path": {}, "repeat": {}}
    for b in BATCHES:
        out["batch"][b] = gn.backend.to_numpy(model(x[:b]))[0]
    for b in (1, 128):
        out["repeat"][b] = gn.backend.to_numpy(model(x[:b]))[0]    # the same call again
    for name, mm in _paths(dev.xp).items():
        out["path"][name] = gn.backend.to_numpy(manual_forward(model, x[:1], mm))[0]
    # The float32 model evaluated in float64 from the same weights: what exact rounding would give.
    if dtype == "float32":
        wide = _model("float64").to(dev)
        wide.load_state_dict(model.state_dict())    # cast up: the same float32 weights, exactly
        out["exact"] = gn.backend.to_numpy(wide(x[:1].astype("float64")))[0].astype(np.float32)
    return out


def _rows(m32, m64) -> list:
    def row(label, a32, a64, base32, base64):
        r = {"sample 0 computed as": label, "float32 ulps": _ulps(a32, base32), "float64 ulps": _ulps(a64, base64),
             "float32 |Δ|": float(np.abs(a32 - base32).max()), "float64 |Δ|": float(np.abs(a64 - base64).max()),
             "float32 ulps from exact": _ulps(a32, m32["exact"])}
        return r
    rows = [row("batch 1 (reference)", m32["ref"], m64["ref"], m32["ref"], m64["ref"])]
    rows += [row(f"row 0 of batch {b}", m32["batch"][b], m64["batch"][b], m32["ref"], m64["ref"]) for b in SHOWN]
    rows += [row(name, m32["path"][name], m64["path"][name], m32["ref"], m64["ref"]) for name in m32["path"]]
    rows += [row(f"batch {b} again (vs its first call)", m32["repeat"][b], m64["repeat"][b],
                 m32["batch"][b], m64["batch"][b]) for b in m32["repeat"]]
    return rows


def _distinct(m) -> int:
    """How many bitwise-different results sample 0 gets across all batch sizes tried."""
    return len({v.tobytes() for v in m["batch"].values()})


def _conclusion(rows, m32, m64) -> str:
    by = {r["sample 0 computed as"]: r for r in rows}
    repeats = [r for k, r in by.items() if "again" in k]
    determ = all(r["float32 ulps"] == 0 and r["float64 ulps"] == 0 for r in repeats)
    b32 = {b: _ulps(v, m32["ref"]) for b, v in m32["batch"].items()}
    b64 = {b: _ulps(v, m64["ref"]) for b, v in m64["batch"].items()}
    differ = [b for b in BATCHES if b32[b] > 0 or b64[b] > 0]
    parts = [("Repeating a call gives bitwise the same output (0 ulps): nothing here is random. "
              if determ else "Repeating a call changed the output, so this BLAS is not deterministic here. ")]
    if differ:
        parts.append(f"Sample 0 gets {_distinct(m32)} different float32 results and {_distinct(m64)} different "
                     f"float64 results across batch sizes {list(BATCHES)}; batch sizes {differ} differ from "
                     f"batch 1 by up to {max(b32.values()):.1f} ulps in float32 and "
                     f"{max(b64.values()):.1f} ulps in float64 (absolute: "
                     f"{max(r['float32 |Δ|'] for r in rows):.2g} vs {max(r['float64 |Δ|'] for r in rows):.2g}).")
    else:
        parts.append("On this machine every batch size gives sample 0 the same bits: the BLAS used the same "
                     "summation order for all of them.")
    gemv = by[GEMV]
    if gemv["float32 ulps"] == 0 and gemv["float64 ulps"] == 0:
        parts.append("Batch 1 equals the matrix-vector product W·x bit for bit.")
    else:
        parts.append(f"Batch 1 is not the matrix-vector product W·x either ({gemv['float32 ulps']:.1f}/"
                     f"{gemv['float64 ulps']:.1f} ulps): this BLAS has its own path for one row.")
    paths = [k for k in m32["path"] if k != GEMV]
    parts.append("The other summation orders give " + ", ".join(
        f"{k} {by[k]['float32 ulps']:.1f}/{by[k]['float64 ulps']:.1f}" for k in paths)
        + " ulps (float32/float64) from batch 1.")
    exact = max(r["float32 ulps from exact"] for r in rows)
    a32, a64 = max(r["float32 |Δ|"] for r in rows), max(r["float64 |Δ|"] for r in rows)
    f64 = ("float64 shrinks the differences without removing them" if 0 < a64 < a32 else
           "float64 removes them" if a64 == 0 < a32 else
           "float64 does not shrink them" if a64 >= a32 > 0 else "there are no differences to shrink")
    parts.append(f"Against the float32 model evaluated in float64 and rounded once, every float32 path is within "
                 f"{exact:.1f} ulps"
                 + (": none is wrong, they are different roundings of one sum" if exact <= 16 else "")
                 + f"; {f64} (largest |Δ| {a32:.2g} in float32, {a64:.2g} in float64).")
    return "".join(parts[:1]) + " ".join(parts[1:])


def _plot(m32, m64, out: Path) -> list:
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in (("float32", m32), ("float64", m64)):
        ax.plot(BATCHES, [_ulps(m["batch"][b], m["ref"]) for b in BATCHES], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sample 0 is row 0)")
    ax.set_ylabel("max difference from batch 1 (ulps)")
    ax.legend()
    return save_figure(fig, out, "ulps.png", dpi=120)


def run(quick: bool, device: str, out: Path) -> Result:
    dev = gn.device(device)
    test = gn.data.load("mnist", "test")
    x_all = test.x[:max(BATCHES)].reshape(max(BATCHES), -1) / 255.0
    m32, m64 = measure("float32", x_all, dev), measure("float64", x_all, dev)
    rows = _rows(m32, m64)
    findings = {"float32_batch_ulps": {b: _ulps(v, m32["ref"]) for b, v in m32["batch"].items()},
                "float64_batch_ulps": {b: _ulps(v, m64["ref"]) for b, v in m64["batch"].items()},
                "float32_path_ulps": {k: _ulps(v, m32["ref"]) for k, v in m32["path"].items()},
                "float64_path_ulps": {k: _ulps(v, m64["ref"]) for k, v in m64["path"].items()},
                "repeat_ulps": max(max(r["float32 ulps"], r["float64 ulps"]) for r in rows if "again" in
                                   r["sample 0 computed as"]),
                "float32_max_ulps_from_exact": max(r["float32 ulps from exact"] for r in rows),
                "distinct_float32": _distinct(m32), "distinct_float64": _distinct(m64)}
    return Result(NAME, QUESTION, columns=list(rows[0]), rows=rows, conclusion=_conclusion(rows, m32, m64),
                  data={"batches": list(BATCHES),
                        **{f"outputs_{d}": {str(b): v.tolist() for b, v in m["batch"].items()}
                           for d, m in (("float32", m32), ("float64", m64))}},
                  findings=findings, figures=_plot(m32, m64, out))
