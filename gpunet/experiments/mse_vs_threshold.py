"""A single unit on five points: why does MSE lose to a hand threshold, and does a sigmoid fix it?

The data are X = [0, 0, 2, 2, 9], Y = [0, 0, 1, 1, 0]: class 1 sits in the middle and the
point x = 9 is an outlier of class 0. A unit classifies x as 1 when its output exceeds 0.5.
No monotone rule gets all five right, so 4/5 is the best any single unit can do, and the
hand threshold x > 1 gets it.

**Linear unit + MSE (3/5).** Least squares has a closed form: with x̄ = 2.6, ȳ = 0.4,
S_xy = Σ(x−x̄)(y−ȳ) = −1.2 and S_xx = Σ(x−x̄)² = 55.2,

    w = S_xy / S_xx = −1/46 ≈ −0.0217,     b = ȳ − w·x̄ = 21/46 ≈ 0.4565.

The slope is *negative*: the squared error of x = 9 grows quadratically with its output,
so the line tilts down to meet it. Every output is below 0.5, every point is called 0,
and only the three class-0 points are right.

**Sigmoid unit + MSE (4/5, or 3/5).** The sigmoid bounds each point's error by 1, so the
outlier can cost at most 1/5 of the loss. The infimum of the loss is exactly 1/5: a step
at x ∈ (0, 2) (w → ∞) gets four points exactly and pays 1 for x = 9. Gradient descent
from the thread's initial values (w, b) = (0.756, −0.975) drifts along that valley
(w keeps growing, the loss creeps towards 0.2) and gives 4/5. But the loss is not
convex: it also has a genuine local minimum near (w, b) = (−0.070, −0.210), loss 0.2360,
where all outputs are below 0.5 (3/5). From w = b = 0 gradient descent ends there. So
"add a sigmoid" is not what fixes the classifier; the starting point decides it.

**Sigmoid unit + cross-entropy (3/5).** Logistic regression is convex and has a finite
optimum here (the data are not separable). Its stationarity conditions are
Σ(p_i − y_i) = 0 and Σ x_i (p_i − y_i) = 0, i.e. Σp = 2 and Σ x·p = 4. With w = 0
(p = 0.4) Σ x·p would be 5.2 > 4, so the optimum has w < 0: like least squares, the
log-loss of the outlier grows without bound (linearly in its logit), so it tilts the
unit down again, and the maximum-likelihood fit calls every point 0 (3/5). Cross-entropy
is a proper scoring rule for probabilities, not a proxy for accuracy: what gave 4/5 in
the thread is MSE's *bounded* per-point loss under a sigmoid, which ignores the outlier.

The experiment trains each unit with gpunet (float64, full batch, SGD lr = 0.01,
10 000 steps as in the thread), checks the linear fit against the closed form and the
cross-entropy fit against a Newton solve of the likelihood, reproduces the thread's
printed sigmoid-MSE trajectory end point, and trains a grid of initial (w, b) at once
(K independent units in one Linear(1, K)) to measure how often each loss reaches 4/5.
"""
from __future__ import annotations

import numpy as np

import gpunet as gn

from .base import Result, save_figure, try_plot

NAME = "mse-vs-threshold"
QUESTION = ("On X=[0,0,2,2,9], Y=[0,0,1,1,0], why does a unit trained with MSE score 3/5 while "
            "the threshold x>1 scores 4/5, and do a sigmoid or cross-entropy fix it?")

X = np.array([0.0, 0.0, 2.0, 2.0, 9.0])
Y = np.array([0.0, 0.0, 1.0, 1.0, 0.0])
LR, STEPS = 0.01, 10000
THREAD_INIT = (0.75648874, -0.9745011329650879)      # the thread's printed (W, b) at epoch 0
THREAD_END = (2.42539024, -2.1028473377227783, 0.20618653297424316)  # (W, b, cost) at 9999
HEADS = ("linear+MSE", "sigmoid+MSE", "sigmoid+CE")


# ---------------------------------------------------------------- references (closed form)

def least_squares():
    """The analytic least-squares line y = w·x + b."""
    sxy = ((X - X.mean()) * (Y - Y.mean())).sum()
    sxx = ((X - X.mean()) ** 2).sum()
    w = sxy / sxx
    return w, Y.mean() - w * X.mean()


