"""The first six classic-question experiments, run end to end in --quick mode.

Each runs through the CLI (`python -m gpunet experiment NAME --quick --out DIR`) in a
child process with one BLAS thread (small matrices gain nothing from more, and a busy
2-core machine makes threaded OpenBLAS crawl), then reads the result.json the docs are
built from and checks the experiment's qualitative finding with a bound that could fail.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import gpunet as gn
from conftest import data_root


def run_quick(name, tmp_path):
    data_root("mnist")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "gpunet", "experiment", name, "--quick", "--device", "cpu",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["name"] == name and result["question"] and result["quick"] is True
    assert result["rows"] and all(set(result["columns"]) <= set(row) for row in result["rows"]), \
        f"{name}: every row needs every column {result['columns']}"
    assert len(result["conclusion"]) > 200, f"{name}: conclusion too short: {result['conclusion']!r}"
    return result["findings"]


def binary_entropy(p):
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def test_zero_init_softmax_breaks_symmetry_with_labels(tmp_path):
    f = run_quick("zero-init-softmax", tmp_path)
    assert f["distinct_rows_after_step1"] == 10
    assert f["min_pair_dist_after_step1"] > 0.01
    assert f["formula_max_err"] < 1e-5, "W after step 1 must equal −lr·(0.1·mean(x) − Σ_{y=c} x / N)"
    assert f["zero_init_accuracy"] > 0.8
    assert abs(f["zero_init_accuracy"] - f["random_init_accuracy"]) < 0.03


def test_zero_init_deep_stalls_at_sum_of_prior_entropies(tmp_path):
    f = run_quick("zero-init-deep", tmp_path)
    y = gn.data.load("mnist", "train").y[:5000]          # the quick run's training subset
    plateau = binary_entropy(np.bincount(y, minlength=10) / len(y)).sum()
    assert abs(f["zero_initial_loss"] - 10 * math.log(2)) < 0.01
    assert abs(f["zero_final_loss"] - plateau) < 0.05, (f["zero_final_loss"], plateau)
    assert f["zero_max_hidden_grad"] == 0.0, "every gradient but the output biases' must be exactly 0"
    assert abs(f["zero_accuracy"] - f["top_class_test_prior"]) < 1e-9
    assert f["constant_distinct_units"] == [1, 1, 1]
    assert f["he_accuracy"] > f["zero_accuracy"] + 0.3
    assert f["he_final_loss"] < plateau - 1.0


def test_dropout_scaling_gain(tmp_path):
    f = run_quick("dropout-scaling", tmp_path)
    expected = 1 / (1 - f["p"])
    for act in ("sigmoid", "tanh", "relu"):
        for form in ("inverted", "classic"):
            assert abs(f[f"{act}/{form}"]["gain"] - 1.0) < 0.03, (act, form, f[f"{act}/{form}"])
        assert abs(f[f"{act}/no scaling (bug)"]["gain"] - expected) < 0.05 * expected, act
    assert f["relu/inverted"]["accuracy"] > 0.5


def test_momentum_velocity_drift_matches_geometric_sum(tmp_path):
    f = run_quick("momentum-velocity-init", tmp_path)
    m, lr = f["momentum"], f["lr"]
    assert f["max_rel_err"] < 1e-6
    assert abs(f["geometric_sum"] - m / (1 - m)) < 1e-12
    assert abs(f["drift_ones"] - lr * m / (1 - m)) < 1e-9
    acc = f["accuracy"]
    assert acc["zeros"] > acc["ones"] + 0.3
    assert abs(acc["zeros"] - acc["normal(0, 0.01)"]) < 0.02


def test_soft_targets_float64_floor_far_below_float32(tmp_path):
    f = run_quick("soft-targets-precision", tmp_path)
    assert f["float32_reported_floor"] <= 4 * f["ulp_H_float32"], "float32 loss − H flattens at a few ulps of H"
    assert f["float64_reported_floor"] * 100 < f["float32_reported_floor"]
    assert f["float64_kl_floor"] * 100 < f["float32_kl_floor"]
    # Gradient steps go far below what the float32 loss value can show.
    assert f["float32_kl_floor"] * 100 < f["float32_reported_floor"]


def test_batch_size_changes_rounding_not_determinism(tmp_path):
    f = run_quick("batch-size-nondeterminism", tmp_path)
    assert f["repeat_ulps"] == 0.0, "the same call repeated must give the same bits"
    f64 = list(f["float64_batch_ulps"].values()) + list(f["float64_path_ulps"].values())
    f32 = list(f["float32_batch_ulps"].values()) + list(f["float32_path_ulps"].values())
    assert max(f64) <= 8, f"float64 paths differ by more than a few ulps: {f64}"
    assert max(f32) <= 16, f"float32 paths differ by more than a few ulps: {f32}"
    assert max(f32) > 0, "some summation order (batch size or einsum) should round differently"
    assert f["float32_max_ulps_from_exact"] <= 16
