"""Experiments 7-12 in quick mode: each run must reproduce its qualitative finding.

Every bound here could fail: a regression in a layer, a loss or the loader that
changes what the experiment measures shows up as a broken finding.
"""
import json
import math

import pytest

from gpunet import experiments

from conftest import data_root


def run_quick(name, tmp_path):
    result = experiments.run(name, quick=True, device="cpu", out=tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    for key in ("question", "columns", "rows", "conclusion", "findings"):
        assert saved[key], f"{name}: result.json has an empty {key!r}"
    assert saved["rows"] and all(set(r) <= set(saved["columns"]) for r in saved["rows"]), \
        f"{name}: a row has keys outside the columns {saved['columns']}"
    for fig in result.figures:
        assert (tmp_path / fig).is_file(), f"{name}: figure {fig} listed but not written"
    return result


def test_mse_vs_threshold(tmp_path):
    f = run_quick("mse-vs-threshold", tmp_path).findings
    assert (f["linear_mse_correct"], f["sigmoid_mse_correct"], f["threshold_correct"]) == (3, 4, 4), f
    assert f["sigmoid_ce_correct"] == 3 and f["sigmoid_ce_zero_init_correct"] == 3, f
    assert f["sigmoid_mse_zero_init_correct"] == 3, f  # the local minimum at w < 0
    assert f["best_rule_correct"] == 4, f
    assert f["linear_vs_closed_form"] < 1e-9, f            # least squares, analytic
    assert f["ce_vs_newton"] < 1e-4, f                     # logistic MLE by Newton
    assert f["sigmoid_mse_vs_thread"] < 1e-3, f            # the thread's printed end point
    assert 0.0 < f["grid_share_4_of_5"]["sigmoid+MSE"] < 1.0, f


def test_l1_on_softmax(tmp_path):
    data_root("mnist")
    f = run_quick("l1-on-softmax", tmp_path).findings
    assert f["dz_max_float32"] < 1e-6, f
    assert f["dz_max_float64"] < 1e-12, f
    assert f["penalty_rel_err_max"] < 1e-6, f
    assert f["weight_diff_max"] < 1e-5, f
    for key in ("float32_lam1", "float64_lam1"):
        assert f[key]["dp_max"] == pytest.approx(1.0), f  # ∂P/∂p = λ·sign(p) is not zero


def test_unnormalized_inputs(tmp_path):
    data_root("mnist")
    f = run_quick("unnormalized-inputs", tmp_path).findings
    assert f["grad_norm_ratio_initial"] > 50, f
    assert f["initial_loss_raw"] > 20 * f["initial_loss_normalized"], f
    assert f["diverged_raw"] and not f["diverged_normalized"], f
    assert f["accuracy_normalized"] > f["accuracy_raw"] + 0.3, f


def test_relu_last_layer(tmp_path):
    data_root("fashion-mnist")
    f = run_quick("relu-last-layer", tmp_path).findings
    assert f["zeroed_fraction_relu"] > 0.3 and f["zeroed_fraction_linear"] == 0.0, f
    assert f["true_class_zero_relu"] > 0.02, f
    assert f["accuracy_relu"] < f["accuracy_linear"] - 0.02, f


def test_generalized_dice(tmp_path):
    data_root("mnist")
    f = run_quick("generalized-dice", tmp_path).findings
    naive, bounded, zero = f["naive"], f["max"], f["zero"]
    assert naive["grad_start"] < 1e-8 < bounded["grad_start"], f  # 1/eps weights flatten the loss
    assert naive["final_loss"] > 0.999, f
    assert bounded["predicted_background"] > 0.99, f               # collapse onto background
    assert zero["foreground_iou"] > 0.4, f
    assert zero["foreground_iou"] > naive["foreground_iou"] + 0.2, f
    assert zero["digit_iou_mean"] > max(naive["digit_iou_mean"], bounded["digit_iou_mean"]), f


def test_batchnorm_placement(tmp_path):
    data_root("fashion-mnist")
    result = run_quick("batchnorm-placement", tmp_path)
    accs = result.findings["accuracies"]
    assert sorted(accs) == ["BN after ReLU", "BN before ReLU"]
    values = [a for v in accs.values() for a in v]
    assert len(values) == 6 and all(math.isfinite(a) and a > 0.2 for a in values), accs
    assert math.isfinite(result.findings["se_diff"]), result.findings
