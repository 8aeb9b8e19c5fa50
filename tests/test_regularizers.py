"""Regularizers: penalties and gradients by hand and by central differences, argument
validation, and how layers add them to the loss and to the weight gradient."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import backend
from gpunet.regularizers import L1, L1L2, L2
from gpunet.testing import assert_close

W = np.array([[1.0, -2.0], [0.5, 0.0]])  # Σ|w| = 3.5, Σw² = 5.25


@pytest.mark.parametrize("reg,penalty,grad", [
    (L1(0.1), 0.35, 0.1 * np.sign(W)),
    (L2(0.1), 0.525, 0.2 * W),
    (L1L2(0.1, 0.2), 0.35 + 1.05, 0.1 * np.sign(W) + 0.4 * W),
    (L2(0.0), 0.0, 0 * W),
])
def test_penalty_and_grad_by_hand(dev, reg, penalty, grad):
    w = dev.asarray(W)
    p = reg.penalty(w)
    assert backend.is_cupy_array(p) == dev.is_gpu and p.ndim == 0 and p.dtype == np.float64  # no host sync
    assert float(p) == pytest.approx(penalty, rel=1e-12)
    np.testing.assert_allclose(backend.to_numpy(reg.grad(w)), grad, rtol=1e-12)
    assert float(reg(w)) == float(p)


@pytest.mark.parametrize("reg", [L1(0.3), L2(0.7), L1L2(0.2, 0.5)], ids=repr)
def test_grad_matches_central_differences(dev, reg):
    w_host = np.random.default_rng(0).standard_normal((3, 4))
    w = dev.asarray(w_host)
    eps = 1e-6
    numeric = np.zeros_like(w_host)
    for i in np.ndindex(w_host.shape):
        plus, minus = w_host.copy(), w_host.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (float(reg.penalty(dev.asarray(plus))) - float(reg.penalty(dev.asarray(minus)))) / (2 * eps)
    assert_close(repr(reg), reg.grad(w), numeric, atol=1e-7, rtol=1e-6)


def test_penalty_keeps_float32():
    assert L2(0.1).penalty(np.ones(3, dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize("make,needle", [
    (lambda: L1(-0.1), "L1: l expected a finite number >= 0, got -0.1"),
    (lambda: L2(float("nan")), "L2: l expected a finite number >= 0, got nan"),
    (lambda: L2("0.1"), "L2: l expected a finite number >= 0, got '0.1'"),
    (lambda: L1L2(0.1, -2), "L1L2: l2 expected a finite number >= 0, got -2"),
    (lambda: L1L2(True, 0.0), "L1L2: l1 expected a finite number >= 0, got True"),
])
def test_validation_names_argument_and_value(make, needle):
    with pytest.raises(gn.GpunetValueError) as e:
        make()
    assert needle in str(e.value)


def test_repr():
    assert repr(L1L2(0.1, 0.2)) == "L1L2(l1=0.1, l2=0.2)" and repr(L2(0.5)) == "L2(l=0.5)"


def test_layer_adds_kernel_grad_and_sums_penalties(dev):
    model = gn.nn.Sequential(gn.nn.Linear(3, 4, kernel_regularizer=L2(0.5)), gn.nn.Tanh(),
                             gn.nn.Linear(4, 2, kernel_regularizer=L1(0.25), activity_regularizer=L2(0.1)))
    model.to(dev, dtype="float64")
    x = dev.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    y = model(x)
    W0, W2 = (backend.to_numpy(model[i].weight.data) for i in (0, 2))
    expected = 0.5 * (W0 ** 2).sum() + 0.25 * np.abs(W2).sum() + 0.1 * (backend.to_numpy(y) ** 2).sum()
    assert float(model.regularization_loss()) == pytest.approx(expected, rel=1e-12)
    model.zero_grad()
    model.backward(dev.asarray(np.zeros((5, 2))))  # no data gradient: only the penalties remain
    # By hand: the activity gradient 2·0.1·y enters at the top, the kernel terms at each weight.
    x_host = backend.to_numpy(x)
    x1 = np.tanh(x_host @ W0.T + backend.to_numpy(model[0].bias.data))
    dy = 0.2 * backend.to_numpy(y)
    np.testing.assert_allclose(backend.to_numpy(model[2].weight.grad), dy.T @ x1 + 0.25 * np.sign(W2), rtol=1e-10)
    dz0 = (dy @ W2) * (1 - x1 ** 2)
    np.testing.assert_allclose(backend.to_numpy(model[0].weight.grad), dz0.T @ x_host + 1.0 * W0, rtol=1e-10)


def test_layer_without_regularizers_has_zero_penalty():
    assert gn.nn.Sequential(gn.nn.Linear(2, 2), gn.nn.ReLU()).regularization_loss() == 0.0
