"""ReLU on the logits before the softmax, against linear logits.

The output layer computes z = W·h + b and the loss is cross-entropy on softmax(a), with
a = z (linear logits) or a = relu(z). Its gradient with respect to z is

    ∂L/∂z_k = (softmax(a)_k − y_k) · 1[z_k > 0]        (ReLU)
    ∂L/∂z_k =  softmax(a)_k − y_k                        (linear)

With the ReLU, a logit whose pre-activation is negative is clamped to 0 and gets **no
gradient** on that sample. Two things follow:

- The wrong classes are pushed down only until they reach 0, and then left there:
  a large share of each sample's logits sit at exactly 0 (the network cannot express
  "very unlikely", only "not more likely than the others").
- If the *true* class's pre-activation is negative, nothing pulls it up: its
  gradient is (p_y − 1)·0 = 0. The loss can only fall by pushing the other positive
  logits down to 0 as well, and once every logit is 0 the sample sits at
  softmax = uniform, loss log C = 2.303 for C = 10, with a zero gradient: stuck.
  A class whose pre-activation is negative for every input is a dead logit: that
  class can never be predicted, except by a tie between zeros.

Ties between zero logits are resolved by argmax to the lowest index, which is one more
way accuracy is lost. The thread's answer ("leave the last layer linear") is right;
the experiment shows how much it costs and where the cost comes from.

The experiment trains the same MLP (784-128-10, same initial weights and batch order)
on Fashion-MNIST with and without a ReLU after the last Linear, with SGD, and
measures test accuracy, the fraction of each sample's logits that are 0, the fraction
of samples whose true-class logit is 0, the fraction with *all* logits 0, and the
number of classes whose logit is 0 on every test sample.
"""
from __future__ import annotations

import numpy as np

import gpunet as gn

from .base import Result, difference, difference_words, integer_ticks, save_figure, try_plot

NAME = "relu-last-layer"
QUESTION = "What happens if the last layer (the logits before the softmax) has a ReLU activation?"

LR, MOMENTUM, BATCH, HIDDEN = 0.05, 0.9, 128, 128
VARIANTS = ("linear logits", "ReLU logits")


def data(quick):
    train = gn.data.load("fashion-mnist", split="train")
    test = gn.data.load("fashion-mnist", split="test")
    return (train[:4000], test[:2000]) if quick else (train[:30000], test)


def build(variant, seed, dev):
    gn.manual_seed(seed)  # same weights for both variants: the ReLU has no parameters
    model = gn.models.mlp([784, HIDDEN, 10])
    if variant == "ReLU logits":
        model.append(gn.nn.ReLU())
    return model.to(dev)


def outputs(model, test_ds, dev):
    """The model's outputs (what enters the softmax) on every test image, as a host array."""
    model.eval()
    loader = gn.data.DataLoader(test_ds, 1000, shuffle=False, device=dev)
    return np.concatenate([gn.backend.to_numpy(model(x)) for x, _ in loader])  # sync


def logit_stats(a, y):
    zero = a == 0  # exact zeros: what a ReLU outputs (linear logits are essentially never 0)
    return {"zeroed logits / sample": float(zero.mean()),
            "true-class logit 0": float(zero[np.arange(len(y)), y].mean()),
            "all logits 0": float(zero.all(axis=1).mean()),
            "dead logits (of 10)": int(zero.all(axis=0).sum()),
            "per_class_zero": zero.mean(axis=0).tolist()}


def train_one(variant, seed, train_ds, test_ds, dev, epochs):
    model = build(variant, seed, dev)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(),
                         gn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM), device=dev, seed=seed)
    hist = trainer.fit(train_ds, epochs=epochs, batch_size=BATCH)
    a = outputs(model, test_ds, dev)
    row = {"logits": variant, "seed": seed, "train loss": float(hist.loss[-1]),
           "test accuracy": float((a.argmax(axis=1) == test_ds.y).mean()), **logit_stats(a, test_ds.y)}
    return row, list(map(float, hist.loss))


COLUMNS = ["logits", "seed", "train loss", "test accuracy", "zeroed logits / sample", "true-class logit 0",
           "all logits 0", "dead logits (of 10)"]


def mean_row(rows, variant):
    mine = [r for r in rows if r["logits"] == variant]
    out = {"logits": variant, "seed": "mean"}
    for c in COLUMNS[2:]:
        out[c] = float(np.mean([r[c] for r in mine]))
    out["accuracy spread"] = float(np.ptp([r["test accuracy"] for r in mine]))
    return out


def seed_text(rows):
    """How the ReLU runs vary with the seed: best and worst, with their stuck-logit shares."""
    relu = sorted((r for r in rows if r["logits"] == "ReLU logits"), key=lambda r: r["test accuracy"])
    if len(relu) < 2:
        return ""
    lo, hi = relu[0], relu[-1]
    return (f" The damage depends on the seed: the worst ReLU run reaches {lo['test accuracy']:.4f} with the "
            f"true-class logit at 0 on {lo['true-class logit 0']:.1%} of images, the best {hi['test accuracy']:.4f} "
            f"with {hi['true-class logit 0']:.1%}.")


