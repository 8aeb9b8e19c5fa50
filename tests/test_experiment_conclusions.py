"""Every experiment's conclusion follows its measurement: change the setup so the
measurement flips, and the sentence that states it must flip too.

The baseline is the committed quick result (docs/results/quick/NAME.json, what
`gpunet experiment NAME --quick --check` compares with); the flipped run is a quick run
with one setup constant of the experiment's module changed.
"""
import json

import numpy as np
import pytest

import gpunet as gn
from gpunet import experiments

from conftest import data_root


def baseline(name):
    return json.loads(experiments.committed_path(name, quick=True).read_text())["conclusion"]


def flipped(name, tmp_path):
    return experiments.run(name, quick=True, device="cpu", out=tmp_path)


def check(name, tmp_path, before, after, gone=()):
    """`before` is in the baseline conclusion and not in the flipped one; `after` the reverse."""
    base = baseline(name)
    result = flipped(name, tmp_path)
    for phrase in before:
        assert phrase in base, f"{name}: baseline lacks {phrase!r}: {base}"
        assert phrase not in result.conclusion, f"{name}: {phrase!r} survived the flip: {result.conclusion}"
    for phrase in after:
        assert phrase not in base, f"{name}: baseline already has {phrase!r}"
        assert phrase in result.conclusion, f"{name}: flipped conclusion lacks {phrase!r}: {result.conclusion}"
    for phrase in gone:
        assert phrase not in result.conclusion, f"{name}: {phrase!r} in the flipped conclusion"
    return result


