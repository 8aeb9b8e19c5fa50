"""Generalized Dice with absent classes: naive 1/(count² + eps) weights, bounded ones, and none.

Generalized Dice (Sudre et al. 2017) weights each class c of a sample by the inverse
square of its volume r_c = Σ_i t_ic, so that small structures count as much as large
ones (p: softmax probabilities, t: one-hot target, i: pixels):

    N = Σ_c w_c Σ_i p_ic t_ic,   D = Σ_c w_c Σ_i (p_ic + t_ic),   L = 1 − 2N/D,   w_c = 1/r_c²
    ∂L/∂p_ic = w_c · (2N − 2·t_ic·D) / D²

The task built here from MNIST has 11 classes (background and the ten digits; a pixel
above a threshold takes the image's digit), so every image has two classes present
and nine absent (r_c = 0). What the three treatments of an absent class do:

**naive, w_c = 1/(r_c² + eps) = 10⁶.** The absent classes' false positives fill the
denominator: D ≈ 10⁶ · Σ_{absent c} Σ_i p_ic ~ 10⁸ at a near-uniform start, while N ~ 10⁻².
So L = 1 − 10⁻¹⁰ (exactly 1.0 in float32) and, since every gradient term carries 1/D
or w_c·N/D², the gradient is ~10⁻¹¹: the loss is flat. SGD does not move, and Adam
does not either, because its ε = 10⁻⁸ exceeds √v. The net stays at its random
initialisation: it does not learn to predict background, it does not learn anything.

**bounded, absent = "max".** An absent class gets the largest weight among the present
classes, i.e. that of the digit (the smaller class). Gradients are healthy, but
"background everywhere" is a trap: there L ≈ 0.75 and N/D = (1 − L)/2 ≈ 0.12. Moving
a foreground pixel's probability from background to the digit classes raises N by
w_d·q (q: the share that lands on the right digit) and D by ~w_d (every digit class,
present or absent, weighs w_d), so it lowers the loss only if q > N/D ≈ 0.12. A net
that cannot yet tell digits apart has q ≈ 0.1: background is the better bet, it
collapses onto it, the softmax saturates and the gradient dies. This is the collapse
the thread describes, and it comes from the bounded weights, not the naive ones.

**none, absent = "zero".** An absent class weighs 0 (the thread's fix, "a fixed weight
of eps", in the limit). Mass moved onto the digit classes now only enters D through
the right digit, so the gain ratio is 1 > N/D: the net leaves background at once,
learns foreground against background, and then digit identity, slowly, because
confusing two digits is not penalised directly, only through the probability the
right digit loses.

The experiment downsamples MNIST to 14×14, trains the same small fully convolutional
net (Conv2d with padding, no pooling, logits (N, 11, H, W), `nn.Softmax(axis=1)` for
per-pixel probabilities) from the same initial weights with each weighting, and
reports per-class IoU over the test pixels, the foreground IoU (digit against
background, whatever the digit), the share of pixels predicted as background, and
the gradient norm at the start and at the end.
"""
from __future__ import annotations

import numpy as np

import gpunet as gn

from .base import Result, save_figure, try_plot

NAME = "generalized-dice"
QUESTION = ("What do generalized Dice weights 1/(count²+eps) do to classes absent from an image, and "
            "do bounded weights fix the background-only predictions?")

SEED, LR, BATCH, THRESHOLD, CLASSES = 0, 2e-3, 32, 0.4, 11
VARIANTS = {"naive 1/(r²+eps)": "naive", "absent = max": "max", "absent = zero": "zero"}
CLASS_NAMES = ["background"] + [f"digit {d}" for d in range(10)]


def segmentation_set(ds, n):
    """First n images of `ds` at 14×14 (2×2 mean) in [0, 1], and per-pixel labels (n, 14, 14)."""
    x = ds.x[:n].astype(np.float32).reshape(n, 14, 2, 14, 2).mean(axis=(2, 4)) / 255.0
    labels = np.where(x > THRESHOLD, ds.y[:n, None, None] + 1, 0).astype(np.int64)
    return x[:, None], labels


def build(dev):
    gn.manual_seed(SEED)  # the same initial weights for every variant
    nn = gn.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2, init="he_normal"), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2, init="he_normal"), nn.ReLU(),
        nn.Conv2d(16, 16, 5, padding=2, init="he_normal"), nn.ReLU(),
        nn.Conv2d(16, CLASSES, 1),      # logits (N, 11, H, W)
        nn.Softmax(axis=1),             # per-pixel class probabilities
    ).to(dev)


