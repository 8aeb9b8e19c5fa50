"""Momentum's initial velocity: why starting it at ones wrecks training and zeros does not.

SGD with momentum m (PyTorch's rule, dampening 0) keeps a velocity v per weight:

    v_t = m·v_{t−1} + g_t,        w_t = w_{t−1} − lr·v_t

Unrolled, v_t = m^t·v_0 + Σ_{s≤t} m^{t−s}·g_s: the update is *linear* in (v_0, g), so the
initial velocity adds a fixed drift on top of whatever the gradients do. After T steps

    drift_T = −lr·v_0·Σ_{t=1}^{T} m^t = −lr·v_0·m·(1 − m^T)/(1 − m)  →  −lr·v_0·m/(1 − m)

Note the sum starts at t = 1: v_0 is multiplied by m before its first use, so the total is
m/(1 − m), not 1/(1 − m) (that would count v_0 itself as a step, as in the rule
w ← w − lr·v; v ← m·v + g). With m = 0.5, m/(1 − m) = 1: every weight moves by exactly
lr·v_0 in the first few steps, in the same direction, whatever the data says.

v_0 = 0 adds nothing: it is the only start that makes the first step a plain gradient step.
v_0 = 1 pushes *every* weight by the same amount, −lr here. Every hidden unit of the first
layer then gets −lr·Σ_i x_i ≈ −10 added to its input (an MNIST image sums to ≈ 100 in
[0, 1] pixels), which is far below the spread of W·x: the ReLUs go dead for every image, no
gradient flows through them, and the drift is never undone. In the question's code the rule
is v ← m·v − lr·g; w ← w + v, so its velocity is −lr times ours and is in weight units:
its ones is v_0 = −1/lr here, a push of m/(1 − m) = +1 on every weight, twenty times the
spread of a He-initialised 784-input layer. A small random v_0 (std 0.01) only adds a small
random perturbation, like a slightly different init.

The experiment measures the drift exactly (the gradients held at zero, so the weights move
by the v_0 term alone, in float64) against the formula, and then trains the same MLP on
MNIST from the same init with each v_0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gpunet as gn
from .base import Result, save_figure, try_plot

NAME = "momentum-velocity-init"
SEED = 0   # every random draw here (initial weights, batch order) is seeded with it
QUESTION = "Should momentum's velocity start at zeros, ones or random values?"

M, LR, BATCH = 0.5, 0.1, 100
# The question's rule is v ← m·v − lr·g; w ← w + v, so its v is −lr times ours: its ones is −1/lr here.
THREAD = "question's ones (−1/lr)"
DRIFT_STEPS = 60


def _v0s():
    """label -> velocity_init (SGD accepts "zeros", "ones" or a callable param -> array)."""
    def full(value):
        return lambda p: gn.backend.xp_of(p.data).full(p.data.shape, value, dtype=p.data.dtype)

    def small(p):  # seeded by the shape, so every call for one parameter gives the same v_0
        return np.random.Generator(np.random.PCG64([1, *p.data.shape])).normal(0.0, 0.01, p.data.shape)
    return {"zeros": "zeros", "ones": "ones", THREAD: full(-1.0 / LR), "normal(0, 0.01)": small}


def _mlp(dtype="float32"):
    gn.manual_seed(SEED)
    return gn.models.mlp([784, 128, 10], activation="relu", init="he_normal").to(dtype=dtype)


def drift(velocity_init, steps=DRIFT_STEPS) -> dict:
    """Run `steps` SGD steps with every gradient zero (float64); compare w_T − w_0 with the formula."""
    model = _mlp("float64")
    params = model.parameters()
    w0 = [p.data.copy() for p in params]
    opt = gn.optim.SGD(params, lr=LR, momentum=M, velocity_init=velocity_init)
    v0 = [_initial(velocity_init, p) for p in params]
    first = []              # the drift of one weight, step by step
    for _ in range(steps):
        opt.step()          # grads are zero: the weights move by the v_0 term alone
        first.append(float(params[0].data.ravel()[0] - w0[0].ravel()[0]))  # sync
    geometric = M * (1 - M ** steps) / (1 - M)
    measured = np.concatenate([(gn.backend.to_numpy(p.data) - gn.backend.to_numpy(w)).ravel()
                               for p, w in zip(params, w0)])
    formula = np.concatenate([(-LR * v * geometric).ravel() for v in v0])
    scale = np.abs(formula).max()
    return {"mean_abs_drift": float(np.abs(measured).mean()), "formula_mean_abs": float(np.abs(formula).mean()),
            "max_rel_err": float(np.abs(measured - formula).max() / scale) if scale else
            float(np.abs(measured).max()), "geometric_sum": geometric, "trajectory": first,
            "v0_first": float(v0[0].ravel()[0])}


def _initial(velocity_init, p) -> np.ndarray:
    """v_0 for parameter p as SGD builds it, on the host."""
    if velocity_init == "zeros":
        return np.zeros(p.shape)
    if velocity_init == "ones":
        return np.ones(p.shape)
    return gn.backend.to_numpy(velocity_init(p)).astype(np.float64)


def _dead_units(model, x) -> float:
    """Share of hidden ReLU units that output 0 for every probe image."""
    h = gn.backend.to_numpy(model[:3](x))       # Flatten, Linear, ReLU
    return float((h.max(axis=0) <= 0).mean())


def _train(velocity_init, train, test, epochs, dev) -> dict:
    """Train the MLP from the same init with this v_0; returns accuracy, loss and the weights."""
    model = _mlp()
    opt = gn.optim.SGD(model.parameters(), lr=LR, momentum=M, velocity_init=velocity_init)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device=dev, seed=SEED)
    try:
        history = trainer.fit(train, epochs=epochs, batch_size=BATCH)
        ev = trainer.evaluate(test)
        first_loss = history.epochs[0]["loss"]
    except gn.NonFiniteError:
        ev, first_loss = {"accuracy": float("nan"), "loss": float("nan")}, float("nan")
    weights = np.concatenate([gn.backend.to_numpy(p.data).ravel() for p in model.parameters()])
    probe, _ = next(iter(gn.data.DataLoader(test, 1000, shuffle=False, device=dev)))
    return {"accuracy": ev["accuracy"], "test_loss": ev["loss"], "first_epoch_loss": first_loss,
            "weights": weights, "dead": _dead_units(model, probe)}


def _plot(drifts, out: Path) -> list:
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    t = np.arange(1, 16)
    for label, d in drifts.items():
        if d["v0_first"] == 0.0:
            continue
        ax.plot(t, d["trajectory"][:15], "o", label=f"measured, v0 = {label}")
        ax.plot(t, -LR * d["v0_first"] * M * (1 - M ** t) / (1 - M), "-", c="gray", lw=0.8)
    ax.set_xlabel("step t (all gradients zero)")
    ax.set_ylabel("w_t − w_0 of one weight")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend(title="gray: −lr·v0·m(1−m^t)/(1−m)")
    return save_figure(fig, out, "drift.png", dpi=120)


def _conclusion(rows, drifts) -> str:
    by = {r["v0"]: r for r in rows}
    worst = max(d["max_rel_err"] for d in drifts.values())
    ones, thread = drifts["ones"], drifts[THREAD]
    agree = (f"measured and formula agree to {worst:.1e} relative for every v0" if worst < 1e-9 else
             f"measured and formula differ by up to {worst:.1e} relative")
    geo = ones["geometric_sum"]
    which = ("= m/(1−m)" if abs(geo - M / (1 - M)) < 1e-6 * M / (1 - M) else f"≠ m/(1−m) = {M / (1 - M):.6f}")
    parts = [f"With every gradient held at zero, the weights drift by −lr·v0·m(1−m^T)/(1−m): "
             f"{agree} (T = {DRIFT_STEPS}). The geometric factor is Σ_(t≥1) m^t = {geo:.6f} {which}, "
             f"not 1/(1−m) = {1 / (1 - M):g}."]
    parts.append(f"So v0 = ones moves every weight by {-ones['mean_abs_drift']:+.4g} (lr = {LR}), and the "
                 f"question's ones (v0 = −1/lr here) by {thread['mean_abs_drift']:+.4g}, "
                 f"about {thread['mean_abs_drift'] / HE_STD:.0f}× the He init's std of {HE_STD:.3f} "
                 f"for the first layer.")
    z = by["zeros"]
    accs = "; ".join(f"{k}: {r['test acc']:.2%}" if np.isfinite(r["test acc"]) else f"{k}: diverged"
                     for k, r in by.items())
    parts.append(f"Trained on MNIST from the same init, test accuracy is {accs}.")
    for k, r in by.items():
        if k == "zeros":
            continue
        if not np.isfinite(r["test acc"]):
            parts.append(f"v0 = {k} makes training diverge.")
            continue
        drop, pushed = z["test acc"] - r["test acc"], r["drift formula (limit)"]
        state = (f"{r['dead ReLUs']:.0%} of the hidden ReLUs are dead (vs {z['dead ReLUs']:.0%} for zeros)"
                 if r["dead ReLUs"] > z["dead ReLUs"] + 0.05 else
                 f"{r['dead ReLUs']:.0%} of the hidden ReLUs are dead, as many as for zeros")
        if abs(drop) >= 0.01:
            parts.append(f"v0 = {k} costs {drop:.2%}: {state}, and after training the weights still sit "
                         f"{r['mean Δw vs zeros run']:+.3g} on average from the zeros run's"
                         + (f" (pushed {pushed:+.3g})." if pushed else "."))
        else:
            parts.append(f"v0 = {k} changes accuracy by only {-drop:+.2%} ({state}; mean weight offset "
                         f"{r['mean Δw vs zeros run']:+.3g}).")
    return " ".join(parts)


HE_STD = float(np.sqrt(2 / 784))


def run(quick: bool, device: str, out: Path) -> Result:
    dev = gn.device(device)
    train, test = gn.data.load("mnist", "train"), gn.data.load("mnist", "test")
    epochs = 1 if quick else 2
    if quick:
        train, test = train.subset(np.arange(5000)), test.subset(np.arange(2000))
    drifts, trained = {}, {}
    for label, v0 in _v0s().items():
        drifts[label] = drift(v0)
        trained[label] = _train(v0, train, test, epochs, dev)
    base = trained["zeros"]["weights"]
    rows = []
    for label in drifts:
        d, t = drifts[label], trained[label]
        constant = label in ("ones", THREAD)   # the same v_0 for every weight
        limit = -LR * M / (1 - M) * d["v0_first"] if constant else 0.0
        rows.append({"v0": label, "mean |drift|": d["mean_abs_drift"], "formula": d["formula_mean_abs"],
                     "max rel err": d["max_rel_err"], "drift formula (limit)": limit,
                     "mean Δw vs zeros run": float((t["weights"] - base).mean()),
                     "dead ReLUs": t["dead"],
                     "test loss": t["test_loss"], "test acc": t["accuracy"]})
    findings = {"max_rel_err": max(d["max_rel_err"] for d in drifts.values()),
                "geometric_sum": drifts["ones"]["geometric_sum"], "m_over_1_minus_m": M / (1 - M),
                "drift_ones": drifts["ones"]["mean_abs_drift"], "drift_thread": drifts[THREAD]["mean_abs_drift"],
                "accuracy": {r["v0"]: r["test acc"] for r in rows}, "lr": LR, "momentum": M}
    return Result(NAME, QUESTION, columns=list(rows[0]), rows=rows, conclusion=_conclusion(rows, drifts),
                  data={"drift": {k: {kk: vv for kk, vv in d.items()} for k, d in drifts.items()},
                        "epochs": epochs, "batch_size": BATCH, "drift_steps": DRIFT_STEPS},
                  findings=findings, figures=_plot(drifts, out))