def logistic_mle(iters=50):
    """Maximum-likelihood logistic regression by Newton's method (float64)."""
    a = np.stack([X, np.ones_like(X)], axis=1)
    theta = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-a @ theta))
        hess = a.T @ (a * (p * (1 - p))[:, None])
        theta -= np.linalg.solve(hess, a.T @ (p - Y))
    return theta[0], theta[1]


def best_monotone_rule():
    """The most points any rule `x > t` or `x < t` gets right (exhaustive over t)."""
    cuts = np.concatenate([[-1.0], (np.unique(X)[:-1] + np.unique(X)[1:]) / 2, [X.max() + 1]])
    return int(max(max(((X > t) == Y).sum(), ((X < t) == Y).sum()) for t in cuts))


# ---------------------------------------------------------------- training with gpunet

def train_units(head, w0, b0, dev, steps=STEPS, lr=LR):
    """Train K independent units y_k = f(w_k·x + b_k) at once, one per (w0[k], b0[k]).

    Each unit's loss is the mean over the five points, as in the thread; with
    reduction="none" and backward(grad=1/5) every unit gets exactly its own gradient.
    Returns {"w", "b", "loss", "correct", "grad_norm"}: one NumPy entry per unit.
    """
    w0, b0 = np.asarray(w0, float), np.asarray(b0, float)
    k = len(w0)
    layers = [gn.nn.Linear(1, k, init=lambda s, xp, rng: w0.reshape(s),
                           bias_init=lambda s, xp, rng: b0.reshape(s))]
    if head == "sigmoid+MSE":
        layers.append(gn.nn.Sigmoid())
    model = gn.nn.Sequential(*layers).to(dev, dtype="float64")
    loss_fn = gn.losses.BCEWithLogits(reduction="none") if head == "sigmoid+CE" \
        else gn.losses.MSE(reduction="none")
    opt = gn.optim.SGD(model.parameters(), lr=lr)
    x = dev.asarray(X.reshape(5, 1))
    y = dev.asarray(np.repeat(Y.reshape(5, 1), k, axis=1))
    for _ in range(steps):
        out = model(x)
        loss_fn.forward(out, y)
        model.backward(loss_fn.backward(1.0 / len(X)))
        opt.step()
        opt.zero_grad()
    out = model(x)
    loss = gn.backend.to_numpy(loss_fn.forward(out, y)).mean(axis=0)
    model.backward(loss_fn.backward(1.0 / len(X)))  # the gradient where training stopped
    cut = 0.0 if head == "sigmoid+CE" else 0.5  # logit 0 <=> probability 0.5
    correct = ((gn.backend.to_numpy(out) > cut) == Y[:, None]).sum(axis=0)
    lin = model[0]
    gw, gb = gn.backend.to_numpy(lin.weight.grad)[:, 0], gn.backend.to_numpy(lin.bias.grad)
    return {"w": gn.backend.to_numpy(lin.weight.data)[:, 0], "b": gn.backend.to_numpy(lin.bias.data),
            "loss": loss, "correct": correct, "grad_norm": np.hypot(gw, gb)}


def init_grid(quick):
    g = np.linspace(-3.0, 3.0, 13 if quick else 41)
    wg, bg = np.meshgrid(g, g)
    return g, wg.ravel(), bg.ravel()


def run_heads(dev, quick):
    """Per head: the thread's init and zero init, then a grid of inits, in one training run."""
    grid, wg, bg = init_grid(quick)
    w0 = np.concatenate([[THREAD_INIT[0], 0.0], wg])
    b0 = np.concatenate([[THREAD_INIT[1], 0.0], bg])
    return grid, {head: train_units(head, w0, b0, dev) for head in HEADS}


# ---------------------------------------------------------------- report

def unit_row(head, init, fit, i, reference, grid_share):
    return {"model": head, "init": init, "w": float(fit["w"][i]), "b": float(fit["b"][i]),
            "loss": float(fit["loss"][i]), "|grad|": float(fit["grad_norm"][i]),
            "correct": f"{int(fit['correct'][i])}/5", "reference (w, b)": reference,
            "4/5 from grid": f"{grid_share:.0%}"}


