"""The CPU fast paths: skipping the first layer's dx, the two-stage im2col/col2im, the
MaxPool backward that finds the first maximum itself, BatchNorm without x_hat, and the
bitwise ReLU select. Each is checked against a plain reference, exactly where the math is
the same operations, and by float64 central differences otherwise."""
import itertools

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend, nn
from gpunet.nn._window import col2im, im2col, out_size
from gpunet.testing import gradcheck_module


def randn(dev, *shape, seed=0):
    return dev.asarray(np.random.default_rng(seed).standard_normal(shape))


def grads(model):
    return {n: backend.to_numpy(p.grad).copy() for n, p in model.named_parameters()}


# ---------------------------------------------------------------- need_input_grad

def _models():
    return {
        "mlp": (lambda: gn.models.mlp([12, 7, 5, 3]), (4, 1, 3, 4)),
        "small_cnn": (lambda: gn.models.small_cnn(1, 3, image_size=8, width=2, hidden=5), (3, 1, 8, 8)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_skipping_input_grad_leaves_parameter_grads_unchanged(dev, name):
    make, shape = _models()[name]
    x = randn(dev, *shape)
    dy = randn(dev, shape[0], 3, seed=1)
    results = []
    for need in (True, False):
        gn.manual_seed(0)
        model = make().to(dev, dtype="float64")
        model.forward(x)
        dx = model.backward(dy, need_input_grad=need)
        assert (dx is None) == (not need)
        results.append(grads(model))
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


class _NoBackward(nn.Flatten):
    """A parameter-free layer whose backward must not run when dx is not wanted."""

    def backward(self, dy):
        raise AssertionError("backward of a layer in front of the first trainable layer ran")


def test_layers_in_front_of_the_first_trainable_layer_are_skipped(dev):
    model = nn.Sequential(_NoBackward(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).to(dev)
    x = dev.asarray(np.ones((3, 2, 3), dtype=np.float32))
    model.forward(x)
    assert model.backward(dev.asarray(np.ones((3, 2), dtype=np.float32)), need_input_grad=False) is None
    assert float(np.abs(backend.to_numpy(model[1].weight.grad)).sum()) > 0


@pytest.mark.parametrize("layer,shape", [
    (lambda: nn.Linear(5, 3), (4, 5)),
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 7, 5)),
])
def test_layer_without_input_grad_returns_none_and_same_grads(dev, layer, shape):
    x, out = randn(dev, *shape), []
    for need in (True, False):
        gn.manual_seed(0)
        m = layer().to(dev, dtype="float64")
        y = m.forward(x)
        assert (m.backward(dev.asarray(np.ones(y.shape)), need_input_grad=need) is None) == (not need)
        out.append(grads(m))
    for key in out[0]:
        np.testing.assert_array_equal(out[0][key], out[1][key])


def test_need_input_grad_reaches_modules_whose_backward_takes_only_dy(dev):
    class Twice(nn.Module):
        def forward(self, x):
            return 2 * x

        def backward(self, dy):  # the old signature: still a Module.backward
            return 2 * dy
    m = Twice()
    m.forward(dev.asarray(np.ones((2, 2))))
    dx = m.backward(dev.asarray(np.ones((2, 2))), need_input_grad=False)  # plain backward, dx anyway
    np.testing.assert_array_equal(backend.to_numpy(dx), np.full((2, 2), 2.0))


# ---------------------------------------------------------------- im2col / col2im

WINDOWS = [(7, 5, 3, 3, 2, 2, 1, 1), (5, 6, 2, 3, 1, 2, 0, 1), (3, 3, 1, 1, 1, 1, 0, 0),
           (6, 7, 3, 2, 3, 1, 1, 1), (5, 5, 5, 5, 1, 1, 2, 2), (8, 9, 3, 3, 2, 3, 1, 1),
           (4, 4, 4, 4, 1, 1, 0, 0), (6, 6, 5, 5, 1, 1, 2, 2)]


@pytest.mark.parametrize("H,W,kh,kw,sh,sw,ph,pw", WINDOWS)
def test_im2col_matches_direct_gather_and_col2im_is_its_adjoint(dev, H, W, kh, kw, sh, sw, ph, pw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, H, W))
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = out_size(H, kh, sh, ph), out_size(W, kw, sw, pw)
    ref = np.empty((3, kh, kw, 2, Ho, Wo))
    for i, j in itertools.product(range(kh), range(kw)):
        ref[:, i, j] = xpad[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw].transpose(1, 0, 2, 3)
    cols = backend.to_numpy(im2col(dev.asarray(x), kh, kw, sh, sw, ph, pw))
    np.testing.assert_array_equal(cols, ref)
    d = rng.standard_normal(ref.shape)
    dx = backend.to_numpy(col2im(dev.asarray(d), x.shape, sh, sw, ph, pw))
    naive = np.zeros_like(xpad)  # scatter-add, element by element
    for i, j in itertools.product(range(kh), range(kw)):
        naive[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] += d[:, i, j].transpose(1, 0, 2, 3)
    np.testing.assert_allclose(dx, naive[:, :, ph:ph + H, pw:pw + W], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2d(3, 2, 5, padding=2), (2, 3, 6, 6)),            # the CIFAR CNN's shape of conv
    (lambda: nn.Conv2d(2, 2, 3, stride=(2, 3), padding=(1, 2)), (1, 2, 7, 8)),
    (lambda: nn.MaxPool2d(2), (2, 2, 5, 7)),                          # stride = kernel, not tiling
    (lambda: nn.MaxPool2d(2, padding=1), (1, 2, 4, 4)),
    (lambda: nn.MaxPool2d((2, 3), stride=(2, 1)), (1, 2, 6, 7)),
])
def test_gradcheck_fast_path_shapes(dev, make, shape):
    gn.manual_seed(0)
    layer = make().to(dev, dtype="float64")
    gradcheck_module(layer, randn(dev, *shape))


