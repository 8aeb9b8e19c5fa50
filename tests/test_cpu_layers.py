"""The CPU paths of MaxPool2d and BatchNorm: the compiled loops (gpunet[cpu], Numba) and their
NumPy twins, each against PyTorch (float64 and float32), against each other, by float64
central differences, with ties, NaN, odd sizes, padding, ceil_mode, eval mode and 2 threads."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import nn, threads
from gpunet.nn import _jit
from gpunet.testing import gradcheck_module

torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[test]' brings it")
tnn = torch.nn


@pytest.fixture(params=["numpy", "compiled"])
def path(request):
    """Runs the test once on the NumPy passes and once on the compiled loops."""
    if request.param == "compiled":
        pytest.importorskip("numba", reason="Numba is not installed: pip install '.[cpu]' brings it")
    old = _jit.use(request.param == "compiled")
    yield request.param
    _jit.use(old)


@pytest.fixture
def two_threads():
    old = threads.workers()
    threads.set_threads(2)
    yield
    threads.set_threads(old)


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


POOLS = [((2, 2, 0, False), (3, 2, 8, 8)), ((2, 2, 0, False), (2, 3, 7, 9)),    # floor crops a row/column
         ((3, 2, 1, False), (2, 3, 9, 8)), ((3, 2, 1, True), (2, 2, 8, 7)),      # TF's pool; ceil_mode
         ((3, 1, 1, False), (1, 2, 6, 5)), (((2, 3), (1, 2), (1, 1), False), (2, 2, 5, 7)),
         ((3, 3, 0, True), (2, 2, 7, 8))]


def _torch_pool(x, dy, k, s, p, ceil):
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tnn.MaxPool2d(k, s, p, ceil_mode=ceil)(tx)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("args,shape", POOLS)
def test_maxpool_matches_torch_on_both_paths(path, dtype, args, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    layer = nn.MaxPool2d(*args[:3], ceil_mode=args[3])
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    ty, tdx = _torch_pool(x, dy, *args)
    assert (layer._cache[4] is not None) == (path == "compiled")  # the path under test ran
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, ty)                     # a max is exact
    np.testing.assert_allclose(dx, tdx, **tol(dtype))


@pytest.mark.parametrize("args,shape", POOLS[:4])
def test_maxpool_gradcheck_float64(path, args, shape):
    x = np.random.default_rng(1).standard_normal(shape)
    gradcheck_module(nn.MaxPool2d(*args[:3], ceil_mode=args[3]), x)


def _first_max_reference(x, dy, k, s, p):
    """dx routing each window's dy to its first maximum in row-major order (padding never wins)."""
    N, C, H, W = x.shape
    dx = np.zeros_like(dy, shape=x.shape)
    for n, c, i, j in np.ndindex(*dy.shape):
        h0, w0 = i * s - p, j * s - p
        hs, ws = slice(max(h0, 0), min(h0 + k, H)), slice(max(w0, 0), min(w0 + k, W))
        a, b = np.unravel_index(np.argmax(x[n, c, hs, ws]), x[n, c, hs, ws].shape)
        dx[n, c, hs.start + a, ws.start + b] += dy[n, c, i, j]
    return dx


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_ties_go_to_the_first_maximum_on_both_paths(path, k, s, p):
    rng = np.random.default_rng(2)
    x = np.maximum(rng.integers(-2, 3, size=(2, 3, 8, 7)), 0).astype(np.float64)  # ReLU-like zeros
    layer = nn.MaxPool2d(k, s, p)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(dy), _first_max_reference(x, dy, k, s, p), rtol=1e-14, atol=0)


def test_maxpool_paths_agree_bit_for_bit_and_over_threads(two_threads):
    pytest.importorskip("numba", reason="Numba is not installed: pip install '.[cpu]' brings it")
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((64, 4, 12, 12)), 0).astype(np.float32)  # 2 chunks of 32 images
    dy = rng.standard_normal((64, 4, 6, 6)).astype(np.float32)
    results = []
    for compiled in (False, True):
        old = _jit.use(compiled)
        try:
            layer = nn.MaxPool2d(3, 2, 1)
            results.append((layer.forward(x), layer.backward(dy)))
        finally:
            _jit.use(old)
    threads.set_threads(1)
    layer = nn.MaxPool2d(3, 2, 1)
    results.append((layer.forward(x), layer.backward(dy)))
    for y, dx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_allclose(dx, results[0][1], rtol=1e-6, atol=1e-7)  # overlaps add in another order
        assert np.array_equal(dx != 0, results[0][1] != 0)


def test_maxpool_nan_window_routes_nothing_and_eval_forward_still_has_a_backward(path):
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    layer = nn.MaxPool2d(2).eval()       # eval: the backward finds (or kept) the maxima all the same
    y = layer.forward(x)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(np.delete(y.ravel(), 0)).any()
    dx = layer.backward(np.ones_like(y))
    assert (dx[0, 0, :2, :2] == 0).all()                 # the NaN window: nothing
    assert dx.sum() == y.size - 1 and (dx[1, 0, 1::2, 1::2] == 1).all()


@pytest.mark.parametrize("pool", [lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True)])
def test_relu_then_maxpool_fused_forward_equals_the_two_layers(path, pool):
    rng = np.random.default_rng(9)
    x = rng.integers(-3, 3, size=(3, 2, 7, 6)).astype(np.float32)  # ties, zeros, all-negative windows
    x[0, 0, :2, :2] = -1.0
    fused = nn.Sequential(nn.ReLU(), pool())
    relu, mp = nn.ReLU(), pool()
    assert fused[1].fuses_forward_with(fused[0]) == (path == "compiled")
    y = fused.forward(x)
    want = mp.forward(relu.forward(x))
    np.testing.assert_array_equal(y, want)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(fused.backward(dy), relu.backward(mp.backward(dy)))
    # each layer's own backward still works after the fused forward
    np.testing.assert_array_equal(fused[0].backward(fused[1].backward(dy)), relu.backward(mp.backward(dy)))
    assert not fused[1].fuses_forward_with(nn.ReLU(mask=True)) and not fused[1].fuses_forward_with(nn.Tanh())


