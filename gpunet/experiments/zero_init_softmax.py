"""Zero init in softmax regression: why the TensorFlow MNIST beginner model still reaches ~92%.

The model is logits = x @ W.T + b with W (10, 784) and b (10,) all zero, trained by plain
SGD (lr 0.5, batch 100, 1000 steps) on the mean softmax cross-entropy, exactly as in
TensorFlow's `mnist_softmax.py`.

The worry in the question is symmetry: if every weight starts equal, every class gets the
same gradient and the ten weight vectors stay identical forever. That argument is true for
the *hidden* units of a multi-layer net (they all compute the same function and receive the
same error signal), but softmax regression has no hidden units. Row c of W is the weight
vector of class c, and its gradient on a batch of N images is

    dW_c = (1/N) Σ_n (p_nc − y_nc) · x_n,       db_c = (1/N) Σ_n (p_nc − y_nc)

where y_nc is 1 when image n is of class c. At zero init every logit is 0, so p_nc = 1/10
for every image and class, and

    dW_c = 0.1 · mean_n(x_n) − (1/N) Σ_{n: label c} x_n

The first term is the same for every class; the second is the (scaled) sum of the images
*labelled c*. It differs between classes because the labels differ, so after one step
W_c = −lr · dW_c is already a different vector for every class: roughly the average image
of class c minus a tenth of the average image. The symmetry is broken by the targets, not
by the initial weights. (The biases can tie after step one: b_c = −lr·(0.1 − N_c/N) is equal
for two classes that happen to have the same count N_c in the first batch, but their weight
rows still differ.)

The loss is convex in (W, b), so any starting point, zero included, converges to the same
optimum region; a small random init gives the same ~92% test accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gpunet as gn
from .base import Result, save_figure, style, try_plot

NAME = "zero-init-softmax"
SEED = 0   # every random draw here (initial weights, batch order) is seeded with it
QUESTION = "How does softmax regression reach ~92% on MNIST when W and b start at zero?"

LR, BATCH = 0.5, 100


def _first_step(model, x, y, xp):
    """One SGD step from the model's current weights; returns (W after the step, the formula's W)."""
    loss_fn = gn.losses.SoftmaxCrossEntropy()
    opt = gn.optim.SGD(model.parameters(), lr=LR)
    loss_fn.forward(model(x), y)
    model.backward(loss_fn.backward())
    opt.step()
    opt.zero_grad()
    # The closed form at zero init: p = 1/10 everywhere, so dW_c = 0.1·mean(x) − (1/N)·Σ_{y=c} x.
    flat = x.reshape(len(x), -1)
    onehot = gn.data.one_hot(y, 10, dtype=flat.dtype)
    dW = (0.1 * flat.sum(axis=0)[None, :] - onehot.T @ flat) / len(x)
    return model[1].weight.data, -LR * dW


def _symmetry_report(W, W_formula, b) -> dict:
    """Distinct rows, pairwise distances and the formula's error, on the host."""
    W, W_formula, b = (gn.backend.to_numpy(a).astype(np.float64) for a in (W, W_formula, b))
    diff = W[:, None, :] - W[None, :, :]
    dist = np.sqrt((diff ** 2).sum(-1))[np.triu_indices(len(W), k=1)]
    return {
        "distinct_rows": int(len(np.unique(W, axis=0))),
        "distinct_biases": int(len(np.unique(b))),
        "min_pair_dist": float(dist.min()), "max_pair_dist": float(dist.max()),
        "mean_row_norm": float(np.linalg.norm(W, axis=1).mean()),
        "formula_max_err": float(np.abs(W - W_formula).max()),
    }


def _train(init, train, test, steps, dev, eval_every):
    """SGD for `steps` steps from `init`; returns (step-1 report, accuracy curve, final accuracy)."""
    gn.manual_seed(SEED)
    model = gn.models.softmax_regression(784, 10, init=init).to(dev)
    loss_fn = gn.losses.SoftmaxCrossEntropy()
    opt = gn.optim.SGD(model.parameters(), lr=LR)
    trainer = gn.Trainer(model, loss_fn, opt, device=dev)
    loader = gn.data.DataLoader(train, BATCH, device=dev, seed=SEED)
    curve, report, step = [], None, 0
    while step < steps:
        for x, y in loader:
            if step == 0:
                W, W_formula = _first_step(model, x, y, dev.xp)
                report = _symmetry_report(W, W_formula, model[1].bias.data)
            else:
                logits = model(x)
                loss_fn.forward(logits, y)
                model.backward(loss_fn.backward())
                opt.step()
                opt.zero_grad()
            step += 1
            if step % eval_every == 0 or step == steps:
                curve.append((step, trainer.evaluate(test)["accuracy"]))
            if step == steps:
                break
    return report, curve, curve[-1][1]