# ---------------------------------------------------------------- MaxPool ties, BatchNorm, ReLU

def _reference_maxpool_dx(x, dy, k, s):
    """dy to the first maximum (row-major) of each window, element by element."""
    dx = np.zeros_like(x)
    for n, c, i, j in itertools.product(*(range(d) for d in dy.shape)):
        win = x[n, c, i * s:i * s + k, j * s:j * s + k]
        a, b = np.unravel_index(np.argmax(win), win.shape)  # argmax: the first maximum
        dx[n, c, i * s + a, j * s + b] += dy[n, c, i, j]
    return dx


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1)])
def test_maxpool_backward_routes_to_the_first_maximum_with_many_ties(dev, k, s):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.integers(-2, 3, size=(2, 3, 7, 8)), 0).astype(np.float32)  # ReLU-like zeros
    layer = nn.MaxPool2d(k, stride=s)
    y = layer.forward(dev.asarray(x))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backend.to_numpy(layer.backward(dev.asarray(dy)))
    want = _reference_maxpool_dx(x, dy, k, s)
    if k == s:  # one window per element: exact
        np.testing.assert_array_equal(dx, want)
    else:       # overlapping windows add in another order
        np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)
        assert np.array_equal(dx != 0, want != 0)  # the same elements receive gradient


def test_batchnorm_matches_the_textbook_formulas(dev):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(4, 3, 5, 2))
    dy = rng.standard_normal(x.shape)
    bn = nn.BatchNorm2d(3).to(dev, dtype="float64")
    bn.weight.data = dev.asarray(rng.standard_normal(3))
    y = backend.to_numpy(bn.forward(dev.asarray(x)))
    dx = backend.to_numpy(bn.backward(dev.asarray(dy)))
    axes, n = (0, 2, 3), x.size // 3
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    x_hat = (x - mean) / np.sqrt(var + bn.eps)
    w = backend.to_numpy(bn.weight.data).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, w * x_hat, rtol=1e-12, atol=1e-12)
    db, dw = dy.sum(axis=axes, keepdims=True), (dy * x_hat).sum(axis=axes, keepdims=True)
    want = w / np.sqrt(var + bn.eps) * (dy - db / n - x_hat * dw / n)
    np.testing.assert_allclose(dx, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bn.weight.grad), dw.reshape(-1), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_bitwise_select_is_a_select(dtype):
    rng = np.random.default_rng(0)
    y = np.maximum(rng.standard_normal((5, 7)), 0).astype(dtype)
    y[0, :3] = [0.0, -0.0, np.nan]
    dy = rng.standard_normal((5, 14)).astype(dtype)[:, ::2]  # a strided view
    dy[0, :3] = [np.inf, np.nan, -np.inf]
    dy[1, ::2] = -0.0
    dx = gn.ops.relu_backward(dy, y)
    want = np.where(y > 0, dy, dtype(0))
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx.view(f"i{dx.itemsize}"), want.view(f"i{dx.itemsize}"))  # bit for bit
    out = dy.copy()
    assert gn.ops.relu_backward(out, y, out=out) is out  # in place
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("pool", [lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, stride=2, padding=1)])
def test_relu_then_maxpool_fused_backward_equals_the_two_backwards(dev, pool):
    rng = np.random.default_rng(0)
    x = dev.asarray(rng.integers(-3, 3, size=(2, 3, 6, 6)).astype(np.float32))  # many ties and zeros
    model = nn.Sequential(nn.ReLU(), pool())
    y = model.forward(x)
    dy = dev.asarray(rng.standard_normal(y.shape).astype(np.float32))
    relu, mp = model[0], model[1]
    assert mp.fuses_backward_with(relu)
    fused = backend.to_numpy(model.backward(dy))
    plain = backend.to_numpy(relu.backward(mp.backward(dy)))
    np.testing.assert_array_equal(fused, plain)
    assert not mp.fuses_backward_with(nn.ReLU())  # another layer's output: no fusion
