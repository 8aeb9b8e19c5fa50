"""Dropout scaling: does rescaling by 1/(1−p) make sense for tanh or ReLU, and what if it is left out?

The net is x → Linear(784, 256) → f → Dropout(p) → Linear(256, 128) → f → Linear(128, 10),
with f = sigmoid, tanh or ReLU and p = 0.5. Three ways to drop:

    inverted  Dropout(p, scale=True):   train a·m/(1−p),  eval a           (PyTorch, Keras, TF)
    classic   Dropout(p, scale=False):  train a·m,        eval a·(1−p)     (the 2014 paper)
    no scale  (the bug):                train a·m,        eval a

with m ~ Bernoulli(1 − p) per unit. What the next layer sees is its pre-activation
z = W·drop(a) + b, and z is *linear* in the dropped units, so for every fixed input

    E_m[z_train] − b = (1 − p)·s_train · W·a,        z_eval − b = s_eval · W·a

(s the factors above). Inverted and classic dropout both give E[z_train] = z_eval exactly,
and this holds **whatever f is**: the sign or the range of a never enters, because the
expectation is taken over the mask, not over a. The argument "half the units are zeroed,
so the sum halves" is true for tanh's negative outputs as much as for sigmoid's positive
ones: each term W_ij·a_j is halved on average, whatever its sign. Without any scaling, the
next layer is trained on (1 − p)·W·a and tested on W·a: a gain of 1/(1 − p) = 2 at eval.

What rescaling does *not* preserve is the variance (dropout adds noise to z), so the mean of
the *next* nonlinearity, E[f(z_train)] vs f(z_eval), differs by a Jensen gap. Both correct
forms have one; its size depends on the trained weights, which differ between the two
forms, so the two gaps need not be equal. It is no argument against scaling: it comes
with either form. The experiment measures
both: the eval/train gain k of the pre-activation (least-squares slope of z_eval − b on
E[z_train] − b, averaged over masks), the mean of f(z), and the test accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gpunet as gn
from .base import Result, save_figure, try_plot

NAME = "dropout-scaling"
SEED = 0   # every random draw here (initial weights, batch order) is seeded with it
QUESTION = "Should dropout rescale by 1/(1−p) with tanh or ReLU, and what if the scaling is left out?"

P = 0.5
MASKS = 16          # train-mode passes averaged to estimate E_m[z_train]
ACTIVATIONS = {"sigmoid": (gn.nn.Sigmoid, "glorot_uniform"), "tanh": (gn.nn.Tanh, "glorot_uniform"),
               "relu": (gn.nn.ReLU, "he_normal")}


class UnscaledDropout(gn.nn.Module):
    """The bug: units are dropped in training but nothing is ever rescaled.

    train: y = x·m (m ~ Bernoulli(1 − p)),  eval: y = x.  backward: dx = dy·m (train).
    """

    def __init__(self, p=0.5):
        super().__init__()
        self.p, self._keep = p, None

    def forward(self, x):
        if not self.training:
            self._keep = None
            return x
        self._keep = gn.backend.device_of(x).uniform(x.shape, x.dtype) >= self.p
        return x * self._keep

    def backward(self, dy):
        return dy if self._keep is None else dy * self._keep

    def extra_repr(self):
        return f"p={self.p}, no scaling"


FORMS = {"inverted": lambda: gn.nn.Dropout(P, scale=True),
         "classic": lambda: gn.nn.Dropout(P, scale=False),
         "no scaling (bug)": lambda: UnscaledDropout(P)}
BUG = "no scaling (bug)"


def _net(act: str, form: str) -> gn.nn.Sequential:
    gn.manual_seed(SEED)
    cls, init = ACTIVATIONS[act]
    return gn.nn.Sequential(gn.nn.Flatten(), gn.nn.Linear(784, 256, init=init), cls(), FORMS[form](),
                            gn.nn.Linear(256, 128, init=init), cls(), gn.nn.Linear(128, 10, init=init))


def _next_layer(model, x):
    """z (pre-activation of the layer after dropout) and f(z), as float64 host arrays."""
    z = model[:5](x)   # Flatten, Linear, f, dropout, Linear
    fz = model[5](z)
    return (gn.backend.to_numpy(z).astype(np.float64), gn.backend.to_numpy(fz).astype(np.float64))


def measure(model, x) -> dict:
    """The eval/train gain of z, and the means of z and f(z) in both modes.

    Train mode is averaged over MASKS masks: E_m[z_train] and E_m[f(z_train)].
    """
    model.train()
    draws = [_next_layer(model, x) for _ in range(MASKS)]
    z_train = sum(d[0] for d in draws) / MASKS
    f_train = sum(d[1] for d in draws) / MASKS
    model.eval()
    z_eval, f_eval = _next_layer(model, x)
    model.train()
    b = gn.backend.to_numpy(model[4].bias.data).astype(np.float64)
    u_train, u_eval = z_train - b, z_eval - b          # W·drop(a): the part dropout acts on
    return {"gain": float((u_eval * u_eval).sum() / (u_train * u_eval).sum()),
            "mean_z_train": float(z_train.mean()), "mean_z_eval": float(z_eval.mean()),
            "mean_f_train": float(f_train.mean()), "mean_f_eval": float(f_eval.mean())}


def _train_one(act, form, train, test, probe, epochs, dev) -> dict:
    model = _net(act, form)
    opt = gn.optim.Adam(model.parameters(), lr=1e-3)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device=dev, seed=SEED)
    trainer.fit(train, epochs=epochs, batch_size=100)
    out = measure(model, probe)
    ev = trainer.evaluate(test)
    out.update(activation=act, form=form, accuracy=ev["accuracy"], test_loss=ev["loss"])
    return out


def _plot(results, out: Path) -> list:
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    acts, forms = list(ACTIVATIONS), list(FORMS)
    width = 0.8 / len(forms)
    for j, form in enumerate(forms):
        gains = [next(r["gain"] for r in results if r["activation"] == a and r["form"] == form) for a in acts]
        ax.bar(np.arange(len(acts)) + j * width, gains, width, label=form)
    ax.axhline(1.0, c="k", lw=0.8)
    ax.axhline(1 / (1 - P), c="gray", ls=":", lw=0.8)
    ax.set_xticks(np.arange(len(acts)) + width * (len(forms) - 1) / 2, acts)
    ax.set_ylabel("eval / train gain of the next pre-activation")
    ax.set_ylim(0, 1 / (1 - P) * 1.25)
    ax.legend(loc="upper left", ncol=3, fontsize=8)
    return save_figure(fig, out, "gain.png", dpi=120)


def _conclusion(results) -> str:
    def get(act, form):
        return next(r for r in results if r["activation"] == act and r["form"] == form)
    correct = [r for r in results if r["form"] != BUG]
    bug = [r for r in results if r["form"] == BUG]
    worst = max(correct, key=lambda r: abs(r["gain"] - 1))
    if abs(worst["gain"] - 1) < 0.02:
        parts = [f"With p = {P}, inverted and classic dropout keep the next layer's pre-activation "
                 f"unbiased for every activation tried ({', '.join(ACTIVATIONS)}): the eval/train gain is "
                 f"within {abs(worst['gain'] - 1):.1%} of 1 (worst: {worst['activation']}, {worst['form']}, "
                 f"{worst['gain']:.3f})."]
    else:
        off = [r for r in correct if abs(r["gain"] - 1) >= 0.02]
        parts = [f"With p = {P}, the forms meant to be unbiased are not all unbiased: "
                 + ", ".join(f"{r['activation']} {r['form']} has an eval/train gain of {r['gain']:.3f}"
                             for r in off) + "."]
    gains = ", ".join(f"{r['activation']} {r['gain']:.3f}" for r in bug)
    mean_bug = float(np.mean([r["gain"] for r in bug]))
    near = abs(mean_bug - 1 / (1 - P)) < 0.05 * (1 / (1 - P))
    parts.append(f"Without scaling the gain is {gains} against 1/(1−p) = {1 / (1 - P):.3f}: at test time "
                 f"the next layer receives inputs {mean_bug:.2f}× as large as in training"
                 + ("." if near else f", not the 1/(1−p) the missing factor predicts."))
    same = all(get(a, "classic")["mean_z_train"] == get(a, BUG)["mean_z_train"]
               for a in ACTIVATIONS)
    cmp = []
    for act in ACTIVATIONS:
        c, b = get(act, "classic"), get(act, BUG)
        cmp.append(f"{act} {c['accuracy']:.2%} → {b['accuracy']:.2%} (test loss {c['test_loss']:.3f} → "
                   f"{b['test_loss']:.3f})")
    head = ("The bug trains exactly the weights classic dropout trains (same masks, same train-time "
            "activations), so comparing the two isolates the missing eval scaling: "
            if same else "Classic dropout against the bug: ")
    worse = [act for act in ACTIVATIONS if get(act, BUG)["test_loss"] > get(act, "classic")["test_loss"]]
    d_acc = max(abs(get(a, BUG)["accuracy"] - get(a, "classic")["accuracy"]) for a in ACTIVATIONS)
    better = [act for act in ACTIVATIONS if act not in worse]
    loss_txt = (f"The bug raises the test loss for {', '.join(worse) or 'no activation'}"
                + (f" and lowers it for {', '.join(better)}." if better else "."))
    parts.append(head + "; ".join(cmp) + f". Accuracy moves by at most {d_acc:.2%}"
                 + (f": scaling W·a by {mean_bug:.2f} mostly keeps the argmax and changes the size of the logits. "
                    if d_acc < 0.01 else ". ") + loss_txt)
    gaps = "; ".join(f"{a}: {get(a, 'inverted')['mean_f_train'] - get(a, 'inverted')['mean_f_eval']:+.3g} "
                     f"inverted, {get(a, 'classic')['mean_f_train'] - get(a, 'classic')['mean_f_eval']:+.3g} "
                     f"classic" for a in ACTIVATIONS)
    size = {a: sum(abs(get(a, f)["mean_f_train"] - get(a, f)["mean_f_eval"]) for f in ("inverted", "classic"))
            for a in ACTIVATIONS}
    largest = max(size, key=size.get)
    both = all(abs(get(a, f)["mean_f_train"] - get(a, f)["mean_f_eval"]) > 1e-4
               for a in ACTIVATIONS for f in ("inverted", "classic"))
    parts.append(f"After the next nonlinearity the means differ (a Jensen gap): E[f(z_train)] − f(z_eval) is "
                 f"{gaps}; it is largest for {largest}"
                 + (", and it appears with both correct forms." if both else "."))
    return " ".join(parts)


def run(quick: bool, device: str, out: Path) -> Result:
    dev = gn.device(device)
    train, test = gn.data.load("mnist", "train"), gn.data.load("mnist", "test")
    n_train, epochs = (3000, 1) if quick else (20000, 3)
    train = train.subset(np.arange(n_train))
    if quick:
        test = test.subset(np.arange(2000))
    probe, _ = next(iter(gn.data.DataLoader(test, 1000, shuffle=False, device=dev)))
    results = [_train_one(act, form, train, test, probe, epochs, dev)
               for act in ACTIVATIONS for form in FORMS]
    rows = [{"f": r["activation"], "dropout": r["form"], "gain eval/train": r["gain"],
             "mean z train": r["mean_z_train"], "mean z eval": r["mean_z_eval"],
             "mean f(z) train": r["mean_f_train"], "mean f(z) eval": r["mean_f_eval"],
             "test loss": r["test_loss"], "test acc": r["accuracy"]} for r in results]
    findings = {f"{r['activation']}/{r['form']}": {"gain": r["gain"], "accuracy": r["accuracy"],
                                                   "test_loss": r["test_loss"]} for r in results}
    findings.update(p=P, expected_bug_gain=1 / (1 - P))
    return Result(NAME, QUESTION, columns=list(rows[0]), rows=rows, conclusion=_conclusion(results),
                  data={"results": results, "p": P, "masks": MASKS, "train_samples": n_train,
                        "epochs": epochs}, findings=findings, figures=_plot(results, out))