def _plot(curves, out: Path) -> list:
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, curve) in enumerate(curves.items()):
        steps, acc = zip(*curve)
        ax.plot(steps, acc, label=label, marker="o" if i == 0 else "x", ms=4, **style(i))
    ax.set_xlabel("SGD step (batch 100, lr 0.5)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.8, 0.95)
    ax.legend()
    ax.set_title("Softmax regression on MNIST: zero vs random init")
    return save_figure(fig, out, "accuracy.png", dpi=120)


def _conclusion(reports, accs, steps, n_test) -> str:
    z = reports["zeros"]
    exact = z["formula_max_err"] < 1e-4
    formula = (f"they equal −lr·(0.1·mean(x) − Σ_(y=c) x / N) to within {z['formula_max_err']:.2g}"
               if exact else f"they differ from −lr·(0.1·mean(x) − Σ_(y=c) x / N) by up to "
                             f"{z['formula_max_err']:.2g}")
    if z["distinct_rows"] == 10:
        sym = (f"After one step from zero the ten weight rows are 10 distinct vectors (closest pair "
               f"{z['min_pair_dist']:.3g} apart, farthest {z['max_pair_dist']:.3g}, mean row norm "
               f"{z['mean_row_norm']:.3g}), and {formula}.")
    else:
        sym = (f"Only {z['distinct_rows']} of the 10 weight rows are distinct after one step (closest pair "
               f"{z['min_pair_dist']:.3g} apart), and {formula}: classes absent from the first batch of "
               f"{BATCH} got the same gradient, 0.1·mean(x).")
    ties = z["distinct_biases"]
    rows_differ = ("yet their weight rows differ" if z["distinct_rows"] == 10 else
                   "and so do the weight rows of the classes the batch lacked")
    bias = (f" The biases are only {ties} distinct values: classes with the same count in the first "
            f"batch share b_c = −lr·(0.1 − N_c/N), {rows_differ}." if ties < 10 else "")
    zero, rand = accs["zeros"], accs[RANDOM]
    gap = zero - rand
    compare = "matches" if abs(gap) < 0.005 else "beats" if gap > 0 else "trails"
    return (f"{sym}{bias} After {steps} steps zero init reaches {zero:.2%} test accuracy on {n_test} "
            f"images, which {compare} a small random init ({rand:.2%}, difference {gap:+.2%}).")


RANDOM = "normal(0, 0.01)"


def run(quick: bool, device: str, out: Path) -> Result:
    dev = gn.device(device)
    train, test = gn.data.load("mnist", "train"), gn.data.load("mnist", "test")
    steps = 200 if quick else 1000
    if quick:
        test = test.subset(np.arange(2000))
    rows, curves, reports, accs = [], {}, {}, {}
    for label, init in (("zeros", "zeros"), (RANDOM, gn.nn.init.normal(std=0.01))):
        report, curve, acc = _train(init, train, test, steps, dev, eval_every=max(steps // 20, 1))
        curves[label], reports[label], accs[label] = curve, report, acc
        rows.append({"init": label, "distinct W rows (step 1)": report["distinct_rows"],
                     "distinct biases (step 1)": report["distinct_biases"],
                     "min ‖Wi−Wj‖ (step 1)": report["min_pair_dist"],
                     "max ‖Wi−Wj‖ (step 1)": report["max_pair_dist"],
                     "max |W − formula| (step 1)": report["formula_max_err"] if label == "zeros" else "n/a",
                     "test acc": acc})
    z = reports["zeros"]
    findings = {"distinct_rows_after_step1": z["distinct_rows"],
                "distinct_biases_after_step1": z["distinct_biases"],
                "min_pair_dist_after_step1": z["min_pair_dist"],
                "formula_max_err": z["formula_max_err"],
                "zero_init_accuracy": accs["zeros"], "random_init_accuracy": accs[RANDOM], "steps": steps}
    return Result(NAME, QUESTION, columns=list(rows[0]), rows=rows,
                  conclusion=_conclusion(reports, accs, steps, len(test)),
                  data={"accuracy_curves": {k: [list(p) for p in v] for k, v in curves.items()},
                        "step1": reports, "lr": LR, "batch_size": BATCH},
                  findings=findings, figures=_plot(curves, out))
