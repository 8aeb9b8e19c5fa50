"""The training benchmark's harness on tiny workloads (seconds, not minutes).

With PyTorch installed, its twin must start from gpunet's weights and reach the same
losses (the check the benchmark itself enforces); without it the gpunet side still runs
and the report says there was no reference. No speed is asserted: speed lives in the
benchmark's JSON, not in tests.
"""
import argparse
import importlib.util
import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.bench import host, torch_twin
from gpunet.bench import train as bt
from gpunet.cli import bench as cli_bench

HAVE_TORCH = torch_twin.available()

TINY = {
    "tiny-mlp": bt.Workload("tiny-mlp", lambda: gn.models.mlp([12, 16, 10]),
                            bt.random_images((1, 3, 4)), 8, lr=0.05),
    "tiny-cnn": bt.Workload("tiny-cnn", lambda: gn.models.small_cnn(1, 10, image_size=8, width=4, hidden=8),
                            bt.random_images((1, 8, 8)), 8, lr=0.05),
    "tiny-cifar": bt.Workload("tiny-cifar", lambda: gn.nn.Sequential(
        gn.nn.Conv2d(3, 4, 5, padding=2), gn.nn.ReLU(), gn.nn.MaxPool2d(3, stride=2, padding=1),
        gn.nn.Flatten(), gn.nn.Linear(4 * 4 * 4, 10)), bt.random_images((3, 8, 8)), 8, lr=0.05),
}


def tiny_args(**kw):
    base = dict(warmup=1, seconds=0.01, rounds=2, pool=3, seed=0, check_steps=6, check_rtol=1e-3)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("name", list(TINY))
def test_workload_row_and_loss_agreement(name):
    row = bt.run_workload(TINY[name], gn.device("cpu"), tiny_args(), with_torch=HAVE_TORCH)
    assert row["gpunet"]["samples_per_s"] > 0 and len(row["gpunet"]["segments"]) == 2
    check = row["check"]
    assert len(check["gpunet_losses"]) == 6 and np.all(np.isfinite(check["gpunet_losses"]))
    if HAVE_TORCH:
        assert check["ok"], f"gpunet and PyTorch losses disagree: {check}"
        assert check["max_rel_diff"] <= 1e-3 and row["ratio"] > 0
    else:
        assert check["ok"] is None and "torch" not in row


def test_gpunet_side_alone_trains():
    """--no-torch (or no PyTorch): the gpunet column alone, and its loss goes down."""
    w = bt.Workload("t", lambda: gn.models.mlp([12, 16, 10]), bt.random_images((1, 3, 4), classes=2), 8,
                    lr=0.1)
    row = bt.run_workload(w, gn.device("cpu"), tiny_args(check_steps=30, pool=1), with_torch=False)
    losses = row["check"]["gpunet_losses"]
    assert row["check"]["ok"] is None and "ratio" not in row
    assert losses[-1] < losses[0]  # one batch, 30 steps: it must fit


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed: the twin cannot be built")
def test_twin_has_gpunets_weights_and_outputs():
    gn.manual_seed(0)
    model = gn.models.small_cnn(1, 10, image_size=8, width=4, hidden=8)
    twin = torch_twin.twin(model, "cpu")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[key].numpy(), gn.backend.to_numpy(value))
    model.eval()
    twin.eval()
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(twin(torch_twin.to_torch(x, "cpu")).detach().numpy(), model(x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed: the check needs a reference")
def test_a_wrong_computation_fails_the_check(monkeypatch):
    """The check must be able to fail: a gpunet step with a different lr diverges from torch."""
    real = bt.build_sides

    def skewed(w, dev, seed, with_torch):
        sides = real(w, dev, seed, with_torch)
        step, d = sides["gpunet"]
        sides["gpunet"] = (lambda x, y: step(x, y) * 1.01, d)  # a 1% wrong loss
        return sides

    monkeypatch.setattr(bt, "build_sides", skewed)
    row = bt.run_workload(TINY["tiny-mlp"], gn.device("cpu"), tiny_args(), with_torch=True)
    assert row["check"]["ok"] is False


def test_main_writes_json_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bt, "WORKLOADS", {"tiny-mlp": TINY["tiny-mlp"]})
    out = tmp_path / "r.json"
    rc = bt.main(["--device", "cpu", "--json-out", str(out), "--seconds", "0.01", "--rounds", "1",
                  "--warmup", "1", "--check-steps", "3"])
    assert rc == 0
    report = json.loads(out.read_text())
    env = report["environment"]
    assert report["device"] == "cpu" and env["cpu_model"] and env["cpu_count"] >= 1
    assert "blas_threads" in env and isinstance(report["load_average_before"], list)
    if HAVE_TORCH:
        assert env["torch_threads"] == (env["blas_threads"] or env["cpu_count"])
    assert [r["workload"] for r in report["results"]] == ["tiny-mlp"]
    assert "tiny-mlp" in capsys.readouterr().out


def test_main_rejects_unknown_workloads(capsys):
    assert bt.main(["--device", "cpu", "--workloads", "nope", "--no-torch"]) == 2
    assert "nope" in capsys.readouterr().err


def test_default_out_names_device_model_and_date():
    report = {"device": "cpu", "device_name": "AMD EPYC 7B13", "date": "2026-01-02T03:04:05"}
    assert bt.default_out(report) == "benchmarks/results/train-cpu-amd-epyc-7b13-2026-01-02.json"
    assert host.slug("  Intel(R) Xeon(R)  ") == "intel-r-xeon-r"


def test_cli_dispatches_train_and_finds_every_benchmark_in_the_package(monkeypatch):
    seen = {}
    monkeypatch.setattr(bt, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    assert cli_bench.run(argparse.Namespace(benchmark="train", args=["--", "--device", "cpu"])) == 0
    assert seen["argv"] == ["--device", "cpu"]
    for name in cli_bench.BENCHMARKS:  # all inside gpunet/bench/: no scripts/ needed
        assert importlib.util.find_spec(f"gpunet.bench.{name}") is not None, name
    loader = cli_bench.load("loader")
    assert loader is not None and callable(loader.main)


def test_cli_runs_a_benchmark_outside_a_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no scripts/ here: an installed package
    module = cli_bench.load("parallel")
    seen = {}
    monkeypatch.setattr(module, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    assert cli_bench.run(argparse.Namespace(benchmark="parallel", args=["--repeats", "1"])) == 0
    assert seen["argv"] == ["--repeats", "1"]