def table(fits, refs):
    (lw, lb), (cw, cb) = refs["least_squares"], refs["logistic_mle"]
    tw, tb, tl = THREAD_END
    ref = {"linear+MSE": f"closed form ({lw:.5f}, {lb:.5f})",
           "sigmoid+MSE": f"thread ({tw:.5f}, {tb:.5f}), loss {tl:.5f}",
           "sigmoid+CE": f"Newton MLE ({cw:.5f}, {cb:.5f})"}
    rows = []
    for head in HEADS:
        fit, share = fits[head], refs["grid_share"][head]
        rows.append(unit_row(head, "thread", fit, 0, ref[head], share))
        rows.append(unit_row(head, "zeros", fit, 1, ref[head] if head != "sigmoid+MSE" else "", share))
    thr = int(((X > 1.0) == Y).sum())
    rows.append({"model": "hand threshold x > 1", "correct": f"{thr}/5", "reference (w, b)": "no training"})
    rows.append({"model": "best rule x > t or x < t", "correct": f"{refs['best_rule']}/5",
                 "reference (w, b)": "exhaustive over t"})
    return rows, thr


def _slope_without(i):
    """The least-squares slope with point i left out."""
    keep = np.arange(len(X)) != i
    x, y = X[keep], Y[keep]
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def conclude(fits, refs, thr):
    lin, sm, ce = (fits[h] for h in HEADS)
    (lw, lb), (cw, cb) = refs["least_squares"], refs["logistic_mle"]
    share = refs["grid_share"]
    top = max(lw * X + lb)
    without = [_slope_without(i) for i in range(len(X))]
    worst = int(np.argmax([abs(w - lw) for w in without]))
    w_without = without[worst]
    sign = "negative" if lw < 0 else "positive"
    flips = (lw < 0) != (w_without < 0)
    lever = (f"the point that moves it most is x={X[worst]:g}, y={Y[worst]:g}: without it the slope would be "
             f"{w_without:+.4f}, so that one point "
             + (f"turns the slope {sign}" if flips else "does not flip its sign"))
    lin_txt = (f"The linear unit trained with MSE reaches w={lin['w'][0]:.5f}, b={lin['b'][0]:.5f} "
               f"(closed form {lw:.5f}, {lb:.5f}) and gets {lin['correct'][0]}/5: its slope is {sign}, its largest "
               f"output {top:.3f} is {'below' if top < 0.5 else 'above'} 0.5, and {lever}.")
    if sm["correct"][0] > sm["correct"][1]:
        sm_txt = (f"The sigmoid unit with MSE gets {sm['correct'][0]}/5 from the thread's start "
                  f"(loss {sm['loss'][0]:.5f}, w={sm['w'][0]:.3f}), "
                  f"but only {sm['correct'][1]}/5 from zeros, where it stops at a point with "
                  f"loss {sm['loss'][1]:.5f} and |grad| {sm['grad_norm'][1]:.1e}; "
                  f"{share['sigmoid+MSE']:.0%} of a grid of starts in [-3, 3]² reach 4/5.")
    else:
        sm_txt = (f"The sigmoid unit with MSE gets {sm['correct'][0]}/5 from the thread's start and "
                  f"{sm['correct'][1]}/5 from zeros; {share['sigmoid+MSE']:.0%} of grid starts reach 4/5.")
    spread = refs["ce_grid_spread"]
    where = (f"and every grid start ends within {spread:.1e} of it" if spread < 1e-3 else
             f"(grid starts end up to {spread:.2g} away from it after {STEPS} steps)")
    ce_txt = (f"Sigmoid with cross-entropy converges to the likelihood optimum (w={ce['w'][0]:.5f}, "
              f"b={ce['b'][0]:.5f}; Newton {cw:.5f}, {cb:.5f}) {where}; "
              f"{share['sigmoid+CE']:.0%} of grid starts reach 4/5, and it gets "
              f"{ce['correct'][0]}/5 with a {'negative' if cw < 0 else 'positive'} slope, "
              f"{'like' if ce['correct'][0] == lin['correct'][0] else 'unlike'} least squares.")
    if sm["correct"][0] > max(lin["correct"][0], ce["correct"][0]) and sm["correct"][1] < sm["correct"][0]:
        verdict = ("So the thread's 4/5 needs both MSE under a sigmoid and the thread's start: from zeros the same "
                   "unit gets fewer, and the unbounded losses get fewer from any start")
    elif sm["correct"][0] > max(lin["correct"][0], ce["correct"][0]):
        verdict = "So sigmoid + MSE does best here from either start"
    else:
        verdict = (f"So on these points sigmoid + MSE ({sm['correct'][0]}/5) does no better than least squares "
                   f"({lin['correct'][0]}/5) or cross-entropy ({ce['correct'][0]}/5)")
    return (f"{lin_txt} {sm_txt} {ce_txt} The hand threshold x>1 gets {thr}/5, and no monotone rule "
            f"gets more than {refs['best_rule']}/5. {verdict}.")


