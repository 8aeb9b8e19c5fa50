"""Pixels in 0–255 against pixels / 255, at the same learning rate: what breaks, and why.

Scaling the input by s = 255 scales everything the first layer sees. For an MLP
h = relu(W1·x + b1), z = W2·h + b2 with He-initialised weights:

- forward: W1·(s·x) = s·(W1·x), and relu is positively homogeneous, so the hidden
  activations and (with zero biases) the logits are s times larger. A logit gap s
  times the usual one makes the softmax one-hot: the loss of a wrong guess is the gap
  itself, hundreds instead of ~2.3.
- backward: ∂L/∂W1 = δ1·xᵀ carries a factor s from x, and ∂L/∂W2 = δ2·hᵀ a factor s
  from h, while δ = softmax − onehot stays bounded by 1. So the gradient norm grows
  by at least s at the start, and more where the saturated softmax makes δ larger
  than it is at a normal start (the measured ratio is in the table).
- the update: SGD moves W1 by lr·s·(…), which changes the first layer's output by
  lr·s²·(…): with raw pixels the step on the first layer is effectively s² ≈ 65 000
  times larger. At an lr chosen for [0, 1] inputs this overshoots at once: the loss
  explodes, or the ReLUs are knocked into the dead zone (all hidden units ≤ 0 for every
  input), after which the gradient is zero and the net predicts one class forever.

The thread's answer puts part of the blame on "floating-point precision" with large
numbers. That is not the mechanism: 0–255 is tiny for float32 (exact integers up to
2²⁴, relative precision 6e-8 at every magnitude). The failure is the scale of the
gradient relative to the learning rate; dividing the lr by s² for the first layer
(or simply scaling the inputs) removes it.

**Adam is different.** Adam divides each step by √v, the running size of that weight's
gradient, so its step is about lr per weight whatever the gradient's scale: a factor s
on the gradient cancels. The raw-pixel net still starts with huge logits, but its
updates do not overshoot by s², so it trains; what changes is where it ends, and with it
the class predicted for a given test image, which is what the question reports. That is
why the question's setup (Fashion-MNIST, Adam) and the SGD one have different outcomes.

The experiment trains the same MLP from the same weights and batch order on MNIST,
once with `DataLoader(scale=1/255)` and once with `scale=None` (raw 0–255), at the same
SGD learning rate, and does the same for the question's setup (Fashion-MNIST, 128 hidden
ReLUs, Adam lr 1e-3). It records the loss and the global gradient norm ‖∇θ‖ at every step
and, per setup, how many probe test images the two runs classify differently.
A run counts as diverged when the loss becomes NaN/Inf or exceeds 100× its start.
"""
from __future__ import annotations

import math

import numpy as np

import gpunet as gn

from .base import Result, save_figure, style, try_plot

NAME = "unnormalized-inputs"
QUESTION = ("What happens when (Fashion-)MNIST pixels are fed as 0–255 instead of divided by 255, at the "
            "same learning rate?")

SEED, LR, BATCH, HIDDEN = 0, 0.1, 128, 256
SCALES = {"x / 255": 1 / 255, "raw 0–255": None}
# setup -> (dataset, optimizer, lr, hidden units). The first is the experiment's own; the
# second is the question's: Fashion-MNIST, an MLP with 128 ReLUs, Adam at Keras' default lr.
SETUPS = {"MNIST, SGD": ("mnist", "sgd", LR, HIDDEN),
          "Fashion-MNIST, Adam (the question's)": ("fashion-mnist", "adam", 1e-3, 128)}


def data(quick, name="mnist"):
    train = gn.data.load(name, split="train")
    test = gn.data.load(name, split="test")
    return (train[:3000], test[:1000]) if quick else (train[:30000], test)


def grad_norm(model):
    """‖∇θ‖₂ over all parameters, as a 0-d device array (no sync)."""
    xp = model.device.xp
    return xp.sqrt(sum(xp.sum(p.grad.astype("float64") ** 2) for p in model.parameters()))


def dead_fraction(model, x):
    """Fraction of hidden ReLU units that are zero for every sample of batch x."""
    hidden = model[2](model[1](model[0](x)))  # Flatten -> Linear -> ReLU
    return float((hidden.max(axis=0) <= 0).mean())  # sync