def test_zero_init_softmax_flips_with_a_batch_missing_classes(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("zero-init-softmax")
    monkeypatch.setattr(mod, "BATCH", 4)   # 4 images cannot hold 10 classes
    r = check("zero-init-softmax", tmp_path, ["ten weight rows are 10 distinct vectors", "yet their weight rows differ"],
              ["of the 10 weight rows are distinct after one step", "classes absent from the first batch of 4"])
    assert r.findings["distinct_rows_after_step1"] <= 5


def test_zero_init_deep_flips_when_the_inits_are_not_symmetric(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("zero-init-deep")
    inits = dict(mod.INITS)
    inits["zeros"] = lambda fan_in: "he_normal"
    inits["constant 1/fan_in"] = lambda fan_in: gn.nn.init.normal(std=0.05)
    monkeypatch.setattr(mod, "INITS", tuple(inits.items()))
    r = check("zero-init-deep", tmp_path,
              ["Every gradient except the 10 output biases' was exactly 0.0", "a net one unit wide",
               "(all units of a layer identical"],
              ["the zero-init symmetry was not exact here", "(the symmetry broke", "different units per layer"])
    assert min(r.findings["constant_distinct_units"]) > 1


def test_dropout_scaling_flips_when_inverted_dropout_loses_its_scale(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("dropout-scaling")
    monkeypatch.setitem(mod.FORMS, "inverted", lambda: mod.UnscaledDropout(mod.P))
    r = check("dropout-scaling", tmp_path, ["keep the next layer's pre-activation unbiased"],
              ["are not all unbiased", "inverted has an eval/train gain of"])
    assert abs(r.findings["relu/inverted"]["gain"] - 2.0) < 0.1


def test_momentum_velocity_flips_when_the_drift_is_small(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("momentum-velocity-init")
    monkeypatch.setattr(mod, "M", 0.05)    # drift lr·m/(1−m) ≈ 0.005 per weight instead of 0.1
    # The ReLUs survive the small push: in the sentence on v0 = ones, "dead (vs ...)" gives way to
    # "as many as for zeros".
    def ones_sentence(text):
        return next(s for s in text.split(". ") if s.startswith("v0 = ones "))
    r = flipped("momentum-velocity-init", tmp_path)
    before, after = ones_sentence(baseline("momentum-velocity-init")), ones_sentence(r.conclusion)
    assert "of the hidden ReLUs are dead (vs" in before and "as many as for zeros" not in before, before
    assert "as many as for zeros" in after and "dead (vs" not in after, after
    assert abs(r.findings["drift_ones"] - 0.1 * 0.05 / 0.95) < 1e-9


def test_soft_targets_flips_when_sgd_does_not_get_past_the_loss_floor(monkeypatch, tmp_path):
    mod = experiments.get("soft-targets-precision")
    monkeypatch.setattr(mod, "LR", 1e-3)
    check("soft-targets-precision", tmp_path, ["float32 stalls the *loss value* at"],
          ["not far below the float32 loss floor"])


def test_batch_size_flips_when_every_summation_order_agrees(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("batch-size-nondeterminism")

    def zero_model(dtype):
        return gn.models.mlp([784, 256, 128, 10], init="zeros").to(dtype=dtype).eval()
    monkeypatch.setattr(mod, "_model", zero_model)
    check("batch-size-nondeterminism", tmp_path, ["different float32 results"],
          ["every batch size gives sample 0 the same bits", "there are no differences to shrink"])


def test_unnormalized_inputs_flips_when_both_runs_are_scaled_alike(monkeypatch, tmp_path):
    data_root("mnist")
    data_root("fashion-mnist")
    mod = experiments.get("unnormalized-inputs")
    monkeypatch.setattr(mod, "SCALES", {"x / 255": 1 / 255, "raw 0–255": 1 / 255})
    r = check("unnormalized-inputs", tmp_path, ["inputs 255× larger", "The outcomes differ"],
              ["inputs of the same scale (ratio 1.00)", "make no setup diverge",
               "predict different classes for 0.0%"])
    assert not r.findings["diverged_raw"]


def test_relu_last_layer_flips_with_relu_on_both(monkeypatch, tmp_path):
    data_root("fashion-mnist")
    mod = experiments.get("relu-last-layer")
    build = mod.build

    def relu_on_both(variant, seed, dev):
        return build("ReLU logits", seed, dev)
    monkeypatch.setattr(mod, "build", relu_on_both)
    check("relu-last-layer", tmp_path, ["With linear logits none of these states occurs"],
          ["With the variant called linear logits the same states occur"])


def test_mse_vs_threshold_flips_without_the_outlier(monkeypatch, tmp_path):
    mod = experiments.get("mse-vs-threshold")
    monkeypatch.setattr(mod, "Y", np.array([0.0, 1.0, 1.0, 0.0, 1.0]))   # x = 9 now of class 1
    check("mse-vs-threshold", tmp_path, ["its slope is negative", "turns the slope negative"],
          ["its slope is positive", "does no better than least squares"])


def test_l1_on_softmax_flips_with_an_l2_penalty(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("l1-on-softmax")
    monkeypatch.setattr(mod, "PENALTY", "L2")   # λ·Σp² is not constant: its gradient survives the softmax
    check("l1-on-softmax", tmp_path, ["it is a constant", "the regularizer does nothing beyond rounding"],
          ["The penalty is not a constant", "far above rounding", "this penalty changes training"])


def test_generalized_dice_flips_when_every_variant_drops_absent_classes(monkeypatch, tmp_path):
    data_root("mnist")
    mod = experiments.get("generalized-dice")
    monkeypatch.setattr(mod, "VARIANTS", {k: "zero" for k in mod.VARIANTS})
    check("generalized-dice", tmp_path, ["the net does not train", "collapses onto background"],
          ["the net trains", "does not collapse"])


def test_batchnorm_placement_flips_when_both_placements_are_the_same(monkeypatch, tmp_path):
    data_root("fashion-mnist")
    mod = experiments.get("batchnorm-placement")
    monkeypatch.setattr(mod, "PLACEMENTS", {"BN before ReLU": True, "BN after ReLU": True})
    r = check("batchnorm-placement", tmp_path, ["BN after ReLU is higher in"],
              ["the two placements give identical accuracies in every seed"])
    assert r.findings["per_seed_diff"] == [0.0] * len(r.findings["per_seed_diff"])


def test_multi_gpu_averaging_flips_when_the_batch_is_not_doubled(monkeypatch, tmp_path):
    mod = experiments.get("multi-gpu-averaging")
    configs = mod._configs

    def same_batch():
        out = configs()
        out[2] = (out[2][0], gn.compare.RunSpec(2, "mean", "global"))   # B/2 per replica: the global batch stays B
        return out
    monkeypatch.setattr(mod, "_configs", same_batch)
    check("multi-gpu-averaging", tmp_path, ["at the same lr falls behind"],
          ["does not fall measurably behind one device"])


@pytest.mark.parametrize("a, b, paired, resolved", [
    ([0.80, 0.81, 0.82, 0.83], [0.70, 0.72, 0.71, 0.73], True, True),
    ([0.80, 0.70, 0.82, 0.71], [0.75, 0.76, 0.74, 0.77], True, False),
    ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], True, False),
])
def test_difference_interval(a, b, paired, resolved):
    from gpunet.experiments.base import difference, difference_words
    d = difference(a, b, paired=paired)
    diffs = np.subtract(a, b)
    assert d["mean"] == pytest.approx(diffs.mean())
    assert d["hi"] - d["mean"] == pytest.approx({3: 4.303, 4: 3.182}[len(a)] * diffs.std(ddof=1) / np.sqrt(len(a)))
    assert d["resolved"] is resolved
    words = difference_words(d, "A")
    assert ("excludes zero" in words) is resolved and ("includes zero" in words) is (not resolved)
