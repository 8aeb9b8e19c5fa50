"""Zero init in a deep net: why the loss starts at 6.93 and stalls at 3.24.

The net of the question: leaky-ReLU hidden layers, 10 sigmoid outputs, and binary
cross-entropy summed over the 10 outputs and averaged over the batch,

    L = (1/N) Σ_n Σ_c −[y_nc·log σ(z_nc) + (1 − y_nc)·log(1 − σ(z_nc))]

which is `BCEWithLogits(reduction="sum")` divided by N (its `backward(1/N)` gives the
matching gradient; reduction="mean" would also divide by the 10 outputs).

**Start.** With every weight and bias zero, every hidden activation is lrelu(0) = 0 and
every logit is 0, so σ = 1/2 and L = 10·ln 2 = 6.931 for every batch, whatever the data.

**No hidden gradient, ever.** Backward through Linear gives dW = dzᵀ·a_prev and
dx = dz·W. The output layer's dW multiplies by the (zero) hidden activations, and the
error sent back to the hidden layers multiplies by the (zero) output weights, so every
weight gradient and every hidden bias gradient is exactly 0. They stay 0 at the next
step because nothing moved. Only the 10 output biases get a gradient, db_c = mean(σ(b_c) − y_c).

**The plateau.** With logits equal to the biases, the net predicts the same σ(b_c) for
every image and the best it can do is σ(b_c) = π_c, the class prior. The loss then equals
the sum of the binary entropies of the priors,

    L* = Σ_c H(π_c),   H(π) = −π·log π − (1 − π)·log(1 − π)

which is 10·H(0.1) = 3.2508 for balanced classes and 3.2492 with MNIST's training priors:
the "3.24" of the question. Changing the learning rate, the width, the depth or the hidden
activation cannot move it: none of them reaches a gradient that is not zero. Every image
gets the same prediction: the class whose output bias is largest, which is the most
frequent training class, so the accuracy is that class's share of the test set (the
conclusion names the class the run predicted and its share).

**Constant (non-zero) init** breaks the zeros but not the symmetry: all units of a layer
compute the same function and get the same gradient, so they stay identical; the net is
effectively one unit wide. **Random (He) init** breaks the symmetry and the same net learns.

**The question's 6.98.** Zero init starts at exactly 10·ln 2 = 6.93 on every batch, so the
question's 6.98 did not come from zeros. A small random init gives logits of small spread
and, for each output, an expected loss of about ln 2 + Var(z)/8: a start a little above
6.93. The experiment runs such an init (normal, std 0.078, whose loss on the training set
before the first step is 6.98) next
to std 0.01: whether a small init stalls depends on how much signal survives the layers,
which the first-layer gradient at step 1 measures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gpunet as gn
from .base import Result, save_figure, style, try_plot

NAME = "zero-init-deep"
SEED = 0   # every random draw here (initial weights, batch order) is seeded with it
QUESTION = "Why does a deep net with zero init start at loss 6.93 and stall at 3.24?"

SIZES = (784, 64, 64, 64, 10)
LR, BATCH = 0.5, 100


def binary_entropy(p):
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def _net(init) -> gn.nn.Sequential:
    """Flatten, then Linear + LeakyReLU per hidden layer; the last Linear gives 10 logits.

    `init(fan_in)` gives each Linear's weight initializer (biases start at zero).
    """
    gn.manual_seed(SEED)
    layers = [gn.nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(gn.nn.Linear(fan_in, fan_out, init=init(fan_in)))
        if i < len(SIZES) - 2:
            layers.append(gn.nn.LeakyReLU())
    return gn.nn.Sequential(*layers)


def _bce(loss_fn, z, y):
    """Summed over the 10 outputs, averaged over the batch (the question's cost)."""
    return loss_fn.forward(z, gn.data.one_hot(y, 10, dtype=z.dtype)) / z.shape[0]


def _train(model, data, steps, dev):
    """SGD; returns the per-step batch losses, the largest |grad| seen per parameter and
    the first layer's largest |dW| at step 1."""
    loss_fn = gn.losses.BCEWithLogits(reduction="sum")
    opt = gn.optim.SGD(model.parameters(), lr=LR)
    loader = gn.data.DataLoader(data, BATCH, device=dev, seed=SEED)
    xp, named = dev.xp, model.named_parameters()
    max_grad = {name: xp.zeros((), dtype=model.dtype) for name, _ in named}
    losses, step = [], 0
    while step < steps:
        for x, y in loader:
            loss = _bce(loss_fn, model(x), y)
            model.backward(loss_fn.backward(1.0 / x.shape[0]))
            for name, p in named:
                max_grad[name] = xp.maximum(max_grad[name], xp.abs(p.grad).max())
            if step == 0:
                first_grad = float(xp.abs(named[0][1].grad).max())  # sync: once
            opt.step()
            opt.zero_grad()
            losses.append(loss)
            step += 1
            if step == steps:
                break
    return [float(v) for v in losses], {k: float(v) for k, v in max_grad.items()}, first_grad  # sync


def _evaluate(model, data, dev):
    """(loss on all of `data`, accuracy) in eval mode."""
    loss_fn = gn.losses.BCEWithLogits(reduction="sum")
    total, correct = 0.0, 0
    model.eval()
    for x, y in gn.data.DataLoader(data, 2000, shuffle=False, device=dev, dtype=model.dtype):
        z = model(x)
        total += float(_bce(loss_fn, z, y)) * x.shape[0]  # sync
        correct += int((z.argmax(axis=1) == y).sum())  # sync
    model.train()
    return total / len(data), correct / len(data)


def _distinct_units(model, rtol=1e-4) -> list:
    """Per hidden layer: how many different units (rows of its weight matrix) it holds.

    Rows within rtol·‖row‖ of an earlier row count as the same unit: BLAS may sum the
    identical units' dot products in different orders, which leaves ulp-level differences.
    """
    weights = [gn.backend.to_numpy(p.data).astype(np.float64) for name, p in model.named_parameters()
               if name.endswith("weight")][:-1]
    counts = []
    for w in weights:
        reps = []
        for row in w:
            if not any(np.abs(row - r).max() <= rtol * max(np.abs(r).max(), 1e-30) for r in reps):
                reps.append(row)
        counts.append(len(reps))
    return counts


def _exact_distinct(model) -> list:
    weights = [gn.backend.to_numpy(p.data) for name, p in model.named_parameters()
               if name.endswith("weight")][:-1]
    return [int(len(np.unique(w, axis=0))) for w in weights]


def _bias_vs_prior(model, data) -> float:
    """max_c |σ(b_c) − π_c|: how close the output biases alone are to the class priors."""
    b = gn.backend.to_numpy(model.parameters()[-1].data).astype(np.float64)
    priors = np.bincount(data.y, minlength=10) / len(data)
    return float(np.abs(1 / (1 + np.exp(-b)) - priors).max())


def escape_step(losses, plateau, margin=0.1, window=20):
    """First step whose `window`-step running mean loss is below plateau − margin, or None."""
    run = np.convolve(losses, np.ones(window) / window, mode="valid")
    below = np.flatnonzero(run < plateau - margin)
    return int(below[0] + window) if len(below) else None


def _run_init(label, init, train, test, steps, dev) -> dict:
    model = _net(init).to(dev)
    initial_train_loss, _ = _evaluate(model, train, dev)
    losses, max_grad, first_grad = _train(model, train, steps, dev)
    final_loss, _ = _evaluate(model, train, dev)
    _, acc = _evaluate(model, test, dev)
    names = [n for n, _ in model.named_parameters()]
    out_bias = names[-1]
    return {"init": label, "losses": losses, "final_loss": final_loss, "accuracy": acc,
            "initial_train_loss": initial_train_loss,
            "max_other_grad": max(v for k, v in max_grad.items() if k != out_bias),
            "first_grad_step1": first_grad, "bias_vs_prior": _bias_vs_prior(model, train),
            "distinct_units": _distinct_units(model), "bitwise_distinct_units": _exact_distinct(model)}


# The question's loss starts at 6.98, not 10·ln 2 = 6.93: zero init cannot give that start,
# a small random init can. std 0.078 (seed 0) is the small normal init whose loss on the
# training set before any step is 6.98 here.
QUESTION_INIT = "normal(0, 0.078)"

INITS = (  # label, fan_in -> initializer
    ("zeros", lambda fan_in: "zeros"),
    ("constant 1/fan_in", lambda fan_in: gn.nn.init.constant(1.0 / fan_in)),
    ("normal(0, 0.01)", lambda fan_in: gn.nn.init.normal(std=0.01)),
    (QUESTION_INIT, lambda fan_in: gn.nn.init.normal(std=0.078)),
    ("he_normal", lambda fan_in: "he_normal"),
)


def _plot(runs, plateau, out: Path) -> list:
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(runs):
        ax.plot(np.arange(1, len(r["losses"]) + 1), r["losses"], label=r["init"], **style(i))
    ax.axhline(10 * np.log(2), ls=":", c="gray", label="10·ln 2")
    ax.axhline(plateau, ls="--", c="k", label="Σ H(prior)")
    ax.set_xscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("BCE summed over 10 outputs")
    ax.legend()
    return save_figure(fig, out, "loss.png", dpi=120)


def _where(r) -> str:
    if r["escape"]:
        return (f"sits on the plateau until step {r['escape']} of {len(r['losses'])} and then learns "
                f"(loss {r['final_loss']:.4f}, {r['accuracy']:.2%})")
    return (f"has not left the plateau after {len(r['losses'])} steps (loss {r['final_loss']:.4f}, "
            f"{r['accuracy']:.2%})")


def _conclusion(runs, plateau, balanced, top_prior, top_class) -> str:
    by = {r["init"]: r for r in runs}
    z, c, s, h = by["zeros"], by["constant 1/fan_in"], by["normal(0, 0.01)"], by["he_normal"]
    q = by[QUESTION_INIT]
    parts = [f"Zero init starts at {z['losses'][0]:.4f} (10·ln 2 = {10 * np.log(2):.4f}) and ends at "
             f"{z['final_loss']:.4f} on the training set, {z['final_loss'] - plateau:+.1e} from "
             f"Σ_c H(prior_c) = {plateau:.4f} (10·H(0.1) = {balanced:.4f} would assume balanced "
             f"classes); σ(b_c) matches every class prior to within {z['bias_vs_prior']:.1e}."]
    if z["max_other_grad"] == 0.0:
        parts.append("Every gradient except the 10 output biases' was exactly 0.0 at every step, so "
                     "the biases learned the priors and nothing else moved")
    else:
        parts.append(f"Gradients other than the output biases' reached {z['max_other_grad']:.2g}, so "
                     f"the zero-init symmetry was not exact here")
    if abs(z["accuracy"] - top_prior) < 1e-9:
        parts[-1] += (f"; the net predicts digit {top_class} for every image: {z['accuracy']:.2%} test "
                      f"accuracy, exactly that class's prior.")
    else:
        parts[-1] += (f"; test accuracy is {z['accuracy']:.2%}, against {top_prior:.2%} for always "
                      f"predicting digit {top_class}.")
    units, exact = "/".join(map(str, c["distinct_units"])), "/".join(map(str, c["bitwise_distinct_units"]))
    same = max(c["distinct_units"]) == 1
    width = ("a net one unit wide" if same else
             f"at most {max(c['distinct_units'])} different units per layer")
    on_plateau = abs(c["final_loss"] - plateau) < 0.05
    parts.append(f"Constant init gets non-zero gradients (layer 1: {c['first_grad_step1']:.2g} at step 1) "
                 f"and leaves {units} distinct unit(s) per hidden layer after training "
                 + ("(all units of a layer identical" if same else "(the symmetry broke")
                 + (f"; bitwise {exact}, from BLAS rounding)" if exact != units else ")")
                 + f": {width}, at loss {c['final_loss']:.4f} and {c['accuracy']:.2%}"
                 + (", still on the plateau." if on_plateau else ", off the plateau."))
    ratio = h["first_grad_step1"] / max(s["first_grad_step1"], 1e-30)
    parts.append(f"Small random weights (std 0.01) start at {s['losses'][0]:.4f}; their first-layer "
                 f"gradient at step 1 is {s['first_grad_step1']:.1e}, {ratio:.3g}× "
                 f"{'less' if ratio > 1 else 'more'} than He init's, and the net {_where(s)}.")
    gap = q["initial_train_loss"] - 10 * np.log(2)
    parts.append(f"A normal init with std 0.078 starts at {q['initial_train_loss']:.4f} on the training set, "
                 f"{gap:+.3f} from 10·ln 2"
                 + (", the question's 6.98 (zero init cannot start there: its start is exactly 10·ln 2)"
                    if abs(q["initial_train_loss"] - 6.98) < 0.005 else ", not the question's 6.98")
                 + f", and {_where(q)}"
                 + (f": a start at {q['initial_train_loss']:.2f} does not by itself mean a stall." if q["escape"] is not None
                    and q["escape"] < len(q["losses"]) // 10 else "."))
    parts.append(f"He init on the same net {_where(h)}.")
    return " ".join(parts)


def run(quick: bool, device: str, out: Path) -> Result:
    dev = gn.device(device)
    train, test = gn.data.load("mnist", "train"), gn.data.load("mnist", "test")
    steps = 200 if quick else 1000
    if quick:
        train, test = train.subset(np.arange(5000)), test.subset(np.arange(2000))
    priors = np.bincount(train.y, minlength=10) / len(train)
    plateau, balanced = float(binary_entropy(priors).sum()), float(10 * binary_entropy(0.1))
    test_priors = np.bincount(test.y, minlength=10) / len(test)
    runs = [_run_init(label, init, train, test, steps, dev) for label, init in INITS]
    for r in runs:
        r["escape"] = escape_step(r["losses"], plateau)
    rows = [{"init": r["init"], "initial loss": r["losses"][0], "final loss (train)": r["final_loss"],
             "final − Σ H(prior)": r["final_loss"] - plateau, "left plateau at step": r["escape"] or "never",
             "max |grad| but output bias": r["max_other_grad"], "max |dW₁| at step 1": r["first_grad_step1"],
             "distinct units per layer": "/".join(map(str, r["distinct_units"])),
             "test accuracy": r["accuracy"]} for r in runs]
    by = {r["init"]: r for r in runs}
    top = int(np.argmax(priors))
    findings = {"plateau_sum_H": plateau, "ten_H_0.1": balanced, "ten_ln2": float(10 * np.log(2)),
                "zero_initial_loss": by["zeros"]["losses"][0], "zero_final_loss": by["zeros"]["final_loss"],
                "zero_max_hidden_grad": by["zeros"]["max_other_grad"],
                "zero_bias_vs_prior": by["zeros"]["bias_vs_prior"],
                "zero_accuracy": by["zeros"]["accuracy"], "top_class": top,
                "top_class_test_prior": float(test_priors[top]),
                "constant_distinct_units": by["constant 1/fan_in"]["distinct_units"],
                "constant_bitwise_distinct_units": by["constant 1/fan_in"]["bitwise_distinct_units"],
                "constant_accuracy": by["constant 1/fan_in"]["accuracy"],
                "small_final_loss": by["normal(0, 0.01)"]["final_loss"],
                "small_escape_step": by["normal(0, 0.01)"]["escape"],
                "small_first_grad_step1": by["normal(0, 0.01)"]["first_grad_step1"],
                "he_first_grad_step1": by["he_normal"]["first_grad_step1"],
                "he_final_loss": by["he_normal"]["final_loss"], "he_accuracy": by["he_normal"]["accuracy"],
                "question_init_initial_loss": by[QUESTION_INIT]["initial_train_loss"],
                "question_init_escape_step": by[QUESTION_INIT]["escape"]}
    return Result(NAME, QUESTION, columns=list(rows[0]), rows=rows,
                  conclusion=_conclusion(runs, plateau, balanced, float(test_priors[top]), top),
                  data={"loss_curves": {r["init"]: r["losses"] for r in runs}, "sizes": list(SIZES),
                        "lr": LR, "batch_size": BATCH, "steps": steps, "train_priors": priors.tolist()},
                  findings=findings, figures=_plot(runs, plateau, out))
