"""state_dict / load_state_dict / checkpoints of models with shared modules or tied weights.

As in PyTorch, the state dict names a shared module's arrays at every position ("0.weight"
and "2.weight" of Sequential(lin, relu, lin)), while named_parameters() lists each Parameter
once. Loading takes either form: every name, or (checkpoints written before every name was
kept) one name per shared Parameter. Two names of one Parameter with different values are
refused, and nothing changes."""
from __future__ import annotations

import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from gpunet.errors import CheckpointError

nn = gn.nn


def _tied(seed=0):
    """body.1 and body.3 are one Linear; head.weight is tied to body.0.weight (another module)."""
    gn.manual_seed(seed)
    lin, first = nn.Linear(4, 4), nn.Linear(4, 4)
    head = nn.Linear(4, 4)
    head.weight = first.weight
    body = nn.Sequential(first, lin, nn.Tanh(), lin, nn.BatchNorm1d(4))
    return nn.Sequential(body, head).to("cpu", dtype="float64")


def _torch_twin(model):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lin, first = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    head = torch.nn.Linear(4, 4)
    head.weight = first.weight
    body = torch.nn.Sequential(first, lin, torch.nn.Tanh(), lin, torch.nn.BatchNorm1d(4))
    return torch.nn.Sequential(body, head).double()


KEYS = ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "0.3.weight", "0.3.bias", "0.4.weight",
        "0.4.bias", "1.weight", "1.bias", "0.4.running_mean", "0.4.running_var", "0.4.num_batches_tracked"]


def _perturbed(model, seed):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape)
    return model


def test_state_dict_names_every_position_and_round_trips():
    a, b = _perturbed(_tied(), 1), _tied(2)
    state = a.state_dict()
    assert sorted(state) == sorted(KEYS)
    assert [n for n, _ in a.named_parameters()] == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias",
                                                    "0.4.weight", "0.4.bias", "1.bias"]  # each Parameter once
    np.testing.assert_array_equal(state["0.3.weight"], state["0.1.weight"])
    np.testing.assert_array_equal(state["1.weight"], state["0.0.weight"])
    a.load_state_dict(state)  # its own state dict: this raised "missing keys ['0.0.3.weight', ...]"
    b.load_state_dict(state)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(q.data, p.data, err_msg=n)
    body = b._children["0"]
    assert body._children["1"] is body._children["3"]                                  # still shared
    assert b._children["1"].weight is body._children["0"].weight                        # still tied


def test_state_dict_keys_match_pytorch_both_ways():
    torch = pytest.importorskip("torch")
    model, twin = _perturbed(_tied(), 3), None
    twin = _torch_twin(model)
    assert sorted(model.state_dict()) == sorted(twin.state_dict())
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})  # strict
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[k].numpy(), v, err_msg=k)
    back = _tied(4)
    back.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)


def test_a_state_dict_with_one_name_per_shared_parameter_still_loads():
    """The form written before every position was kept (named_parameters' names and every buffer)."""
    a, b = _perturbed(_tied(), 5), _tied(6)
    old = {n: p.data.copy() for n, p in a.named_parameters()}
    old.update({n: v.copy() for n, v in a.named_buffers()})
    b.load_state_dict(old)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)
    with pytest.raises(CheckpointError, match=r"missing keys \['0.1.weight', '0.3.weight'\]"):
        b.load_state_dict({k: v for k, v in old.items() if k != "0.1.weight"})  # no name of it at all


def test_two_names_of_one_parameter_with_different_values_are_refused():
    a, b = _perturbed(_tied(), 7), _perturbed(_tied(), 8)
    state = a.state_dict()
    state["0.3.weight"] = state["0.3.weight"] + 1.0
    before = b.state_dict()
    with pytest.raises(CheckpointError, match=r"keys 0.1.weight and 0.3.weight name one shared array, got "
                                              r"different values"):
        b.load_state_dict(state)
    for k, v in before.items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)  # nothing changed


def test_checkpoint_and_trainer_resume_of_a_tied_model(tmp_path):
    a = _perturbed(_tied(), 9)
    opt = gn.optim.Adam(a.parameters(), lr=1e-2)
    x = np.random.default_rng(0).standard_normal((16, 4))
    y = np.arange(16) % 4
    data = gn.data.Dataset(x.reshape(16, 1, 1, 4), y)
    model = nn.Sequential(nn.Flatten(), a)
    trainer = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, seed=0, doctor=False)
    trainer.fit(data, epochs=1, batch_size=8, verbose=False)
    path = trainer.save(tmp_path / "ckpt.npz")
    _, arrays = read_checkpoint(path)
    assert {"model/1.0.3.weight", "model/1.1.weight"} <= set(arrays)
    trainer.fit(data, epochs=2, batch_size=8, verbose=False)
    want = model.state_dict()
    # resume into a fresh copy: the same second epoch, exactly
    b = nn.Sequential(nn.Flatten(), _tied(10))
    t2 = gn.Trainer(b, gn.losses.SoftmaxCrossEntropy(), gn.optim.Adam(b.parameters(), lr=1e-2), seed=0, doctor=False)
    t2.resume(path)
    t2.fit(data, epochs=2, batch_size=8, verbose=False)
    for k, v in want.items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)
    # a checkpoint written with one name per shared Parameter (before every position was kept)
    header, arrays = read_checkpoint(path)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    arrays = {k: v for k, v in arrays.items() if not k.startswith("model/") or k[6:] in names}
    header["model_keys"] = [k for k in header["model_keys"] if k in names]
    assert len(header["model_keys"]) == len(want) - 3  # 1.0.3.weight, 1.0.3.bias, 1.1.weight left out
    np.savez(tmp_path / "old.npz", **arrays, __meta__=np.frombuffer(json.dumps(header).encode(), np.uint8))
    c = nn.Sequential(nn.Flatten(), _tied(11))
    t3 = gn.Trainer(c, gn.losses.SoftmaxCrossEntropy(), gn.optim.Adam(c.parameters(), lr=1e-2), seed=0, doctor=False)
    t3.resume(tmp_path / "old.npz")
    t3.fit(data, epochs=2, batch_size=8, verbose=False)
    for k, v in want.items():
        np.testing.assert_array_equal(c.state_dict()[k], v, err_msg=k)
    d = nn.Sequential(nn.Flatten(), _tied(12))
    load_checkpoint(tmp_path / "old.npz", d)
    save_checkpoint(tmp_path / "new.npz", d)  # written again: every name
    assert set(read_checkpoint(tmp_path / "new.npz")[1]) == {f"model/{k}" for k in want}


def test_safetensors_export_of_a_tied_model_round_trips(tmp_path):
    pytest.importorskip("safetensors")
    a, b = _perturbed(_tied(), 13), _tied(14)
    gn.interop.save_safetensors(a, tmp_path / "m.safetensors")
    gn.interop.load_safetensors(b, tmp_path / "m.safetensors")
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)