def train(absent, x, labels, dev, epochs):
    """Adam on GeneralizedDice(absent=...), seeded batches. Returns the model and per-epoch loss."""
    model = build(dev)
    loss_fn = gn.losses.GeneralizedDice(absent=absent)
    opt = gn.optim.Adam(model.parameters(), lr=LR)
    xd, yd = dev.asarray(x), dev.asarray(labels)
    rng = np.random.default_rng(SEED)
    curve = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = dev.xp.zeros((), dtype="float64")
        for start in range(0, len(x), BATCH):
            idx = dev.asarray(order[start:start + BATCH])
            probs = model(xd[idx])
            total += loss_fn.forward(probs, yd[idx]) * len(idx)
            model.backward(loss_fn.backward())
            opt.step()
            opt.zero_grad()
        curve.append(float(total) / len(x))  # sync: once per epoch
    return model, curve


def predict(model, x, dev):
    model.eval()
    return np.concatenate([gn.backend.to_numpy(model(dev.asarray(x[i:i + 500])).argmax(axis=1))
                           for i in range(0, len(x), 500)])  # sync


def iou_per_class(pred, labels):
    """IoU of each class over all test pixels (NaN for a class absent from both)."""
    out = []
    for c in range(CLASSES):
        p, t = pred == c, labels == c
        union = (p | t).sum()
        out.append(float((p & t).sum() / union) if union else float("nan"))
    return out


def scores(pred, labels):
    fg_p, fg_t = pred > 0, labels > 0
    ious = iou_per_class(pred, labels)
    return {"iou": ious, "digit_iou_mean": float(np.nanmean(ious[1:])),
            "foreground_iou": float((fg_p & fg_t).sum() / max((fg_p | fg_t).sum(), 1)),
            "predicted_background": float((pred == 0).mean()),
            "true_background": float((labels == 0).mean()),
            "pixel_accuracy": float((pred == labels).mean())}


def grad_norm(model, absent, x, labels, dev):
    """‖∇θ L‖₂ on one fixed batch (train mode), leaving the parameters' grads at zero."""
    loss_fn = gn.losses.GeneralizedDice(absent=absent)
    loss_fn.forward(model(dev.asarray(x)), dev.asarray(labels))
    model.backward(loss_fn.backward())
    norm = float(np.sqrt(sum(float((p.grad.astype("float64") ** 2).sum()) for p in model.parameters())))  # sync
    model.zero_grad()
    return norm


def run_variant(absent, train_set, test_set, dev, epochs):
    (x, labels), (xt, lt) = train_set, test_set
    probe = (x[:64], labels[:64])
    start = grad_norm(build(dev), absent, *probe, dev)
    model, curve = train(absent, x, labels, dev, epochs)
    model.train()
    end = grad_norm(model, absent, *probe, dev)
    pred = predict(model, xt, dev)
    return {"curve": curve, "grad_start": start, "grad_end": end, "pred": pred, **scores(pred, lt)}


def table(res, true_bg):
    names = list(VARIANTS)
    rows = [{"measure": f"IoU {CLASS_NAMES[c]}", **{n: res[n]["iou"][c] for n in names}} for c in range(CLASSES)]
    summary = [("mean digit IoU", "digit_iou_mean"), ("foreground IoU", "foreground_iou"),
               ("pixel accuracy", "pixel_accuracy"),
               (f"pixels predicted background (true {true_bg:.1%})", "predicted_background"),
               ("‖∇θ‖ at start", "grad_start"), ("‖∇θ‖ at end", "grad_end")]
    rows += [{"measure": label, **{n: res[n][key] for n in names}} for label, key in summary]
    rows.append({"measure": "final training loss", **{n: res[n]["curve"][-1] for n in names}})
    return rows