def train(train_ds, dev, scale, epochs, optimizer="sgd", lr=LR, hidden=HIDDEN):
    """SGD (or Adam) with a per-step record of loss and gradient norm. Returns model, curves."""
    gn.manual_seed(SEED)
    model = gn.models.mlp([784, hidden, 10]).to(dev)
    loss_fn = gn.losses.SoftmaxCrossEntropy()
    opt = gn.optim.get(optimizer, model.parameters(), lr=lr)
    loader = gn.data.DataLoader(train_ds, BATCH, shuffle=True, device=dev, seed=SEED, scale=scale)
    losses, norms = [], []
    with np.errstate(all="ignore"):  # a diverging run overflows; that is the measurement
        for _ in range(epochs):
            for x, y in loader:
                loss = loss_fn.forward(model(x), y)
                model.backward(loss_fn.backward())
                losses.append(loss)
                norms.append(grad_norm(model))
                opt.step()
                opt.zero_grad()
    xp = dev.xp
    return model, loader, (gn.backend.to_numpy(xp.stack(losses)).astype(float),  # sync: once
                           gn.backend.to_numpy(xp.stack(norms)).astype(float))


def evaluate(model, test_ds, dev, scale):
    loader = gn.data.DataLoader(test_ds, 1000, shuffle=False, device=dev, scale=scale)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(model.parameters(), lr=LR),
                         device=dev)
    with np.errstate(all="ignore"):
        out = trainer.evaluate(loader)
        x, _ = next(iter(loader))
        preds = gn.backend.to_numpy(model(x).argmax(axis=1))
    out["dead"] = dead_fraction(model, x)
    out["distinct_predictions"] = int(len(np.unique(preds)))
    out["predictions"] = preds
    out["input_max"] = float(gn.backend.to_numpy(x).max())
    return out


