"""Soft targets in float32 vs float64: does float32 stop cross-entropy training early?

With soft targets t (rows that are distributions, not one-hot), cross-entropy never goes to
zero: it is bounded below by the targets' entropy,

    CE(t, p) = −Σ_j t_j log p_j = H(t) + KL(t ‖ p),

so the only part training can reduce is the excess KL(t ‖ p) = CE − H(t). Here H is about 0.96 nats
and the student (softmax regression) can fit the teacher exactly, so KL can go to 0.

**What float32 really limits.** A float32 loss near 0.96 is a multiple of its ulp,
2⁻²⁴ ≈ 6e-8, so the *reported* excess CE − H can never be seen below ~6e-8: the loss curve
goes flat there, and an optimizer that decides by comparing loss values (a line search,
L-BFGS's stopping test) stops. But SGD never looks at the loss value: its gradient
dlogits = p − t is computed directly, with a relative error of ~1e-7, and it keeps pushing.
The *true* KL of the float32 weights (evaluated in float64) keeps falling far below 6e-8,
until the updates lr·g become smaller than half an ulp of the weights and round away. That
floor is set by the float32 resolution of the weights, KL ~ (ε₃₂·|z|)², around 1e-16.

float64 lowers both floors by many orders of magnitude. The true KL is measured in
float64 by Σ t·(log t − log p) while that is above 1e-8 and by the second-order form
½ Σ (p − t)²/t below it (exact to O(p − t), and free of the cancellation that limits the
log form to ~1e-17).

**L-BFGS, the question's optimizer.** gn.optim.LBFGS (PyTorch's algorithm, strong-Wolfe line
search) is run on the same problem in each dtype, once with PyTorch's default tolerances
(tolerance_grad 1e-7, tolerance_change 1e-9) and once with tolerance_change 1e-20 and
tolerance_grad 0, so that only rounding can stop it. It stops when an iteration leaves the
loss value unchanged: in float32 that happens as soon as the improvement is below one ulp
of the loss, which is what the question saw as "converges within 20-30 iterations".

The teacher here is a random softmax-linear map on 20 Gaussian inputs with 3 classes, the
target rows looking like the question's [0.39, 0.44, 0.17]. Training is full-batch SGD with
momentum (lr 1, m 0.9) from zero weights, the same data cast to each dtype.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gpunet as gn
from .base import Result, save_figure, try_plot

NAME = "soft-targets-precision"
SEED = 0   # every random draw here (initial weights, batch order) is seeded with it
QUESTION = "With soft targets, does float32 stop cross-entropy training where float64 keeps improving?"

D, C = 20, 3
LR, MOMENTUM = 1.0, 0.9
LOG_SWITCH = 1e-8      # below this KL, use the second-order form


def teacher(n, seed=SEED):
    """(x, t) in float64: Gaussian inputs and the soft targets of a random softmax-linear teacher."""
    rng = np.random.Generator(np.random.PCG64(seed))
    x = rng.standard_normal((n, D))
    z = x @ (0.15 * rng.standard_normal((C, D))).T + 0.3 * rng.standard_normal(C)
    t = np.exp(z - z.max(axis=1, keepdims=True))
    return x, t / t.sum(axis=1, keepdims=True)


def true_kl(x, t, W, b) -> float:
    """KL(t ‖ softmax(x Wᵀ + b)) in float64, averaged over rows (see the module docstring)."""
    z = x @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    kl = float((t * (np.log(t) - logp)).sum(axis=1).mean())
    if kl > LOG_SWITCH:
        return kl
    return float((0.5 * (np.exp(logp) - t) ** 2 / t).sum(axis=1).mean())


def fit(x, t, dtype, steps, dev) -> dict:
    """Full-batch SGD in `dtype`; per step the reported excess (loss − H in dtype), the true KL
    and whether any weight changed."""
    gn.manual_seed(SEED)
    model = gn.nn.Linear(D, C, init="zeros").to(dev, dtype=dtype)
    loss_fn = gn.losses.SoftmaxCrossEntropy()
    opt = gn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    X, T = dev.asarray(x, dtype=dtype), dev.asarray(t, dtype=dtype)
    xp = dev.xp
    H = float((-(T * xp.log(T)).sum(axis=1)).mean())  # sync: the entropy, rounded like the loss
    reported, kl, moved = [], [], []   # moved: max |Δw| / max |w| of the step
    for _ in range(steps + 1):
        before = [p.data.copy() for p in model.parameters()]
        loss = loss_fn.forward(model(X), T)
        reported.append(float(loss) - H)  # sync: the value a loss curve would show
        kl.append(true_kl(x, t, *(gn.backend.to_numpy(p.data) for p in model.parameters())))
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
        params = model.parameters()
        scale = max(float(xp.abs(p.data).max()) for p in params) or 1.0  # sync
        moved.append(max(float(xp.abs(p.data - w).max()) for p, w in zip(params, before)) / scale)
    return {"reported": reported, "kl": kl, "moved": moved, "entropy": H,
            "ulp_H": float(np.spacing(np.asarray(H, dtype=dtype)))}


def floors(run, tail=0.25) -> dict:
    """Where progress stops, from the last `tail` of the run.

    reported_floor: the smallest excess the loss curve can still show: the band |loss − H|
    stays in, or one ulp of H when the loss rounds to H exactly;
    kl_floor: the median true KL; *_flat_at: the first step within that floor;
    update_floor: the median relative weight change per step once flat (0 when frozen).
    """
    n = len(run["kl"])
    start = int(n * (1 - tail))
    rep_floor = max(float(np.max(np.abs(run["reported"][start:]))), run["ulp_H"])
    kl_floor = float(np.median(run["kl"][start:]))
    rep_hit = next(i for i, v in enumerate(run["reported"]) if abs(v) <= rep_floor)
    kl_hit = next(i for i, v in enumerate(run["kl"]) if v <= 2 * kl_floor)
    return {"reported_floor": rep_floor, "kl_floor": kl_floor, "reported_flat_at": rep_hit,
            "kl_flat_at": kl_hit, "update_floor": float(np.median(run["moved"][start:]))}


def _plot(runs, out: Path) -> list:
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for (dtype, run), color in zip(runs.items(), ("tab:blue", "tab:red")):
        steps = np.arange(len(run["kl"]))
        rep = np.abs(np.asarray(run["reported"]))
        shown = rep > 0          # a loss that rounds to exactly H has no point on a log axis
        ax.plot(steps[shown], rep[shown], ".", ms=2, c=color, label=f"{dtype}: |loss − H| as reported")
        ax.plot(steps, np.maximum(run["kl"], 1e-40), "-", lw=1.5, c=color, alpha=0.6,
                label=f"{dtype}: true KL")
        ax.axhline(run["ulp_H"], ls=":", lw=0.8, c=color)
    ax.set_yscale("log")
    ax.set_ylim(1e-36, 1)
    ax.set_title("dotted: one ulp of H in each dtype", fontsize=9)
    ax.set_xlabel("full-batch SGD step")
    ax.set_ylabel("excess cross-entropy (nats)")
    ax.legend(fontsize=8)
    return save_figure(fig, out, "kl.png", dpi=120)


LBFGS_SETTINGS = (("PyTorch defaults", 1e-7, 1e-9), ("rounding only", 0.0, 1e-20))
LBFGS_MAX_ITER = 500


def lbfgs(x, t, dtype, dev, tolerance_grad, tolerance_change) -> dict:
    """One LBFGS.step (strong Wolfe, history 10) from zero weights; iterations, why it stopped, the KL."""
    gn.manual_seed(SEED)
    model = gn.nn.Linear(D, C, init="zeros").to(dev, dtype=dtype)
    loss_fn = gn.losses.SoftmaxCrossEntropy()
    X, T = dev.asarray(x, dtype=dtype), dev.asarray(t, dtype=dtype)
    H = float((-(T * dev.xp.log(T)).sum(axis=1)).mean())  # sync
    opt = gn.optim.LBFGS(model.parameters(), lr=1, max_iter=LBFGS_MAX_ITER, max_eval=100 * LBFGS_MAX_ITER,
                         history_size=10, tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                         line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn.forward(model(X), T)
        model.backward(loss_fn.backward())
        return loss

    opt.step(closure)
    st = opt.lbfgs_state
    final = float(closure())  # sync: the loss where it stopped, and its gradient
    gmax = float(dev.xp.abs(opt._flat_grad()).max())
    change = final - st["prev_loss"]
    if st["n_iter"] >= LBFGS_MAX_ITER:
        reason = "max_iter"
    elif gmax <= tolerance_grad:
        reason = "max|g| ≤ tolerance_grad"
    elif change == 0.0:
        reason = "loss unchanged (Δloss = 0)"
    elif abs(change) < tolerance_change:
        reason = "|Δloss| < tolerance_change"
    else:
        reason = "step or direction below tolerance"
    return {"iterations": int(st["n_iter"]), "evaluations": int(st["func_evals"]), "stop": reason,
            "reported": final - H,
            "kl": true_kl(x, t, *(gn.backend.to_numpy(p.data) for p in model.parameters()))}


def _lbfgs_text(lb) -> str:
    out = []
    for label, _, _ in LBFGS_SETTINGS:
        a, b = lb[(label, "float32")], lb[(label, "float64")]
        out.append(f"with {label} ({'tolerance_change ' + format(dict((l, c) for l, _, c in LBFGS_SETTINGS)[label], 'g')}) "
                   f"it stops after {a['iterations']} iterations in float32 ({a['stop']}, true KL {a['kl']:.2g}) "
                   f"and {b['iterations']} in float64 ({b['stop']}, true KL {b['kl']:.2g})")
    d = lb[(LBFGS_SETTINGS[-1][0], "float32")], lb[(LBFGS_SETTINGS[-1][0], "float64")]
    longer = d[1]["iterations"] > d[0]["iterations"] and d[1]["kl"] < 1e-3 * d[0]["kl"]
    return ("L-BFGS (strong Wolfe, the question's optimizer): " + "; ".join(out) + ". "
            + ("With only rounding to stop it, float64 runs longer and ends "
               f"{d[0]['kl'] / max(d[1]['kl'], 1e-300):.1e}× lower: the float32 line search stalls on a loss "
               "value that no longer changes." if longer else
               "Rounding alone does not make float32 stop earlier or higher than float64 here."))


def _conclusion(runs, fl, n, lb=None) -> str:
    r32, r64, f32, f64 = runs["float32"], runs["float64"], fl["float32"], fl["float64"]
    parts = [f"The targets' entropy is H = {r64['entropy']:.4f} nats over {n} rows; an ulp of H is "
             f"{r32['ulp_H']:.2g} in float32 and {r64['ulp_H']:.2g} in float64."]
    parts.append(f"In float32 the reported excess loss − H is flat from step {f32['reported_flat_at']}, "
                 f"within ±{f32['reported_floor']:.2g} ({f32['reported_floor'] / r32['ulp_H']:.0f} ulp of H) "
                 f"of zero: "
                 f"the loss curve can show nothing smaller.")
    below = f32["reported_floor"] / max(f32["kl_floor"], 1e-300)
    stop = ("the weights no longer change at all" if f32["update_floor"] == 0 else
            f"from then on each step changes the weights by ~{f32['update_floor']:.1g} of their size, "
            f"rounding jitter of a gradient that is itself at float32 precision")
    parts.append(f"Yet the true KL of the float32 weights keeps falling until step {f32['kl_flat_at']}, to "
                 f"{f32['kl_floor']:.2g}, {below:.1e}× below what the loss can show; {stop}.")
    parts.append(f"float64 shows the same two floors lower down: the loss − H resolves down to "
                 f"{f64['reported_floor']:.2g} (flat from step {f64['reported_flat_at']}) and the true KL reaches "
                 f"{f64['kl_floor']:.2g}, "
                 f"{f32['reported_floor'] / max(f64['reported_floor'], 1e-300):.1e}× and "
                 f"{f32['kl_floor'] / max(f64['kl_floor'], 1e-300):.1e}× below float32's.")
    rel = f32["reported_floor"] / r64["entropy"]
    verdict = (f"float32 stalls the *loss value* at {rel:.1g} relative to H, which is what an optimizer that "
               "compares loss values sees, while gradient steps go on to an excess around "
               f"{f32['kl_floor']:.0e}"
               if f32["kl_floor"] < 1e-3 * f32["reported_floor"] else
               f"float32 SGD ends at a true KL of {f32['kl_floor']:.1e}, not far below the float32 loss floor "
               f"{f32['reported_floor']:.1e}: these steps did not get past what the loss value can show")
    tail = (" " + _lbfgs_text(lb)) if lb else ""
    return " ".join(parts) + f" So {verdict}." + tail


CHECKPOINTS = (0, 10, 30, 100, 200, 300, 500, 1000, 1500, 2000, 2500)


def run(quick: bool, device: str, out: Path) -> Result:
    dev = gn.device(device)
    n, steps = (300, 1000) if quick else (2000, 2500)
    x, t = teacher(n)
    runs = {dtype: fit(x, t, dtype, steps, dev) for dtype in ("float32", "float64")}
    fl = {dtype: floors(r) for dtype, r in runs.items()}
    rows = [{"step": i, **{f"{d} {col}": runs[d][key][i] for d in ("float32", "float64")
                           for col, key in (("loss − H", "reported"), ("true KL", "kl"))}}
            for i in CHECKPOINTS if i <= steps]
    findings = {f"{d}_{k}": v for d, f in fl.items() for k, v in f.items()}
    findings.update(entropy=runs["float64"]["entropy"], ulp_H_float32=runs["float32"]["ulp_H"],
                    ulp_H_float64=runs["float64"]["ulp_H"])
    lb = {(label, dtype): lbfgs(x, t, dtype, dev, tg, tc)
          for label, tg, tc in LBFGS_SETTINGS for dtype in ("float32", "float64")}
    findings["lbfgs"] = {f"{label}/{dtype}": v for (label, dtype), v in lb.items()}
    lb_rows = [{"tolerances": label, "dtype": dtype, "iterations": v["iterations"], "evaluations": v["evaluations"],
                "stopped by": v["stop"], "loss − H": v["reported"], "true KL": v["kl"]}
               for (label, dtype), v in lb.items()]
    return Result(NAME, QUESTION, columns=list(rows[0]), rows=rows, conclusion=_conclusion(runs, fl, n, lb),
                  data={"curves": {d: {"reported": r["reported"], "kl": r["kl"], "moved": r["moved"]}
                                   for d, r in runs.items()},
                        "floors": fl, "n": n, "steps": steps, "lr": LR, "momentum": MOMENTUM,
                        "tables": [{"title": "L-BFGS (strong Wolfe, history 10, lr 1) from zero weights, one "
                                             f"step(closure) of at most {LBFGS_MAX_ITER} iterations",
                                    "columns": list(lb_rows[0]), "rows": lb_rows}]},
                  findings=findings, figures=_plot(runs, out))