def conclude(res, setup):
    nv, mx, zr = (res[n] for n in VARIANTS)
    naive_txt = (f"With naive weights the gradient norm is {nv['grad_start']:.1e} at the start (bounded: "
                 f"{mx['grad_start']:.1e}, zero: {zr['grad_start']:.1e}) and the loss stays at "
                 f"{nv['curve'][-1]:.6f}: the net {'does not train' if nv['grad_end'] < 1e-6 else 'trains'}, "
                 f"predicts background on {nv['predicted_background']:.1%} of pixels (true "
                 f"{setup['true_background']:.1%}) and reaches a mean digit IoU of {nv['digit_iou_mean']:.3f}.")
    collapsed = mx["predicted_background"] > 0.99
    max_txt = (f"With absent = max it {'collapses onto background' if collapsed else 'does not collapse'}: "
               f"{mx['predicted_background']:.1%} of pixels predicted background, foreground IoU "
               f"{mx['foreground_iou']:.3f}, mean digit IoU {mx['digit_iou_mean']:.3f}, loss "
               f"{'stuck at' if mx['grad_end'] < 1e-3 * max(mx['grad_start'], 1e-30) else 'ends at'} "
               f"{mx['curve'][-1]:.4f} (so a digit guess must be right more than (1 − L)/2 = "
               f"{(1 - mx['curve'][-1]) / 2:.3f} of the time to pay), gradient norm {mx['grad_end']:.1e} at the end.")
    segments = zr["foreground_iou"] > 0.3
    zero_txt = (f"With absent = zero it {'segments' if segments else 'does not segment'}: foreground IoU {zr['foreground_iou']:.3f}, mean digit IoU "
                f"{zr['digit_iou_mean']:.3f} ({sum(v > 0.05 for v in zr['iou'][1:])} of 10 digits above 0.05), "
                f"pixel accuracy {zr['pixel_accuracy']:.3f}.")
    frozen = nv["grad_start"] < 1e-6 and nv["predicted_background"] < 0.99 and nv["grad_end"] < 1e-6
    parts = [("the naive weights freeze training instead of driving it to background" if frozen else
              f"the naive weights end with {nv['predicted_background']:.0%} background predictions"),
             ("the background-only predictions the thread describes come from the bounded weights here"
              if collapsed else "the bounded weights avoid the background collapse")]
    best = max(VARIANTS, key=lambda n: res[n]["foreground_iou"])
    return (f"{naive_txt} {max_txt} {zero_txt} Over {setup['epochs']} epochs on {setup['train_samples']} "
            f"14×14 images, {parts[0]}, {parts[1]}, and the best foreground IoU comes from {best}.")


def plot(res, test_set, out):
    plt = try_plot()
    if plt is None:
        return []
    xt, lt = test_set
    show = range(5)
    cols = ["input", "target", *VARIANTS]
    fig, axes = plt.subplots(len(show), len(cols), figsize=(2 * len(cols), 2 * len(show)))
    for r, i in enumerate(show):
        panels = [xt[i, 0], lt[i], *(res[n]["pred"][i] for n in VARIANTS)]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if c == 0 else "tab20", vmin=0, vmax=1 if c == 0 else 19)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
    return save_figure(fig, out, "generalized_dice.png", dpi=100)


def run(quick: bool, device: str, out) -> Result:
    dev = gn.device(device)
    n_train, n_test, epochs = (600, 300, 2) if quick else (4000, 1000, 5)
    train_set = segmentation_set(gn.data.load("mnist", split="train"), n_train)
    test_set = segmentation_set(gn.data.load("mnist", split="test"), n_test)
    res = {name: run_variant(absent, train_set, test_set, dev, epochs) for name, absent in VARIANTS.items()}
    setup = {"train_samples": n_train, "test_samples": n_test, "epochs": epochs, "image_size": 14,
             "threshold": THRESHOLD, "lr": LR, "optimizer": "Adam", "batch_size": BATCH,
             "true_background": float((test_set[1] == 0).mean())}
    findings = {absent: {k: res[name][k] for k in ("digit_iou_mean", "foreground_iou", "predicted_background",
                                                     "pixel_accuracy", "grad_start", "grad_end", "iou")}
                for name, absent in VARIANTS.items()}
    for name, absent in VARIANTS.items():
        findings[absent]["final_loss"] = res[name]["curve"][-1]
    figures = plot(res, test_set, out)
    return Result(NAME, QUESTION, columns=["measure", *VARIANTS], rows=table(res, setup["true_background"]),
                  conclusion=conclude(res, setup),
                  data={**setup, "loss_curves": {n: res[n]["curve"] for n in VARIANTS}},
                  findings=findings, figures=figures)