def plot(fits, grid, out):
    plt = try_plot()
    if plt is None:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    xs = np.linspace(-0.5, 10, 300)
    for head, fit in fits.items():
        for i, style in ((0, "-"), (1, ":")):
            z = fit["w"][i] * xs + fit["b"][i]
            ys = z if head == "linear+MSE" else 1 / (1 + np.exp(-z))
            ax.plot(xs, ys, style, label=f"{head} ({'thread init' if i == 0 else 'zero init'})")
    ax.scatter(X, Y, color="k", zorder=3)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.axvline(1.0, color="grey", lw=0.5, ls="--")
    ax.set(xlabel="x", ylabel="output", title="fitted units (dashed: threshold x > 1)")
    ax.legend(fontsize=7)
    n = len(grid)
    img = bx.imshow(fits["sigmoid+MSE"]["correct"][2:].reshape(n, n), origin="lower",
                    extent=[grid[0], grid[-1], grid[0], grid[-1]], vmin=3, vmax=4, cmap="RdYlGn")
    fig.colorbar(img, ax=bx, label="points correct after training")
    bx.set(xlabel="initial w", ylabel="initial b", title="sigmoid + MSE: where each start ends")
    return save_figure(fig, out, "mse_vs_threshold.png", dpi=110)


def run(quick: bool, device: str, out) -> Result:
    dev = gn.device(device)
    grid, fits = run_heads(dev, quick)
    refs = {"least_squares": least_squares(), "logistic_mle": logistic_mle(),
            "best_rule": best_monotone_rule(),
            "grid_share": {h: float((f["correct"][2:] == 4).mean()) for h, f in fits.items()}}
    ce, (cw, cb) = fits["sigmoid+CE"], refs["logistic_mle"]
    refs["ce_grid_spread"] = float(np.max(np.hypot(ce["w"] - cw, ce["b"] - cb)))
    rows, thr = table(fits, refs)
    lin, sm, ce = (fits[h] for h in HEADS)
    findings = {
        "linear_mse_correct": int(lin["correct"][0]), "linear_mse_zero_init_correct": int(lin["correct"][1]),
        "sigmoid_mse_correct": int(sm["correct"][0]), "sigmoid_mse_zero_init_correct": int(sm["correct"][1]),
        "sigmoid_ce_correct": int(ce["correct"][0]), "sigmoid_ce_zero_init_correct": int(ce["correct"][1]),
        "threshold_correct": thr, "best_rule_correct": refs["best_rule"],
        "linear_vs_closed_form": float(max(abs(lin["w"][0] - refs["least_squares"][0]),
                                           abs(lin["b"][0] - refs["least_squares"][1]))),
        "ce_vs_newton": float(max(abs(ce["w"][0] - refs["logistic_mle"][0]),
                                  abs(ce["b"][0] - refs["logistic_mle"][1]))),
        "sigmoid_mse_vs_thread": float(max(abs(sm["w"][0] - THREAD_END[0]), abs(sm["b"][0] - THREAD_END[1]))),
        "sigmoid_mse_zero_init_grad_norm": float(sm["grad_norm"][1]),
        "ce_grid_spread": refs["ce_grid_spread"],
        "grid_share_4_of_5": refs["grid_share"],
    }
    return Result(NAME, QUESTION,
                  columns=["model", "init", "w", "b", "loss", "|grad|", "correct", "reference (w, b)",
                           "4/5 from grid"],
                  rows=rows, conclusion=conclude(fits, refs, thr),
                  data={"x": X.tolist(), "y": Y.tolist(), "lr": LR, "steps": STEPS,
                        "grid": grid.tolist(),
                        "grid_correct": {h: f["correct"][2:].tolist() for h, f in fits.items()}},
                  findings=findings, figures=plot(fits, grid, out))
