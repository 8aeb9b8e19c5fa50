"""Batch norm before or after the ReLU: what the numbers show on a small CNN.

The two placements in each conv block of `gn.models.small_cnn` are

    before:  conv → BN → ReLU → pool      (Ioffe & Szegedy 2015: normalise the pre-activation)
    after:   conv → ReLU → BN → pool      (normalise what the next layer receives)

Arguments exist both ways. Before the ReLU, BN's β sets the ReLU threshold relative to
a unit-variance input, so about half the units are active whatever the conv's scale;
the statistics of a pre-activation are closer to Gaussian (Goodfellow et al., Deep
Learning §8.7.1). After the ReLU, BN standardises the actual input of the next layer,
including the positive mean a ReLU creates, and the ReLU's output (half zeros,
skewed) is what gets normalised. Neither argument predicts a large gap in accuracy,
and a single run of each cannot show one: the seed (initial weights, batch order)
alone moves the test accuracy of a small CNN by several tenths of a percent.

So the experiment makes no claim beyond its measurements. It trains
`small_cnn(bn_before_relu=True)` and `small_cnn(bn_before_relu=False)` from the same
seeds (the same initial conv and linear weights, and the same batch order, for each
seed), evaluates both on the Fashion-MNIST test images in eval mode (running
statistics), and compares the placements seed by seed: seed i of both starts from
the same weights and batch order, so the per-seed differences are paired, and their
mean gets a 95% Student-t interval. A difference is claimed only when that interval
excludes zero.

To fit a CPU budget the full run is small: width 16 (16 and 32 channels), one epoch
on a 10 000-image subset, 10 seeds per placement (the quick run: 3). More seeds and
epochs narrow the interval.
"""
from __future__ import annotations

import numpy as np

import gpunet as gn

from .base import Result, difference, difference_words, save_figure, try_plot

NAME = "batchnorm-placement"
QUESTION = "Should batch normalization go before or after the ReLU in a CNN?"

SEEDS = tuple(range(10))      # full run; the quick run uses the first QUICK_SEEDS
QUICK_SEEDS = 3
FULL_TRAIN = 10000
WIDTH, LR, MOMENTUM, BATCH = 16, 0.05, 0.9, 32
PLACEMENTS = {"BN before ReLU": True, "BN after ReLU": False}


def data(quick):
    train = gn.data.load("fashion-mnist", split="train")
    test = gn.data.load("fashion-mnist", split="test")
    return (train[:800], test[:500]) if quick else (train[:FULL_TRAIN], test)


def train_one(before, seed, train_ds, test_ds, dev, epochs):
    gn.manual_seed(seed)  # both placements build the same parameters in the same order
    model = gn.models.small_cnn(in_channels=1, classes=10, image_size=28, width=WIDTH,
                                bn_before_relu=before)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(),
                         gn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM), device=dev, seed=seed)
    hist = trainer.fit(train_ds, epochs=epochs, batch_size=BATCH)
    ev = trainer.evaluate(test_ds)
    return {"train loss": float(hist.loss[-1]), "train accuracy": float(hist.accuracy[-1]),
            "test loss": float(ev["loss"]), "test accuracy": float(ev["accuracy"])}


def summary(rows, label):
    acc = np.array([r["test accuracy"] for r in rows if r["placement"] == label])
    return {"placement": label, "seed": "mean ± std", "test accuracy": float(acc.mean()),
            "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "range": float(np.ptp(acc)), "n": int(len(acc))}


def compare(rows):
    """Paired over seeds: seed i of both placements starts from the same weights and batch order."""
    acc = {label: [r["test accuracy"] for r in rows if r["placement"] == label] for label in PLACEMENTS}
    after, before = (acc[label] for label in ("BN after ReLU", "BN before ReLU"))
    return difference(after, before, paired=True), [a - b for a, b in zip(after, before)]


def conclude(before, after, cmp, per_seed, setup):
    wins = sum(d > 0 for d in per_seed)
    ties = sum(d == 0 for d in per_seed)
    seeds = (f"BN after ReLU is higher in {wins} of {len(per_seed)} seeds"
             + (f" ({ties} tie(s))" if ties else "") if ties < len(per_seed) else
             "the two placements give identical accuracies in every seed")
    return (f"Over {before['n']} seeds ({setup['epochs']} epoch(s) on {setup['train_samples']} Fashion-MNIST "
            f"images, width {WIDTH}, test on {setup['test_samples']} images), BN before ReLU reaches "
            f"{before['test accuracy']:.4f} ± {before['std']:.4f} and BN after ReLU "
            f"{after['test accuracy']:.4f} ± {after['std']:.4f} (mean ± std). "
            f"{difference_words(cmp, 'BN after ReLU, against before,')}; {seeds}. "
            f"At this budget a difference smaller than about {cmp['hi'] - cmp['mean']:.4f} cannot be told from "
            f"seed noise.")


def plot(rows, out):
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, label in enumerate(PLACEMENTS):
        acc = [r["test accuracy"] for r in rows if r["placement"] == label]
        ax.scatter([i] * len(acc), acc, zorder=3)
        ax.errorbar(i + 0.15, np.mean(acc), yerr=np.std(acc, ddof=1) if len(acc) > 1 else 0, fmt="k_",
                    capsize=6)
    ax.set_xticks(range(len(PLACEMENTS)), list(PLACEMENTS))
    ax.set(xlim=(-0.5, len(PLACEMENTS) - 0.5), ylabel="test accuracy", title="one dot per seed; bar: mean ± std")
    return save_figure(fig, out, "batchnorm_placement.png", dpi=110)


def run(quick: bool, device: str, out) -> Result:
    dev = gn.device(device)
    train_ds, test_ds = data(quick)
    epochs = 1
    rows = []
    seeds = SEEDS[:QUICK_SEEDS] if quick else SEEDS
    for label, before in PLACEMENTS.items():
        for seed in seeds:
            rows.append({"placement": label, "seed": seed,
                         **train_one(before, seed, train_ds, test_ds, dev, epochs)})
    before, after = (summary(rows, label) for label in PLACEMENTS)
    for s in (before, after):
        acc = [r["test accuracy"] for r in rows if r["placement"] == s["placement"]]
        s["min"], s["max"] = float(min(acc)), float(max(acc))
    cmp, per_seed = compare(rows)
    setup = {"epochs": epochs, "train_samples": len(train_ds), "test_samples": len(test_ds), "width": WIDTH,
             "lr": LR, "momentum": MOMENTUM, "batch_size": BATCH, "seeds": list(seeds),
             "subset_note": "a training subset and one epoch, to fit a CPU budget"}
    findings = {"accuracies": {label: [r["test accuracy"] for r in rows if r["placement"] == label]
                               for label in PLACEMENTS},
                "mean_before": before["test accuracy"], "mean_after": after["test accuracy"],
                "std_before": before["std"], "std_after": after["std"],
                "diff": cmp["mean"], "se_diff": cmp["se"], "ci95": [cmp["lo"], cmp["hi"]],
                "resolved": cmp["resolved"], "per_seed_diff": per_seed}
    columns = ["placement", "seed", "train loss", "train accuracy", "test loss", "test accuracy", "std", "range"]
    shown = [{k: v for k, v in s.items() if k in columns} for s in (before, after)]
    return Result(NAME, QUESTION, columns=columns, rows=rows + shown,
                  conclusion=conclude(before, after, cmp, per_seed, setup), data=setup, findings=findings,
                  figures=plot(rows, out))