def conclude(lin, relu, setup, rows):
    d = difference([r["test accuracy"] for r in rows if r["logits"] == VARIANTS[1]],
                   [r["test accuracy"] for r in rows if r["logits"] == VARIANTS[0]], paired=True)
    lin_states = (lin["zeroed logits / sample"], lin["true-class logit 0"], lin["all logits 0"],
                  lin["dead logits (of 10)"])
    linear_txt = ("With linear logits none of these states occurs: no logit is ever exactly 0." if not any(lin_states)
                  else f"With the variant called linear logits the same states occur: {lin_states[0]:.0%} of logits "
                       f"are 0, the true class's on {lin_states[1]:.1%} of images, all of them on {lin_states[2]:.1%}.")
    dead = (f"on average {relu['dead logits (of 10)']:.2g} class(es) per run had a logit that is 0 on every test "
            f"image (never predicted except by a tie)" if relu["dead logits (of 10)"] > 0
            else "no class's logit was 0 on every test image (no fully dead logit)")
    return (f"Over {setup['seeds']} seed(s) ({setup['epochs']} epochs on {setup['train_samples']} Fashion-MNIST "
            f"images), ReLU logits reach a mean test accuracy of {relu['test accuracy']:.4f} against "
            f"{lin['test accuracy']:.4f} for linear logits: "
            f"{difference_words(d, 'the ReLU variant', 'higher', 'lower')}. Their training loss ends at "
            f"{relu['train loss']:.3f} against {lin['train loss']:.3f}. With the ReLU, "
            f"{relu['zeroed logits / sample']:.0%} of each sample's logits are exactly 0 (linear: "
            f"{lin['zeroed logits / sample']:.0%}); for {relu['true-class logit 0']:.1%} of test images the true "
            f"class's logit is 0; {relu['all logits 0']:.1%} have every logit at 0; and {dead}."
            f"{seed_text(rows)} {linear_txt}")


def plot(rows, curves, out):
    plt = try_plot()
    if plt is None:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for (variant, seed), losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, "-o" if variant == VARIANTS[0] else "--s", alpha=0.6,
                color="tab:blue" if variant == VARIANTS[0] else "tab:red",
                label=variant if seed == min(s for v, s in curves if v == variant) else None)
    ax.set(xlabel="epoch", ylabel="training loss (mean of the epoch)", title="training loss, one line per seed")
    integer_ticks(ax.xaxis)
    ax.legend(fontsize=7)
    per_class = np.mean([r["per_class_zero"] for r in rows if r["logits"] == "ReLU logits"], axis=0)
    bx.bar(range(10), per_class)
    bx.set(xlabel="class", ylabel="fraction of test images", ylim=(0, 1),
           title="ReLU logits: how often each class's logit is 0")
    return save_figure(fig, out, "relu_last_layer.png", dpi=110)


def run(quick: bool, device: str, out) -> Result:
    dev = gn.device(device)
    train_ds, test_ds = data(quick)
    seeds, epochs = ((0,), 2) if quick else (tuple(range(10)), 3)
    rows, curves = [], {}
    for variant in VARIANTS:
        for seed in seeds:
            row, losses = train_one(variant, seed, train_ds, test_ds, dev, epochs)
            rows.append(row)
            curves[(variant, seed)] = losses
    lin, relu = (mean_row(rows, v) for v in VARIANTS)
    setup = {"seeds": len(seeds), "seed_list": list(seeds), "epochs": epochs, "train_samples": len(train_ds),
             "test_samples": len(test_ds), "lr": LR, "momentum": MOMENTUM, "batch_size": BATCH,
             "model": f"mlp [784, {HIDDEN}, 10]"}
    findings = {"accuracy_linear": lin["test accuracy"], "accuracy_relu": relu["test accuracy"],
                "zeroed_fraction_relu": relu["zeroed logits / sample"],
                "zeroed_fraction_linear": lin["zeroed logits / sample"],
                "true_class_zero_relu": relu["true-class logit 0"], "all_zero_relu": relu["all logits 0"],
                "dead_logits_relu": relu["dead logits (of 10)"], "dead_logits_linear": lin["dead logits (of 10)"],
                "accuracy_difference": difference([r["test accuracy"] for r in rows if r["logits"] == VARIANTS[1]],
                                                  [r["test accuracy"] for r in rows if r["logits"] == VARIANTS[0]])}
    figures = plot(rows, curves, out)
    for r in rows:
        r.pop("per_class_zero")
    summary = [lin, relu] if len(seeds) > 1 else []
    return Result(NAME, QUESTION, columns=COLUMNS, rows=rows + summary, conclusion=conclude(lin, relu, setup, rows),
                  data={**setup, "loss_curves": {f"{v}/seed{s}": c for (v, s), c in curves.items()}},
                  findings=findings, figures=figures)
