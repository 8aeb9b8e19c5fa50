"""An L1 activity regularizer on softmax outputs: a constant penalty with a zero gradient.

Put `activity_regularizer=L1(λ)` on a softmax output p = softmax(z) of a batch of N rows.
Every p_ij is positive and every row sums to 1, so

    P(p) = λ · Σ_ij |p_ij| = λ · Σ_i Σ_j p_ij = λ · N,

a constant. The thread's answer says that the *gradient* is still non-zero: ∂P/∂p_ij =
λ·sign(p_ij) = λ for every entry. That is the gradient with respect to the
probabilities, which are not parameters. What reaches the weights is the gradient
with respect to the logits, through the softmax Jacobian J_jk = ∂p_j/∂z_k = p_j(δ_jk − p_k):

    ∂P/∂z_k = Σ_j λ · p_j (δ_jk − p_k) = λ · p_k · (1 − Σ_j p_j) = 0.

J^T annihilates the all-ones vector because Σ_j p_j = 1 for every z (a constant has a
zero derivative). So the regularizer changes nothing: training with and without it
follows the same trajectory, up to the rounding of 1 − Σp (about 1e-7 in float32 and
1e-16 in float64, times λ). An improvement seen with it comes from elsewhere (a
different random start, data order or non-deterministic kernels), not from the penalty.

The experiment trains the same MLP on MNIST from the same weights and batch order with
and without the L1 penalty on its softmax, in float32 and float64, with the thread's
λ = 1e-5 and a strong λ = 1. The loss is SoftmaxCrossEntropy on the logits plus the
penalty on `gn.nn.Softmax()(logits)`; backward adds `softmax.backward(l1.grad(p))` to the
cross-entropy's dlogits, which is the chain rule written out. It records, at every
step, the penalty against λ·N, the largest |∂P/∂p| and the largest |∂P/∂z|, and at the
end the largest weight difference between the two runs.
"""
from __future__ import annotations

import numpy as np

import gpunet as gn

from .base import Result, save_figure, try_plot

NAME = "l1-on-softmax"
QUESTION = ("Does an L1 activity regularizer on a softmax output do anything, given that the "
            "outputs are positive and sum to 1?")

LAMBDAS = (1e-5, 1.0)
DTYPES = ("float32", "float64")
SEED, LR, BATCH = 0, 0.1, 128
PENALTY = "L1"          # the regularizer put on the softmax output: gn.regularizers.<PENALTY>(λ)


def data(quick):
    train = gn.data.load("mnist", split="train")
    test = gn.data.load("mnist", split="test")
    return (train[:2000], test[:1000]) if quick else (train[:30000], test)


def build(dev, dtype):
    gn.manual_seed(SEED)  # the same initial weights for every run
    return gn.models.mlp([784, 64, 10]).to(dev, dtype=dtype)


def train(train_ds, dev, dtype, lam, epochs, nudge=0.0):
    """SGD on cross-entropy (+ L1(λ) on the softmax output when lam > 0). Returns model, stats.

    nudge > 0 multiplies dlogits by (1 + nudge) instead: the control, a perturbation of one
    unit in the last place, to show how far training amplifies rounding-sized differences.
    """
    model = build(dev, dtype)
    ce, softmax = gn.losses.SoftmaxCrossEntropy(), gn.nn.Softmax()
    l1 = getattr(gn.regularizers, PENALTY)(lam) if lam > 0 else None
    opt = gn.optim.SGD(model.parameters(), lr=LR)
    loader = gn.data.DataLoader(train_ds, BATCH, shuffle=True, device=dev, seed=SEED, dtype=dtype)
    xp = dev.xp
    worst = {"penalty_rel": xp.zeros((), dtype="float64"), "dp": xp.zeros((), dtype="float64"),
             "dz": xp.zeros((), dtype="float64")}
    for _ in range(epochs):
        for x, y in loader:
            logits = model(x)
            ce.forward(logits, y)
            dz = ce.backward()
            if nudge:
                dz = dz * (1.0 + nudge)
            if l1 is not None:
                p = softmax(logits)
                dp = l1.grad(p)                       # λ·sign(p) = λ: not zero
                dz_l1 = softmax.backward(dp)          # λ·p·(1 − Σp): zero up to rounding
                n = x.shape[0]
                rel = xp.abs(l1.penalty(p).astype("float64") / (lam * n) - 1.0)
                worst["penalty_rel"] = xp.maximum(worst["penalty_rel"], rel)
                worst["dp"] = xp.maximum(worst["dp"], xp.abs(dp).max())
                worst["dz"] = xp.maximum(worst["dz"], xp.abs(dz_l1).max())
                dz = dz + dz_l1
            model.backward(dz)
            opt.step()
            opt.zero_grad()
    return model, {k: float(v) for k, v in worst.items()}  # sync: once per run


