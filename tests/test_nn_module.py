"""Module base behaviour through real layers: parameter order and names, state dicts,
atomic loading, dtype/device moves, train/eval propagation, gradient accumulation."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import backend

nn = gn.nn


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 3))


def test_parameter_names_and_order_follow_pytorch():
    model = small_cnn()
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                        "6.weight", "6.bias"]
    assert [p.shape for p in model.parameters()] == [(2, 1, 3, 3), (2,), (2,), (2,), (3, 8), (3,)]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias",
                                        "1.running_mean", "1.running_var", "1.num_batches_tracked"]


def test_parameters_without_bias_and_affine():
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2, affine=False))
    assert [n for n, _ in model.named_parameters()] == ["0.weight"]
    assert "1.running_var" in model.state_dict()


def test_state_dict_round_trip(dev):
    gn.manual_seed(1)
    a = small_cnn().to(dev)
    a(dev.asarray(np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32)))  # move BN stats
    gn.manual_seed(2)
    b = small_cnn().to(dev)
    b.load_state_dict(a.state_dict())
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(backend.to_numpy(va), backend.to_numpy(vb), err_msg=k)
    x = dev.asarray(np.random.default_rng(1).standard_normal((2, 1, 4, 4)).astype(np.float32))
    a.eval(), b.eval()
    np.testing.assert_array_equal(backend.to_numpy(a(x)), backend.to_numpy(b(x)))


def test_state_dict_holds_copies():
    model = nn.Linear(2, 2)
    sd = model.state_dict()
    sd["weight"][:] = 42
    assert not (model.weight.data == 42).any()
    src = {k: v.copy() for k, v in sd.items()}
    model.load_state_dict(src)
    src["weight"][:] = 7
    assert (model.weight.data == 42).all()


def _snapshot(model):
    return {k: backend.to_numpy(v).copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("corrupt,needles", [
    (lambda sd: sd.__setitem__("6.weight", np.zeros((3, 9), np.float32)),
     ["6.weight: expected shape (3, 8), got (3, 9)"]),
    (lambda sd: sd.pop("1.running_mean"), ["missing keys ['1.running_mean']"]),
    (lambda sd: sd.__setitem__("7.weight", np.zeros(3, np.float32)), ["unexpected keys ['7.weight']"]),
    (lambda sd: (sd.__setitem__("0.bias", np.zeros(5, np.float32)), sd.pop("6.bias")),
     ["0.bias: expected shape (2,), got (5,)", "missing keys ['6.bias']"]),
])
def test_bad_load_raises_naming_tensors_and_changes_nothing(corrupt, needles):
    gn.manual_seed(1)
    model = small_cnn()
    gn.manual_seed(2)
    sd = small_cnn().state_dict()  # valid except for the corruption, and different values
    corrupt(sd)
    before = _snapshot(model)
    with pytest.raises(gn.CheckpointError) as e:
        model.load_state_dict(sd)
    for needle in needles:
        assert needle in str(e.value)
    after = _snapshot(model)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=f"{k} changed by a failed load")


def test_to_float64_casts_params_grads_and_float_buffers(dev):
    model = small_cnn().to(dev, dtype="float64")
    for name, p in model.named_parameters():
        assert p.dtype == np.float64 and p.grad.dtype == np.float64, name
        assert backend.is_cupy_array(p.data) == dev.is_gpu
    assert model[1].running_var.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64  # integer buffers keep their dtype
    y = model(dev.asarray(np.zeros((2, 1, 4, 4))))
    assert y.dtype == np.float64 and model.dtype == np.float64


def test_train_eval_propagate_to_every_module():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Dropout()), nn.BatchNorm1d(2))
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_backward_accumulates_and_zero_grad_clears_in_place(dev):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dev, dtype="float64")
    x = dev.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    dy = dev.asarray(np.ones((5, 2)))
    model(x)
    model.backward(dy)
    once = [backend.to_numpy(p.grad).copy() for p in model.parameters()]
    model(x)
    model.backward(dy)
    for g1, p in zip(once, model.parameters()):
        np.testing.assert_allclose(backend.to_numpy(p.grad), 2 * g1, rtol=1e-12)  # += , not =
        assert np.abs(g1).sum() > 0
    buffers = [p.grad for p in model.parameters()]
    model.zero_grad()
    for buf, p in zip(buffers, model.parameters()):
        assert p.grad is buf and not backend.to_numpy(p.grad).any()


def test_backward_does_not_modify_parameters_or_dy():
    model = nn.Sequential(nn.Linear(3, 4, activity_regularizer=gn.regularizers.L2(0.1)), nn.ReLU())
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    before = _snapshot(model)
    model(x)
    dy = np.ones((2, 4), dtype=np.float32)
    model.backward(dy)
    assert (dy == 1).all()
    for k, v in _snapshot(model).items():
        np.testing.assert_array_equal(before[k], v)


def test_repr_nests():
    text = repr(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10)))
    assert "(0): Linear(784→256)" in text and "(2): Dropout(p=0.5)" in text and "(3): Linear(256→10)" in text
