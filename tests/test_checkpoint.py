"""Checkpoints: bit-exact round trips, atomic writes, and clear refusals."""
import io
import os
import zipfile

import numpy as np
import pytest

import gpunet as gn
from gpunet import fileio


def _model_and_opt(seed=0, width=5):
    gn.manual_seed(seed)
    model = gn.models.mlp([4, width, 3])
    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(seed).standard_normal((8, 1, 2, 2)).astype(np.float32)
    y = np.arange(8) % 3
    loss = gn.losses.SoftmaxCrossEntropy()
    for _ in range(3):  # give the optimizer non-trivial state
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
        opt.zero_grad()
    return model, opt


def _arrays(model, opt):
    state = {f"m/{k}": v for k, v in model.state_dict().items()}
    state.update({f"o/{k}": v for k, v in opt.state_dict()["buffers"].items()})
    return state


def test_round_trip_is_bit_exact_with_optimizer_state(tmp_path):
    model, opt = _model_and_opt(0)
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt, epoch=3, note="x")
    other, other_opt = _model_and_opt(1)
    meta = gn.load_checkpoint(path, other, other_opt)
    assert meta == {"epoch": 3, "note": "x"}
    a, b = _arrays(model, opt), _arrays(other, other_opt)
    assert a.keys() == b.keys() and len(b) > 4
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert other_opt.state_dict()["step"] == opt.state_dict()["step"] == 3


def test_architecture_mismatch_names_tensors_and_changes_nothing(tmp_path):
    model, opt = _model_and_opt(0, width=5)
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt)
    other, other_opt = _model_and_opt(1, width=6)
    before = _arrays(other, other_opt)
    with pytest.raises(gn.CheckpointError) as e:
        gn.load_checkpoint(path, other, other_opt)
    assert "1.weight" in str(e.value) and "(6, 4)" in str(e.value) and "(5, 4)" in str(e.value)
    after = _arrays(other, other_opt)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.97])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    model, opt = _model_and_opt()
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * cut)])
    with pytest.raises(gn.CheckpointError, match="truncated or corrupted|unreadable"):
        gn.load_checkpoint(path, *_model_and_opt(1))


def test_flipped_byte_is_caught_by_crc(tmp_path):
    model, opt = _model_and_opt()
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt)
    blob = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("model/1.weight.npy")
    blob[info.header_offset + 30 + len(info.filename) + len(info.extra) + 150] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(gn.CheckpointError):
        gn.load_checkpoint(path, *_model_and_opt(1))


def test_checkpoint_with_pickle_is_refused(tmp_path):
    model, opt = _model_and_opt()
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt)
    with zipfile.ZipFile(path, "a") as z:  # smuggle in an object array (a pickle)
        buf = io.BytesIO()
        np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
        z.writestr("model/evil.npy", buf.getvalue())
    with pytest.raises(gn.CheckpointError, match="pickle"):
        gn.load_checkpoint(path, *_model_and_opt(1))


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(gn.CheckpointError, match="not a gpunet checkpoint"):
        gn.load_checkpoint(p, *_model_and_opt())
    with pytest.raises(gn.CheckpointError, match="not found"):
        gn.load_checkpoint(tmp_path / "missing.npz", *_model_and_opt())


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model, opt = _model_and_opt(0)
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1)
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(fileio.os, "replace", boom)  # the atomic write under save_checkpoint
    with pytest.raises(OSError, match="disk full"):
        gn.save_checkpoint(path, model, opt, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # no temp file left behind


def test_meta_must_be_json(tmp_path):
    model, opt = _model_and_opt()
    with pytest.raises(gn.CheckpointError, match="JSON"):
        gn.save_checkpoint(tmp_path / "c.npz", model, opt, bad=object())
    assert not (tmp_path / "c.npz").exists()