def weights(model):
    return [gn.backend.to_numpy(p.data).astype(np.float64) for p in model.parameters()]


def max_weight_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(weights(a), weights(b)))


def accuracy(model, test_ds, dev, dtype):
    opt = gn.optim.SGD(model.parameters(), lr=LR)  # never stepped: evaluate only
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device=dev)
    return trainer.evaluate(gn.data.DataLoader(test_ds, 1000, shuffle=False, device=dev, dtype=dtype))[
        "accuracy"]


def measure(quick, dev):
    train_ds, test_ds = data(quick)
    epochs = 1 if quick else 2
    rows, findings = [], {}
    for dtype in DTYPES:
        base, _ = train(train_ds, dev, dtype, 0.0, epochs)
        acc0 = accuracy(base, test_ds, dev, dtype)
        ulp = float(np.finfo(dtype).eps)
        control, _ = train(train_ds, dev, dtype, 0.0, epochs, nudge=ulp)
        findings[f"{dtype}_control_weight_diff"] = max_weight_diff(control, base)
        rows.append({"dtype": dtype, "λ": f"0, dz×(1+{ulp:.1e})",
                     "max |ΔW|": findings[f"{dtype}_control_weight_diff"],
                     "acc with L1": accuracy(control, test_ds, dev, dtype), "acc without": acc0})
        for lam in LAMBDAS:
            model, worst = train(train_ds, dev, dtype, lam, epochs)
            diff = max_weight_diff(model, base)
            rows.append({"dtype": dtype, "λ": lam, "|penalty/(λN) − 1|": worst["penalty_rel"],
                         "max |∂P/∂p|": worst["dp"], "max |∂P/∂z|": worst["dz"],
                         "max |∂P/∂z| / λ": worst["dz"] / lam, "max |ΔW|": diff,
                         "acc with L1": accuracy(model, test_ds, dev, dtype), "acc without": acc0})
            key = f"{dtype}_lam{lam:g}"
            findings[key] = {"penalty_rel_err": worst["penalty_rel"], "dp_max": worst["dp"],
                             "dz_max": worst["dz"], "weight_diff": diff}
    l1_rows = [r for r in rows if r["λ"] in LAMBDAS]
    findings["dz_max_float32"] = max(r["max |∂P/∂z|"] for r in l1_rows if r["dtype"] == "float32")
    findings["dz_max_float64"] = max(r["max |∂P/∂z|"] for r in l1_rows if r["dtype"] == "float64")
    for dtype in DTYPES:
        findings[f"{dtype}_weight_diff"] = max(r["max |ΔW|"] for r in l1_rows if r["dtype"] == dtype)
    findings["weight_diff_max"] = max(r["max |ΔW|"] for r in l1_rows)
    findings["penalty_rel_err_max"] = max(r["|penalty/(λN) − 1|"] for r in l1_rows)
    return rows, findings, {"train_samples": len(train_ds), "test_samples": len(test_ds), "epochs": epochs}