def summarise(label, losses, norms, ev, lr=LR):
    finite = np.isfinite(losses)
    first_bad = int(np.argmin(finite)) if not finite.all() else None
    exploded = bool(np.nanmax(np.where(finite, losses, np.nan)) > 100 * losses[0]) if finite.any() else True
    tail = losses[-max(1, len(losses) // 10):]
    return {"inputs": label, "lr": lr, "initial loss": float(losses[0]),
            "max loss": float(np.nanmax(np.where(finite, losses, np.nan))),
            "final loss": float(np.mean(tail)), "initial ‖∇θ‖": float(norms[0]),
            "max ‖∇θ‖": float(np.nanmax(np.where(np.isfinite(norms), norms, np.nan))),
            "non-finite": "no" if first_bad is None else f"yes (step {first_bad})",
            "diverged": "yes" if (first_bad is not None or exploded) else "no",
            "dead ReLUs": ev["dead"], "test accuracy": float(ev["accuracy"]),
            "classes predicted": ev["distinct_predictions"]}


def conclude_setup(setup, norm, raw, f):
    ratio = raw["initial ‖∇θ‖"] / norm["initial ‖∇θ‖"]
    if raw["non-finite"] != "no":
        fate = f"the loss becomes non-finite at step {raw['non-finite'].split()[-1].rstrip(')')}"
    elif raw["diverged"] == "yes":
        fate = f"the loss explodes to {raw['max loss']:.3g} ({raw['max loss'] / raw['initial loss']:.0f}× its start)"
    else:
        fate = f"the loss stays finite (max {raw['max loss']:.3g}, {raw['max loss'] / raw['initial loss']:.2g}× its start)"
    dead = (f"{raw['dead ReLUs']:.0%} of its hidden ReLUs are dead (zero on all {f['probe_images']} "
            f"probe test images) and it predicts {raw['classes predicted']} distinct class(es)")
    gap = norm["test accuracy"] - raw["test accuracy"]
    verdict = ("better" if gap > 0.01 else "worse" if gap < -0.01 else "about the same")
    size = (f"inputs {f['input_ratio']:.0f}× larger" if f["input_ratio"] > 1.5 else
            f"inputs of the same scale (ratio {f['input_ratio']:.2f})")
    grad = (f"{ratio:.0f}× larger" if ratio > 1.5 else f"{ratio:.2f}× as large")
    return (f"{setup} (lr {norm['lr']:g}): with {size}, the first step's gradient norm is {grad} "
            f"({raw['initial ‖∇θ‖']:.3g} against {norm['initial ‖∇θ‖']:.3g}) and the initial loss is "
            f"{raw['initial loss']:.3g} against {norm['initial loss']:.3g}. With raw inputs {fate}; at the end "
            f"{dead}, for a test accuracy of {raw['test accuracy']:.4f}. With x/255 the run does "
            f"{'' if norm['diverged'] == 'yes' else 'not '}diverge, ends at a training loss of "
            f"{norm['final loss']:.3g} and reaches {norm['test accuracy']:.4f} ({verdict}). The two runs "
            f"predict different classes for {f['prediction_disagreement']:.1%} of the {f['probe_images']} "
            f"probe test images.")


def conclude(rows, f):
    parts = []
    for setup in f["setups"]:
        norm, raw = (r for r in rows if r["setup"] == setup)
        parts.append(conclude_setup(setup, norm, raw, f["setups"][setup]))
    div = {s: v["diverged_raw"] for s, v in f["setups"].items()}
    if len(set(div.values())) > 1:
        parts.append("The outcomes differ: raw inputs make " + ", ".join(s for s, d in div.items() if d)
                     + " diverge but not " + ", ".join(s for s, d in div.items() if not d) + ".")
    else:
        parts.append("Raw inputs " + ("make every setup diverge." if all(div.values()) else
                                      "make no setup diverge."))
    return " ".join(parts)


def plot(curves, out):
    plt = try_plot()
    if plt is None:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, (losses, norms)) in enumerate(curves.items()):
        ax.plot(np.where(np.isfinite(losses), losses, np.nan), label=label, **style(i))
        bx.plot(np.where(np.isfinite(norms), norms, np.nan), label=label, **style(i))
    ax.set(yscale="log", xlabel="step", ylabel="training loss (batch)", title="loss")
    bx.set(yscale="log", xlabel="step", ylabel="‖∇θ‖₂", title="gradient norm")
    ax.legend(fontsize=7)
    return save_figure(fig, out, "unnormalized_inputs.png", dpi=110)


def run(quick: bool, device: str, out) -> Result:
    dev = gn.device(device)
    epochs = 1 if quick else 2
    rows, curves, per_setup = [], {}, {}
    for setup, (dataset, optimizer, lr, hidden) in SETUPS.items():
        train_ds, test_ds = data(quick, dataset)
        evs = []
        for label, scale in SCALES.items():
            model, _, (losses, norms) = train(train_ds, dev, scale, epochs, optimizer, lr, hidden)
            ev = evaluate(model, test_ds, dev, scale)
            evs.append(ev)
            rows.append({"setup": setup, **summarise(label, losses, norms, ev, lr)})
            curves[f"{setup}: {label}"] = (losses, norms)
        norm, raw = rows[-2], rows[-1]
        per_setup[setup] = {
            "grad_norm_ratio_initial": raw["initial ‖∇θ‖"] / norm["initial ‖∇θ‖"],
            "input_ratio": evs[1]["input_max"] / evs[0]["input_max"],
            "initial_loss_normalized": norm["initial loss"], "initial_loss_raw": raw["initial loss"],
            "accuracy_normalized": norm["test accuracy"], "accuracy_raw": raw["test accuracy"],
            "diverged_normalized": norm["diverged"] == "yes", "diverged_raw": raw["diverged"] == "yes",
            "nonfinite_raw": raw["non-finite"] != "no", "dead_relu_raw": raw["dead ReLUs"],
            "dead_relu_normalized": norm["dead ReLUs"], "probe_images": int(len(evs[0]["predictions"])),
            "prediction_disagreement": float((evs[0]["predictions"] != evs[1]["predictions"]).mean()),
            "dataset": dataset, "optimizer": optimizer, "lr": lr, "hidden": hidden,
            "train_samples": len(train_ds), "test_samples": len(test_ds)}
    findings = {**per_setup[next(iter(SETUPS))], "setups": per_setup}  # the first setup's keys at the top
    columns = ["setup", "inputs", "lr", "initial loss", "max loss", "final loss", "initial ‖∇θ‖", "max ‖∇θ‖",
               "non-finite", "diverged", "dead ReLUs", "test accuracy", "classes predicted"]
    data_out = {"epochs": epochs, "batch_size": BATCH,
                "setups": {k: {"dataset": v[0], "optimizer": v[1], "lr": v[2], "model": f"mlp [784, {v[3]}, 10]"}
                           for k, v in SETUPS.items()},
                "curves": {k: {"loss": [v if math.isfinite(v) else None for v in c[0].tolist()],
                               "grad_norm": [v if math.isfinite(v) else None for v in c[1].tolist()]}
                           for k, c in curves.items()}}
    return Result(NAME, QUESTION, columns=columns, rows=rows, conclusion=conclude(rows, findings),
                  data=data_out, findings=findings, figures=plot(curves, out))