def test_relu_then_maxpool_fused_backward_on_both_paths(path):
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 3, size=(2, 3, 6, 6)).astype(np.float32)
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    dy = rng.standard_normal(model.forward(x).shape).astype(np.float32)
    fused = model.backward(dy)
    plain = model[0].backward(model[1].backward(dy))
    np.testing.assert_array_equal(fused, plain)


# ---------------------------------------------------------------- BatchNorm

def _torch_bn(layer, x, dy, train):
    t = tnn.BatchNorm2d(x.shape[1], momentum=layer.momentum, eps=layer.eps).double()
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(np.asarray(layer.weight.data, np.float64)))
        t.bias.copy_(torch.from_numpy(np.asarray(layer.bias.data, np.float64)))
        t.running_mean.copy_(torch.from_numpy(np.asarray(layer.running_mean, np.float64)))
        t.running_var.copy_(torch.from_numpy(np.asarray(layer.running_var, np.float64)))
    t.train(train)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = t(tx)
    ty.backward(torch.from_numpy(dy.astype(np.float64)))
    return (ty.detach().numpy(), tx.grad.numpy(), t.weight.grad.numpy(), t.bias.grad.numpy(),
            t.running_mean.numpy(), t.running_var.numpy())


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dtype,shift", [(np.float64, 3.0), (np.float32, 3.0), (np.float32, 1000.0)])
def test_batchnorm_matches_torch_on_both_paths(path, dtype, shift, train):
    """shift 1000 (|mean| ≫ std) is where a one-pass E[x²] − mean² in float32 would lose
    everything: the NumPy path switches to two passes there, the compiled one shifts its sums."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 3, 5, 7)) * np.array([1.0, 0.5, 2.0]).reshape(1, 3, 1, 1) + shift).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    layer = nn.BatchNorm2d(3).to(dtype=dtype.__name__)
    layer.weight.data[...] = [0.5, -1.5, 2.0]
    layer.bias.data[...] = [0.1, 0.2, -0.3]
    layer.running_mean[...] = shift
    layer.running_var[...] = [1.0, 0.25, 4.0]
    want = _torch_bn(layer, x, dy, train)
    layer.train(train)
    y = layer.forward(x)
    dx = layer.backward(dy)
    got = (y, dx, layer.weight.grad, layer.bias.grad, layer.running_mean, layer.running_var)
    # float32 folds y = x·scale + (bias − mean·scale), as PyTorch's CPU kernel does: with
    # |mean| = 1000 that rounds at 1000·2^−24 per unit of scale.
    rel = 1e-10 if dtype == np.float64 else 1e-6 if shift < 10 else 3e-4
    for name, a, b in zip(("y", "dx", "dweight", "dbias", "running_mean", "running_var"), got, want):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, b, rtol=rel, atol=rel * np.abs(b).max(), err_msg=name)


def test_batchnorm_gradcheck_float64(path):
    layer = nn.BatchNorm2d(3).to(dtype="float64")
    layer.weight.data[...] = [0.5, -1.5, 2.0]
    gradcheck_module(layer, np.random.default_rng(6).standard_normal((4, 3, 3, 5)) + 2.0)


def test_batchnorm_over_two_threads_equals_one(path, two_threads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 4, 16, 16))  # 2 chunks of 32 images
    dy = rng.standard_normal(x.shape)
    out = []
    for n in (2, 1):
        threads.set_threads(n)
        layer = nn.BatchNorm2d(4).to(dtype="float64")
        out.append((layer.forward(x), layer.backward(dy), layer.weight.grad.copy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_relu_forward_and_backward_over_two_threads(two_threads):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 4, 32, 32)).astype(np.float32)
    layer = nn.ReLU()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(dy), np.where(x > 0, dy, 0))
    d0 = dy.copy()
    assert gn.ops.relu_backward(dy, y, out=dy) is dy  # in place, chunk by chunk
    np.testing.assert_array_equal(dy, np.where(x > 0, d0, 0))


@pytest.mark.parametrize("size", [1, 2, 5, 9])
def test_lrn_window_sum_into_out_equals_the_plain_sum(size):
    from gpunet.nn.lrn import _window_sum
    a = np.random.default_rng(size).standard_normal((2, 11, 3))
    before, after = size // 2, (size - 1) // 2
    pad = np.pad(a, ((0, 0), (before, after), (0, 0)))
    want = sum(pad[:, o:o + 11] for o in range(size))
    out = np.full_like(a, np.nan)
    assert _window_sum(np, a, before, after, size, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(_window_sum(np, a, before, after, size), want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_is_the_same_select_on_both_paths(path, dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 3, 5)).astype(dtype)
    x[0, 0, :3] = [0.0, -0.0, np.nan]
    dy = rng.standard_normal((6, 3, 10)).astype(dtype)[..., ::2]  # a strided view
    dy[0, 0, :3] = [np.inf, np.nan, -np.inf]
    dy[1, 1] = -0.0
    layer = nn.ReLU()
    layer.forward(x)
    dx = layer.backward(dy)
    want = np.where(np.maximum(x, 0) > 0, dy, dtype(0))
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx.view(f"i{dx.itemsize}"), want.view(f"i{dx.itemsize}"))  # bit for bit