def conclude(rows, f, setup):
    strong = {r["dtype"]: r for r in rows if r["λ"] == max(LAMBDAS)}
    dp, dz32, dz64 = (strong["float32"]["max |∂P/∂p|"], strong["float32"]["max |∂P/∂z| / λ"],
                      strong["float64"]["max |∂P/∂z| / λ"])
    l1_rows = [r for r in rows if r["λ"] in LAMBDAS]
    gap = max(abs(r["acc with L1"] - r["acc without"]) for r in l1_rows)
    acc_txt = ("Test accuracy is identical with and without the penalty in every run" if gap == 0 else
               f"Test accuracy differs by at most {gap:.4f} between the runs")
    diff = {(r["dtype"], r["λ"]): r["max |ΔW|"] for r in l1_rows}
    small, big = min(LAMBDAS), max(LAMBDAS)
    c32, c64 = f["float32_control_weight_diff"], f["float64_control_weight_diff"]
    constant = f["penalty_rel_err_max"] < 1e-5
    rounding = dz32 < 1e-5 and dz64 < 1e-12          # ∂P/∂z / λ at the level of 1 − Σp's rounding
    like_nudge = diff[("float32", small)] <= 10 * max(c32, 1e-30) and diff[("float64", small)] <= 10 * max(c64, 1e-30)
    pen = (f"The penalty equals λ·N to a relative {f['penalty_rel_err_max']:.1e} at every step: it is a constant."
           if constant else
           f"The penalty is not a constant: it departs from λ·N by up to {f['penalty_rel_err_max']:.2g} relative.")
    grad = (f"Its gradient with respect to the probabilities reaches {dp:.3g} for λ = {big:g}, but after the "
            f"softmax Jacobian the gradient with respect to the logits is at most {f['dz_max_float32']:.1e} in "
            f"float32 and {f['dz_max_float64']:.1e} in float64 ({dz32:.1e}·λ and {dz64:.1e}·λ)"
            + (": the size of the rounding of 1 − Σp, so no gradient beyond rounding reaches the weights."
               if rounding else ": far above rounding, so the penalty does push the weights."))
    amplified = (f"With the thread's λ = {small:g} the weights with and without the penalty differ by at most "
                 f"{diff[('float32', small)]:.1e} in float32 and {diff[('float64', small)]:.1e} in float64, "
                 f"{'the same order as' if like_nudge else 'above'} a one-ulp nudge of the cross-entropy gradient "
                 f"with no penalty at all ({c32:.1e} and {c64:.1e}). With λ = {big:g} they differ by "
                 f"{diff[('float32', big)]:.1e} in float32 "
                 f"({'above' if diff[('float32', big)] > 10 * max(c32, 1e-30) else 'the same order as'} the "
                 f"control) and {diff[('float64', big)]:.1e} in float64 "
                 f"({'above' if diff[('float64', big)] > 10 * max(c64, 1e-30) else 'the same order as'} the "
                 f"control).")
    verdict = (f"At the thread's λ = {small:g} the regularizer does nothing beyond rounding; a gain seen with it "
               "comes from some other difference between the runs." if constant and rounding and like_nudge else
               "So this penalty changes training: its effect on the weights is larger than rounding.")
    return (f"{pen} {grad} {amplified} {acc_txt} ({strong['float32']['acc without']:.4f} without it in float32, "
            f"{setup['train_samples']} MNIST training images). {verdict}")


def plot(rows, out):
    plt = try_plot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['dtype']}\nλ={r['λ']}" if isinstance(r["λ"], float) else f"{r['dtype']}\nno penalty,\n1-ulp nudge"
              for r in rows]
    colors = ["tab:gray" if not isinstance(r["λ"], float) else "tab:blue" if r["dtype"] == "float32" else "tab:red"
              for r in rows]
    ax.bar(range(len(rows)), [max(r["max |ΔW|"], 1e-300) for r in rows], color=colors)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("max |W_with − W_without| after training")
    ax.set_title(f"{PENALTY} on the softmax output: weight change against a one-ulp control (gray)", fontsize=9)
    return save_figure(fig, out, "l1_on_softmax.png", dpi=110)


def run(quick: bool, device: str, out) -> Result:
    dev = gn.device(device)
    rows, findings, setup = measure(quick, dev)
    columns = ["dtype", "λ", "|penalty/(λN) − 1|", "max |∂P/∂p|", "max |∂P/∂z|", "max |∂P/∂z| / λ",
               "max |ΔW|", "acc with L1", "acc without"]
    return Result(NAME, QUESTION, columns=columns, rows=rows, conclusion=conclude(rows, findings, setup),
                  data={**setup, "lr": LR, "batch_size": BATCH, "model": "mlp [784, 64, 10]", "penalty": PENALTY},
                  findings=findings, figures=plot(rows, out))
