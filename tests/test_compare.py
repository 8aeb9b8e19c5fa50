"""`gpunet compare` and gn.compare: the expected single- vs multi-device pattern, measured."""
import json
import os
import subprocess
import sys

import pytest

import gpunet as gn
from gpunet import compare


@pytest.fixture(scope="module")
def digits():
    return gn.data.load("digits", "train"), gn.data.load("digits", "test")


def make_model():
    gn.manual_seed(0)
    return gn.models.mlp([64, 32, 10])


def run(cfg, digits, **kw):
    train, test = digits
    args = dict(batch_size=64, lr=0.05, epochs=2, dtype="float64")
    args.update(kw)
    return compare.run_config(cfg, train, test, make_model, **args)


def test_grid():
    grid = compare.configurations((1, 2, 4), ("mean", "sum"), ("global", "replica"))
    assert len(grid) == 1 + 2 * 2 * 2 and grid[0].label == "1 device"
    assert {c.replicas for c in grid} == {1, 2, 4}


def test_mean_with_global_batch_kept_is_the_single_device_run(digits):
    one = run(compare.RunSpec(), digits)
    two = run(compare.RunSpec(2, "mean", "global"), digits)
    assert two["global_batch"] == 64 and two["per_replica_batch"] == 32
    assert abs(one["final_loss"] - two["final_loss"]) < 1e-12
    assert one["curves"]["test_accuracy"] == two["curves"]["test_accuracy"]


def test_sum_is_a_larger_step(digits):
    summed = run(compare.RunSpec(2, "sum", "global"), digits)
    doubled = run(compare.RunSpec(), digits, lr=0.1)
    assert summed["effective_lr"] == pytest.approx(0.1)
    assert abs(summed["final_loss"] - doubled["final_loss"]) < 1e-12
    replica = run(compare.RunSpec(2, "mean", "replica"), digits)
    assert replica["global_batch"] == 128 and replica["steps_per_epoch"] == 12


def test_linear_scaling_is_reported(digits):
    r = run(compare.RunSpec(2, "mean", "replica", "linear", 1.0), digits)
    assert r["lr"] == pytest.approx(0.1) and "lr×2" in r["label"] and "warmup" in r["label"]


def test_conclusion_is_computed_from_the_numbers(digits):
    records = [run(compare.RunSpec(), digits), run(compare.RunSpec(2, "sum", "global"), digits)]
    text = compare.conclusion(records)
    assert f"{records[0]['final_test_accuracy']:.4f}" in text and "2× larger" in text
    records[1]["final_test_accuracy"] = 0.5
    assert "0.5000" in compare.conclusion(records)


def test_cli_writes_json_and_table(tmp_path):
    env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="200")
    r = subprocess.run([sys.executable, "-m", "gpunet", "compare", "--dataset", "digits", "--replicas", "1,2",
                        "--reduce", "mean", "--keep", "global", "--epochs", "1", "--batch-size", "64",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((tmp_path / "compare.json").read_text())
    assert [rec["label"] for rec in data["records"]] == ["1 device", "2×, mean, global batch kept"]
    assert "single vs multi-device" in r.stdout and data["devices"] == ["cpu"]
    bad = subprocess.run([sys.executable, "-m", "gpunet", "compare", "--devices", "cpu", "--replicas", "1,2"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "--replicas" in bad.stdout


@pytest.mark.skipif(not gn.parallel.mpi.mpi_available(), reason='mpi4py is not installed (pip install "gpunet[mpi]")')
def test_cli_processes_runs_real_ranks_and_says_so(tmp_path):
    """--processes: the 2-way configuration runs as 2 MPI processes; float64, global batch
    kept, it equals the one-device run to 1e-12 and the table says how each row ran."""
    env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="250")
    r = subprocess.run([sys.executable, "-m", "gpunet", "compare", "--dataset", "digits", "--replicas", "1,2",
                        "--reduce", "mean", "--keep", "global", "--epochs", "1", "--batch-size", "64",
                        "--dtype", "float64", "--processes", "--timeout", "30", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((tmp_path / "compare.json").read_text())
    one, two = data["records"]
    assert two["label"] == "2 processes, mean, global batch kept" and two["ran_as"] == "2 MPI processes"
    assert one["ran_as"] == "1 process" and "2 MPI processes" in r.stdout
    assert abs(one["final_loss"] - two["final_loss"]) < 1e-12
    assert one["curves"]["test_accuracy"] == two["curves"]["test_accuracy"]
