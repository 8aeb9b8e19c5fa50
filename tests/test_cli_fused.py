"""`gpunet train --fused`: the fused optimizer step from the command line. It is refused for
optimizers without a fused step, recorded in config.json, kept by --resume, and a run with it
equals the same run without it (float64, digits; also with --devices and --precision)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gpunet.checkpoint import read_checkpoint
from gpunet.cli import main, recipe
from gpunet.errors import GpunetValueError

BASE = ["train", "--quiet", "--no-doctor", "--epochs", "2", "--hidden", "32"]


def _train(tmp_path, name, *extra):
    return main([*BASE, "--out", str(tmp_path), "--name", name, *extra])


def _said(capsys) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def _weights(tmp_path, name):
    _, arrays = read_checkpoint(tmp_path / name / "checkpoint-last.npz")
    return arrays


@pytest.mark.parametrize("opt", ["adagrad", "rmsprop", "nadam", "radam"])
def test_fused_is_refused_for_optimizers_without_a_fused_step(tmp_path, capsys, opt):
    assert _train(tmp_path, "x", "--optimizer", opt, "--fused") == 2
    out = _said(capsys)
    assert f"--fused does not apply to --optimizer {opt}: it has no fused step" in out
    assert "adam, adamw" in out and "sgd" in out
    assert not (tmp_path / "x").exists()  # refused before any file is written
    with pytest.raises(GpunetValueError, match="fused=True expected one of"):  # the API path refuses too
        cfg = recipe.resolve({"optimizer": opt, "fused": True})
        recipe.build_optimizer(cfg, recipe.build_model(cfg, (1, 8, 8), 10).parameters())


def test_fused_in_a_config_file(tmp_path, capsys):
    (tmp_path / "on.toml").write_text('optimizer = "nadam"\nfused = true\n')
    (tmp_path / "off.toml").write_text('optimizer = "nadam"\nfused = false\n')
    (tmp_path / "bad.toml").write_text('fused = "yes"\n')
    assert main([*BASE, "--out", str(tmp_path), "--config", str(tmp_path / "on.toml")]) == 2
    assert "--fused does not apply to --optimizer nadam" in _said(capsys)
    assert main([*BASE, "--out", str(tmp_path), "--config", str(tmp_path / "bad.toml")]) == 2
    assert "fused: expected bool, got str 'yes'" in _said(capsys)
    assert not (tmp_path / "digits-mlp").exists()
    recipe.check_applicable(recipe.resolve({"optimizer": "nadam", "fused": False}), {"fused"})  # asks for nothing
    cfg = recipe.resolve({"optimizer": "adam", "fused": True})
    opt = recipe.build_optimizer(cfg, recipe.build_model(cfg, (1, 8, 8), 10).parameters())
    assert opt.fused and opt.flat_parameters() is not None


@pytest.mark.parametrize("extra", [
    ("--dtype", "float64", "--optimizer", "sgd", "--weight-decay", "1e-4"),
    ("--dtype", "float64", "--optimizer", "adamw", "--lr", "0.01"),
    ("--dtype", "float64", "--devices", "cpu,cpu"),
    ("--precision", "fp16", "--optimizer", "adam", "--lr", "0.01"),
], ids=["sgd-f64", "adamw-f64", "devices-f64", "fp16-adam"])
def test_fused_run_equals_the_run_without_it(tmp_path, extra):
    assert _train(tmp_path, "plain", *extra) == 0
    assert _train(tmp_path, "fused", *extra, "--fused") == 0
    assert json.loads((tmp_path / "fused" / "config.json").read_text())["fused"] is True
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["fused"] is False
    a, b = _weights(tmp_path, "plain"), _weights(tmp_path, "fused")
    keys = sorted(k for k in a if k != "__meta__")
    assert keys == sorted(k for k in b if k != "__meta__") and any(k.startswith("optim/") for k in keys)
    tol = 1e-12 if "float64" in extra else 1e-6  # float32 master weights under --precision fp16
    for k in keys:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=tol, err_msg=k)
    ha = json.loads((tmp_path / "plain" / "history.json").read_text())
    hb = json.loads((tmp_path / "fused" / "history.json").read_text())
    assert [e["loss"] for e in hb] == pytest.approx([e["loss"] for e in ha], rel=0, abs=tol * 10)


def test_resume_keeps_fused_and_refuses_another_value(tmp_path, capsys):
    f64 = ("--dtype", "float64", "--optimizer", "adam", "--lr", "0.01")
    assert _train(tmp_path, "whole", *f64, "--fused", "--epochs", "3") == 0
    assert _train(tmp_path, "f", *f64, "--fused") == 0
    assert _train(tmp_path, "f", "--resume", "--epochs", "3") == 0  # fused from config.json
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    assert cfg["fused"] is True and cfg["epochs"] == 3
    a, b = _weights(tmp_path, "whole"), _weights(tmp_path, "f")
    for k in a:
        if k != "__meta__":
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)  # the resumed run continues exactly
    capsys.readouterr()
    # A run without --fused resumed with it: refused, nothing changed.
    assert _train(tmp_path, "p", *f64) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir() if p.is_file()}
    assert _train(tmp_path, "p", "--resume", "--epochs", "3", "--fused") == 2
    out = _said(capsys)
    assert "--resume: a resumed run keeps" in out and "fused: False in config.json, got True" in out
    # fused = false from a config file on a fused run: refused the same way.
    (tmp_path / "off.toml").write_text("fused = false\n")
    assert _train(tmp_path, "f", "--resume", "--epochs", "4", "--config", str(tmp_path / "off.toml")) == 2
    assert "fused: True in config.json, got False" in _said(capsys)
    # A run saved before --fused existed (no "fused" in its config) ran without it.
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    del saved["fused"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(saved))
    before["config.json"] = (tmp_path / "p" / "config.json").read_bytes()
    assert _train(tmp_path, "p", "--resume", "--epochs", "3", "--fused") == 2
    assert "fused: False in config.json, got True" in _said(capsys)
    assert {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir() if p.is_file()} == before
    # A checkpoint whose saved config says otherwise than config.json: refused by the checkpoint check.
    (tmp_path / "p" / "config.json").write_text(json.dumps({**saved, "fused": True}))
    assert _train(tmp_path, "p", "--resume", "--epochs", "3") == 2
    assert "fused: False in the checkpoint, True now" in _said(capsys)
    (tmp_path / "p" / "config.json").write_bytes(before["config.json"])
    assert _train(tmp_path, "p", "--resume", "--epochs", "3") == 0  # and without the flag it resumes
