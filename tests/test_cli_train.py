"""`gpunet train` / `gpunet evaluate` end to end, in subprocesses like a user runs them."""
import json
import os
import subprocess
import sys

import pytest


def gpunet(*args, cwd, timeout=300):
    env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "gpunet", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_main_command_on_digits(tmp_path):
    """The README's main command: no arguments, CPU, offline, >= 90% test accuracy (its speed is
    measured by scripts/bench_*.py, not asserted here)."""
    r = gpunet("train", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "runs" / "digits-mlp"
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    test = [l for l in lines if l["kind"] == "test"][0]
    assert test["accuracy"] >= 0.90, test
    for name in ("config.json", "checkpoint-last.npz", "checkpoint-best.npz", "history.json"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").is_file() or (run / "curves.svg").is_file()
    assert "test" in r.stdout and "accuracy" in r.stdout

    ev = gpunet("evaluate", str(run / "checkpoint-best.npz"), "--json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["dataset"] == "digits" and result["samples"] == 360 and result["accuracy"] >= 0.85


def test_resume_flag_continues_the_run_with_its_own_settings(tmp_path):
    r = gpunet("train", "--quiet", "--epochs", "2", "--lr", "0.01", "--hidden", "32", "--name", "r", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = gpunet("train", "--quiet", "--epochs", "3", "--name", "r", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed" in r.stdout
    epochs = [json.loads(l) for l in (tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2] and [e["lr"] for e in epochs] == [0.01] * 3
    r = gpunet("train", "--quiet", "--epochs", "4", "--name", "r", "--resume", "--lr", "0.005", cwd=tmp_path)
    assert r.returncode == 0 and "replaces the checkpoint's 0.01" in r.stdout
    last = json.loads((tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()[-2])
    assert last["epoch"] == 3 and last["lr"] == 0.005


def test_config_file_and_flag_precedence(tmp_path):
    (tmp_path / "c.toml").write_text('[train]\nepochs = 1\nlr = 0.1\nhidden = "16"\n')
    r = gpunet("train", "--quiet", "--config", "c.toml", "--lr", "0.2", "--name", "c", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "runs" / "c" / "config.json").read_text())
    assert cfg["epochs"] == 1 and cfg["lr"] == 0.2 and cfg["hidden"] == "16"


def test_data_parallel_flags(tmp_path):
    """--devices cpu,cpu with mean is the single-device run; linear scaling doubles the lr."""
    one = gpunet("train", "--quiet", "--epochs", "1", "--name", "one", "--dtype", "float64", cwd=tmp_path)
    two = gpunet("train", "--quiet", "--epochs", "1", "--name", "two", "--dtype", "float64",
                 "--devices", "cpu,cpu", cwd=tmp_path)
    scaled = gpunet("train", "--quiet", "--epochs", "1", "--name", "lin", "--devices", "cpu,cpu",
                    "--lr-scaling", "linear", cwd=tmp_path)
    assert one.returncode == two.returncode == scaled.returncode == 0, two.stdout + scaled.stdout
    read = lambda name: [json.loads(l) for l in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    e1, e2 = read("one")[-2], read("two")[-2]
    assert e1["kind"] == e2["kind"] == "epoch" and abs(e1["loss"] - e2["loss"]) < 1e-12
    assert read("lin")[-2]["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("args,needle", [
    (["--lr", "-1"], "lr"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--model", "resnet"], "resnet"),
    (["--name", "none", "--resume"], "--resume"),
    (["--devices", "cpu,cpu,cpu", "--batch-size", "64"], "divisible by the 3 replicas"),
    (["--reduce", "max"], "reduce"),
])
def test_bad_flags_give_one_clear_error(tmp_path, args, needle):
    r = gpunet("train", "--quiet", *args, cwd=tmp_path)
    assert r.returncode == 2
    # a flag with listed choices (--model, --reduce) is refused by the parser, on stderr
    assert needle in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


@pytest.mark.slow
def test_mnist_mlp_two_epochs_reaches_97(tmp_path):
    if not os.environ.get("GPUNET_DATA"):
        pytest.skip("GPUNET_DATA is not set; MNIST is needed")
    r = gpunet("train", "--quiet", "--dataset", "mnist", "--model", "mlp", "--epochs", "2",
               "--hidden", "512,256", "--batch-size", "128", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(l) for l in (tmp_path / "runs" / "mnist-mlp" / "metrics.jsonl").read_text().splitlines()]
    assert [l for l in lines if l["kind"] == "test"][0]["accuracy"] >= 0.97
