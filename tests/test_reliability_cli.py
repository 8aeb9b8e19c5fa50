"""Reliability at the command line: divergence, configs as data, and the soak's leak detector.

Divergence on the digits MLP needs float32 overflow: with lr 1e4 the loss explodes to
~1e13 but stays finite (the ReLUs die), while lr >= 1e10 overflows to Inf/NaN within a
few steps. The trainer checks the loss at its logging points (every 2 steps here); a
checkpoint written in between must never hold NaN weights.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunet.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# --no-doctor: these test the Trainer's own NaN stop and checkpoint guard; with the doctor on,
# its divergence check (GN202) stops such runs earlier (tests/test_doctor_live.py).
SMALL = ["--quiet", "--no-doctor", "--device", "cpu", "--hidden", "32", "--epochs", "3", "--dtype", "float32",
         "--checkpoint-every", "3"]
EXPR = "__import__('os').system('touch pwned')"


def gpunet(*args, cwd, timeout=300):
    env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "gpunet", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(r, *needles):
    """Exit code 2, one `error:` line with every needle, no traceback."""
    out = r.stdout + r.stderr
    assert r.returncode == 2, f"exit code {r.returncode}:\n{out}"
    assert "Traceback" not in out, out
    lines = [l for l in r.stdout.splitlines() if l.startswith("error:")]
    assert lines, f"no error line:\n{out}"
    text = " ".join(r.stdout[r.stdout.index("error:"):].split())
    missing = [n for n in needles if n not in text]
    assert not missing, f"error lacks {missing}:\n{text}"


def finite_checkpoint(path):
    header, arrays = read_checkpoint(path)
    bad = [k for k, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
    assert not bad, f"{path} holds NaN/Inf in {bad}"
    return header["meta"]


def test_divergence_stops_cleanly_and_resume_starts_from_the_last_good_checkpoint(tmp_path):
    r = gpunet("train", *SMALL, "--lr", "1e10", "--name", "div", cwd=tmp_path)
    assert_clean_error(r, "training diverged", "loss is inf", "step 4", "lower the learning rate")
    run = tmp_path / "runs" / "div"
    meta = finite_checkpoint(run / "checkpoint-last.npz")  # written at step 3, before the Inf
    assert (meta["epoch"], meta["global_step"]) == (0, 3)
    assert not list(run.glob(".*.tmp"))

    # The same flags replay the run exactly from step 3, so it diverges again at step 4.
    r = gpunet("train", *SMALL, "--lr", "1e10", "--name", "div", "--resume", cwd=tmp_path)
    assert "resumed from" in r.stdout and "at epoch 0, step 3" in r.stdout, r.stdout
    assert_clean_error(r, "training diverged", "step 4")
    assert finite_checkpoint(run / "checkpoint-last.npz")["global_step"] == 3



def test_after_a_divergence_resume_with_a_lower_lr_finishes_from_the_last_good_checkpoint(tmp_path):
    flags = SMALL[:-2]  # without --checkpoint-every: epoch checkpoints only
    r = gpunet("train", *flags, "--epochs", "1", "--lr", "0.05", "--name", "rec", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    last = tmp_path / "runs" / "rec" / "checkpoint-last.npz"
    good = last.read_bytes()

    r = gpunet("train", *flags, "--lr", "1e10", "--name", "rec", "--resume", cwd=tmp_path)
    assert "replaces the checkpoint's 0.05" in r.stdout, r.stdout
    assert_clean_error(r, "training diverged", "at epoch 1", "lr=1e+10")
    assert last.read_bytes() == good, "the divergent run replaced the last good checkpoint"

    r = gpunet("train", *flags, "--lr", "0.05", "--name", "rec", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "at epoch 1, step 21" in r.stdout, r.stdout
    meta = finite_checkpoint(last)
    assert meta["epoch"] == 3 and meta["global_step"] == 3 * 21
    history = json.loads((tmp_path / "runs" / "rec" / "history.json").read_text())
    assert [e["epoch"] for e in history] == [0, 1, 2] and history[-1]["loss"] < history[0]["loss"]


def test_nan_weights_never_replace_a_checkpoint(tmp_path):
    """lr 1e15 makes the weights NaN at step 3, between two logging points: the step-3
    checkpoint write is refused instead of overwriting the good one with NaN."""
    r = gpunet("train", *SMALL, "--lr", "1e15", "--name", "nan", cwd=tmp_path)
    assert_clean_error(r, "NaN")
    run = tmp_path / "runs" / "nan"
    for path in run.glob("checkpoint-*.npz"):
        finite_checkpoint(path)
    assert not list(run.glob(".*.tmp"))


def test_diverged_run_without_any_good_checkpoint_says_so(tmp_path):
    r = gpunet("train", *SMALL, "--lr", "1e30", "--name", "early", cwd=tmp_path)
    assert_clean_error(r, "training diverged", "loss is nan", "step 2")
    assert not (tmp_path / "runs" / "early" / "checkpoint-last.npz").exists()
    run = tmp_path / "runs" / "early"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    # Without a checkpoint --resume stops and changes nothing; --restart starts the run over.
    r = gpunet("train", *SMALL, "--lr", "0.05", "--epochs", "1", "--name", "early", "--resume", cwd=tmp_path)
    assert_clean_error(r, "expected a checkpoint at", "found none", "--restart")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    r = gpunet("train", *SMALL, "--lr", "0.05", "--epochs", "1", "--name", "early", "--resume", "--restart",
               cwd=tmp_path)
    assert r.returncode == 0 and "starting the run over" in r.stdout, r.stdout + r.stderr
    assert (run / "checkpoint-last.npz").is_file()


@pytest.mark.parametrize("suffix,text,needles", [
    (".toml", f'lr = "{EXPR}"\n', ["lr", "expected float", "str"]),
    (".toml", f'[train]\nhidden = "{EXPR}"\n', ["hidden", "positive ints", "__import__"]),
    (".toml", f'[train]\ndataset = "{EXPR}"\n', ["name", "'digits'", "__import__"]),
    (".json", json.dumps({"epochs": EXPR}), ["epochs", "expected int", "str"]),
    (".json", json.dumps({"resume": "yes"}), ["resume", "expected bool", "str"]),
])
def test_config_files_are_data_never_evaluated(tmp_path, suffix, text, needles):
    (tmp_path / f"c{suffix}").write_text(text)
    r = gpunet("train", "--quiet", "--config", f"c{suffix}", "--name", "cfg", cwd=tmp_path)
    assert_clean_error(r, *needles)
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "runs").exists(), "a rejected config must not start a run folder"


def test_a_bad_hidden_flag_is_a_clean_error(tmp_path):
    assert_clean_error(gpunet("train", "--quiet", "--hidden", "64,abc", cwd=tmp_path), "hidden", "64,abc")


@pytest.mark.parametrize("leak,code", [(0, 0), (8, 1)])
def test_soak_detector_passes_a_flat_run_and_fails_a_leak(tmp_path, leak, code):
    """scripts/soak.py on digits: RSS stays flat, and a deliberate 8 MiB/epoch leak is caught."""
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--dataset", "digits", "--epochs", "6",
                        "--hidden", "32", "--batch-size", "64", "--device", "cpu", "--quiet", "--leak-mib", str(leak),
                        "--json-out", str(out)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="160"))
    assert r.returncode == code, r.stdout + r.stderr
    result = json.loads(out.read_text())
    rss = result["checks"][0]
    assert rss["metric"] == "rss_mib" and rss["ok"] == (leak == 0) and len(result["epochs"]) == 6
    assert rss["growth_mib"] >= (4 * leak * 0.9 if leak else -1e9)
