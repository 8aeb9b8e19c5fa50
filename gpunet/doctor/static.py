"""Static checks: what can be known before the first step, from one sample batch.

Each check returns a list of Findings (empty when all is well). `check_model` runs
them all on one side-effect-free forward/backward (probe.py). The thresholds are
chosen so that the model zoo's defaults raise nothing: zero-initialized softmax
regression (no hidden layer, so no symmetry to break: the classic 92% result), the
He-initialized MLP, small_cnn and tf_cifar10_cnn on inputs scaled by 1/255.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from .findings import Finding
from .probe import host, leaves, run_probe
from .theory import init_loss, loss_kind

WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softmax)
PASS_THROUGH = (nn.Dropout, nn.Flatten)
INPUT_MAX, INPUT_RMS_LOW = 10.0, 1e-2     # |x| beyond 10, or RMS below 0.01: not normalised
DEAD_FRACTION = 0.5                        # more than half a layer's units never active
INIT_LOSS_FACTOR = 3.0                     # initial loss above 3× its uniform-prediction value


def check_symmetric_init(model) -> list:
    """GN101: a hidden weight layer (one feeding another weight layer) whose rows are identical.

    Units j and k of a layer with w_j = w_k compute the same value, get the same
    gradient and stay equal forever, so the layer acts as one unit. With all-zero
    weights and a ReLU after them, z = 0 gives relu'(0) = 0 and nothing moves at all.
    The output layer is exempt: the loss's per-class targets break its symmetry (why
    zero-initialized softmax regression still reaches 92% on MNIST).
    """
    layers = [(n, m) for n, m in leaves(model) if isinstance(m, WEIGHT_LAYERS)]
    out = []
    for name, m in layers[:-1]:
        w = host(m.weight.data).reshape(m.weight.shape[0], -1)
        if w.shape[0] < 2 or np.abs(w - w[:1]).max() > 0:
            continue
        value = float(w.flat[0]) if np.ptp(w) == 0 else "identical rows"
        out.append(Finding(
            "error", "GN101-symmetric-init",
            f"hidden layer {name} ({type(m).__name__}) starts with identical weights for all "
            f"{w.shape[0]} units: they compute the same value, get the same gradient and never differ.",
            {"layer": name, "units": int(w.shape[0]), "weight": value},
            "initialize hidden layers randomly: init=\"he_normal\" before ReLU, \"glorot_uniform\" before tanh"))
    return out


def _last_layer(model):
    """The last leaf module that changes values (Dropout and Flatten are skipped)."""
    for name, m in reversed(leaves(model)):
        if not isinstance(m, PASS_THROUGH):
            return name, m
    return None, None


def check_logits_activation(model, loss) -> list:
    """GN102: ReLU/sigmoid/softmax/tanh on the logits of a loss that applies its own squashing.

    SoftmaxCrossEntropy and BCEWithLogits expect raw logits z ∈ ℝ. ReLU clips z < 0 to
    0 with zero gradient (a class pushed below 0 can never come back); a softmax or
    sigmoid before them squashes twice, leaving logits in [0, 1] and the loss near ln C.
    """
    kind = loss_kind(loss)
    name, last = _last_layer(model)
    if kind not in ("ce", "bce") or not isinstance(last, ACTIVATIONS):
        return []
    loss_name = "SoftmaxCrossEntropy" if kind == "ce" else "BCEWithLogits"
    return [Finding(
        "error", "GN102-logits-activation",
        f"the model ends in {type(last).__name__} ({name}) but {loss_name} expects raw logits: "
        f"the output is squashed before the loss applies its own {'softmax' if kind == 'ce' else 'sigmoid'}.",
        {"last_layer": type(last).__name__, "loss": loss_name},
        f"remove the final {type(last).__name__}: end the model with a Linear layer")]


def check_inputs(model, x) -> list:
    """GN103: inputs outside the scale the first layer's init assumes.

    He/Glorot initialization picks Var(w) so that Var(z) ≈ 2·E[x²] (He) per layer,
    assuming E[x²] ≈ 1 or less. Pixels left at 0–255 (RMS ≈ 85 for MNIST) make the
    first pre-activations ~100× too large: huge initial loss, saturated or dead units.
    """
    xh = host(x).astype(np.float64)
    rms, peak = float(np.sqrt((xh ** 2).mean())), float(np.abs(xh).max())
    if peak <= INPUT_MAX and (rms >= INPUT_RMS_LOW or peak == 0):
        return []
    evidence = {"max": peak, "mean": float(xh.mean()), "std": float(xh.std()), "rms": rms}
    first = next((m for _, m in leaves(model) if isinstance(m, WEIGHT_LAYERS)), None)
    if first is not None:
        w = host(first.weight.data).reshape(first.weight.shape[0], -1)
        evidence["first_layer_gain"] = float(np.sqrt(w.shape[1] * w.var()))  # std(z) ≈ gain · rms(x)
    big = peak > INPUT_MAX
    what = f"max |x| = {peak:.4g}" if big else f"RMS {rms:.3g}"
    return [Finding(
        "warning", "GN103-input-scale",
        f"inputs are {'far larger' if big else 'far smaller'} than the unit scale the first layer was "
        f"initialized for ({what}; pixels left at 0–255?).",
        evidence, "scale inputs to [0, 1] (x / 255) or standardize them ((x − mean) / std)")]


def _one_of_many(y, classes) -> bool:
    """True for integer labels, or (N, C) targets with exactly one 1 (rest 0) per row."""
    y = host(y)
    if y.ndim == 1 or y.dtype.kind in "iub":
        return classes > 2
    if y.ndim != 2 or y.shape[1] <= 2:
        return False
    binary = np.isin(y, (0, 1)).all()
    return bool(binary and (y.sum(axis=1) == 1).all())


def check_loss_target(model, loss, y, classes) -> list:
    """GN104/GN105: a loss that does not fit single-label classification.

    MSE on class labels treats them as numbers (or one-hot vectors as a regression
    target): its gradient 2(p − t) vanishes as a softmax saturates and it needs far
    more steps than cross-entropy. C independent sigmoids with BCE on a problem with
    exactly one class per sample do not share probability mass; they learn the
    priors first and plateau at Σ_c H(π_c) (10·H(0.1) ≈ 3.25 for ten balanced classes).
    """
    kind = loss_kind(loss)
    _, last = _last_layer(model)
    if kind == "mse" and (host(y).dtype.kind in "iu" or _one_of_many(y, classes)):
        return [Finding(
            "warning", "GN104-mse-on-labels",
            f"MSE on class labels ({classes} classes): labels are categories, not numbers.",
            {"loss": "MSE", "classes": classes, "target_shape": list(np.shape(y))},
            "use gn.losses.SoftmaxCrossEntropy on raw logits with integer labels")]
    sigmoid_bce = kind == "bce" or (kind == "bce_prob" and isinstance(last, nn.Sigmoid))
    if sigmoid_bce and _one_of_many(y, classes):
        return [Finding(
            "warning", "GN105-bce-one-of-many",
            f"{classes} independent sigmoids with BCE, but every sample has exactly one class: "
            "the outputs do not compete, and the loss tends to plateau at the priors' value.",
            {"classes": classes, "positives_per_row": 1},
            "use gn.losses.SoftmaxCrossEntropy (one softmax over the classes) on raw logits")]
    return []


def check_dead_relu(probe, batch_size) -> list:
    """GN106: a ReLU layer with most units never active (y > 0) on the sample batch.

    A unit with y = 0 for every input gets no gradient (relu'(z) = 0 for z ≤ 0) and
    cannot recover. Causes: unscaled inputs with a large negative drive, a large
    negative bias, or a learning rate that kicked the units below zero.
    """
    bad = {n: f for n, f in probe.relu_dead.items() if f > DEAD_FRACTION}
    if not bad or batch_size < 16:  # too few samples to call a unit dead
        return []
    worst = max(bad, key=bad.get)
    return [Finding(
        "error" if bad[worst] >= 1.0 else "warning", "GN106-dead-relu",
        f"{bad[worst]:.0%} of the units of ReLU {worst} are never active on {batch_size} samples: "
        "they pass no gradient.",
        {"layer": worst, "dead_fraction": bad[worst], "layers_over_50pct": len(bad)},
        "use he_normal init with zero biases, scale the inputs, or lower the lr; LeakyReLU never dies")]


def check_init_loss(probe, loss, classes) -> list:
    """GN107: the loss at step 0 far above its value with uniform predictions.

    With small random logits the softmax is near uniform and the loss is ≈ ln C (C·ln 2
    per row for C-way BCE). A much larger start means confidently wrong logits: inputs
    or the last layer's init are too large, and the first steps are spent undoing that.
    """
    expected = init_loss(loss, classes)
    if expected is None or not math.isfinite(probe.loss) or probe.loss <= INIT_LOSS_FACTOR * expected:
        return []
    return [Finding(
        "warning", "GN107-init-loss",
        f"initial loss {probe.loss:.4g} is {probe.loss / expected:.1f}× its expected value "
        f"{expected:.4g} with near-uniform predictions: the logits start large.",
        {"loss": probe.loss, "expected": expected, "logits_std": float(probe.logits.std())},
        "scale the inputs and use a variance-preserving init (glorot_uniform or zeros on the last layer)")]
