"""`gpunet export` (ONNX, safetensors from a run checkpoint) and `gpunet summary MODEL`."""
from __future__ import annotations

import numpy as np
import pytest

from gpunet.cli import main
from gpunet.cli import export as export_cli

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra: pip install '.[test]'")


def test_export_run_checkpoint_to_onnx_and_safetensors(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-doctor"]) == 0
    ckpt = tmp_path / "digits-mlp" / "checkpoint-last.npz"
    onnx_path, st_path = tmp_path / "m.onnx", tmp_path / "m.safetensors"
    assert main(["export", str(ckpt), "--onnx", str(onnx_path), "--safetensors", str(st_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {onnx_path}" in out and f"wrote {st_path}" in out
    model, shape = export_cli.load_run_model(ckpt)
    assert shape == (1, 8, 8)
    x = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    sess = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["logits"], {"input": x})[0], model.forward(x), rtol=1e-4, atol=1e-5)
    from safetensors.numpy import load_file
    assert np.array_equal(load_file(str(st_path))["1.weight"], model.state_dict()["1.weight"])


def test_export_needs_a_format(tmp_path, capsys):
    assert main(["export", str(tmp_path / "x.npz")]) == 2
    assert "expected --onnx PATH.onnx and/or --safetensors" in capsys.readouterr().out


def test_summary_rows_and_totals(capsys):
    assert main(["summary", "mlp", "--hidden", "32,16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mlp on digits input 1×8×8, float32, batch 64"
    assert [ln.split()[1] for ln in lines[2:8]] == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    total = 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert lines[8].split()[1] == f"{total:,}"
    assert max(len(ln) for ln in lines) <= 80


def test_summary_refuses_flags_that_do_not_apply(capsys):
    assert main(["summary", "small_cnn", "--hidden", "32"]) == 2
    assert "--hidden does not apply to --model small_cnn" in capsys.readouterr().out
