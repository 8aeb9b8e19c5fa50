"""Layers: float64 gradient checks of dx and every parameter, forward values against
naive references, Dropout statistics and BatchNorm running statistics, and the errors
a user meets (each naming the layer, what it expected and what it got)."""

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend
from gpunet.nn import Module
from gpunet.testing import gradcheck_module

nn = gn.nn


def randn(dev, *shape, seed=0, away_from_zero=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    if away_from_zero:  # kinks at 0 (ReLU) must not sit within eps of a sample
        a = np.sign(a) * (np.abs(a) + 0.1)
    return dev.asarray(a)


def check(layer, dev, x, **kw):
    layer.to(dev, dtype="float64")
    return gradcheck_module(layer, x, **kw)


# ---------------------------------------------------------------- gradient checks

GRADCHECK_CASES = [
    ("linear", lambda: nn.Linear(5, 3, bias_init="uniform"), (4, 5)),
    ("linear-nobias-3d", lambda: nn.Linear(5, 3, bias=False), (2, 3, 5)),
    ("conv-s2-p1-nonsquare", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 7, 5)),
    ("conv-rect-kernel", lambda: nn.Conv2d(2, 3, (2, 3), stride=(1, 2), padding=(0, 1)), (2, 2, 5, 6)),
    ("maxpool-3x3-s2", lambda: nn.MaxPool2d(3, stride=2), (2, 2, 7, 7)),
    ("maxpool-3x3-s2-p1", lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 6, 5)),
    ("maxpool-2x2", lambda: nn.MaxPool2d(2), (2, 2, 4, 6)),
    ("avgpool-3x3-s2", lambda: nn.AvgPool2d(3, stride=2), (2, 2, 7, 7)),
    ("avgpool-3x3-s2-p1", lambda: nn.AvgPool2d(3, stride=2, padding=1), (1, 2, 6, 5)),
    ("flatten", lambda: nn.Flatten(), (2, 3, 4)),
    ("relu", lambda: nn.ReLU(), (3, 5)),
    ("relu-mask", lambda: nn.ReLU(mask=True), (3, 11)),
    ("leaky-relu", lambda: nn.LeakyReLU(0.1), (3, 5)),
    ("sigmoid", lambda: nn.Sigmoid(), (3, 5)),
    ("tanh", lambda: nn.Tanh(), (3, 5)),
    ("softmax", lambda: nn.Softmax(), (3, 5)),
    ("softmax-axis1", lambda: nn.Softmax(axis=1), (2, 3, 4)),
    ("batchnorm1d", lambda: nn.BatchNorm1d(3), (5, 3)),
    ("batchnorm1d-ncl", lambda: nn.BatchNorm1d(3), (4, 3, 2)),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3), (2, 3, 3, 2)),
    ("batchnorm2d-noaffine", lambda: nn.BatchNorm2d(3, affine=False), (2, 3, 2, 2)),
]


@pytest.mark.parametrize("name,make,shape", GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES])
def test_gradcheck(dev, name, make, shape):
    layer = make()
    checked = check(layer, dev, randn(dev, *shape, away_from_zero=True))
    assert set(checked) == {"x"} | {n for n, _ in layer.named_parameters()}


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.BatchNorm2d(3), (2, 3, 2, 2)),
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 4)),  # backward rebuilds cols
    (lambda: nn.Dropout(0.4), (3, 4)),
    (lambda: nn.Dropout(0.4, scale=False), (3, 4)),
])
def test_gradcheck_eval_mode(dev, make, shape):
    layer = make()
    if isinstance(layer, nn.BatchNorm2d):  # non-trivial running statistics
        layer.train().forward(randn(gn.device("cpu"), *shape, seed=3).astype(np.float32))
    layer.eval()
    check(layer, dev, randn(dev, *shape))


class Reseeded(Module):
    """Runs Dropout with its generator reseeded before each forward: the same mask every call."""

    def __init__(self, inner, dev, seed=7):
        super().__init__()
        self.inner, self.seed = inner, seed
        inner.generator = backend.Device(dev.kind, dev.index, seed=seed)

    def forward(self, x):
        self.inner.generator.seed(self.seed)
        return self.inner.forward(x)

    def backward(self, dy):
        return self.inner.backward(dy)


@pytest.mark.parametrize("scale", [True, False])
def test_gradcheck_dropout_train(dev, scale):
    layer = Reseeded(nn.Dropout(0.5, scale=scale), dev)
    x = randn(dev, 4, 6)
    check(layer, dev, x)
    kept = backend.to_numpy(layer.forward(x) != 0).mean()
    assert 0 < kept < 1  # the mask really drops and keeps, so the check is not trivial


class AsIndices(Module):
    """Feeds a float64 array (from gradcheck) to an Embedding as rounded int64 indices."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner.forward(backend.xp_of(x).rint(x).astype(np.int64))

    def backward(self, dy):
        return self.inner.backward(dy)


def test_gradcheck_embedding_duplicates(dev):
    emb = AsIndices(nn.Embedding(6, 3))
    idx = dev.asarray(np.array([[1, 4, 1], [4, 4, 0]], dtype=np.float64))  # 1 twice, 4 three times
    check(emb, dev, idx, check_input=False)


class WithPenalty(Module):
    """Output = [y.ravel(), regularization_loss]: with dy's last entry 1 the checked scalar
    is Σ y·dy + penalty, so the numeric gradient includes the regularizers."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner.forward(x)
        self._shape = y.shape
        xp = backend.xp_of(y)
        return xp.concatenate([y.reshape(-1), xp.reshape(xp.asarray(self.inner.regularization_loss()), (1,))])

    def backward(self, dy):
        return self.inner.backward(dy[:-1].reshape(self._shape))


def _penalty_dy(dev, n, seed=1):
    dy = np.random.default_rng(seed).standard_normal(n + 1)
    dy[-1] = 1.0
    return dev.asarray(dy)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Linear(4, 3, kernel_regularizer=gn.regularizers.L2(0.3)), (5, 4)),
    (lambda: nn.Linear(4, 3, kernel_regularizer=gn.regularizers.L1(0.2),
                       activity_regularizer=gn.regularizers.L2(0.1)), (5, 4)),
    (lambda: nn.Linear(4, 3, kernel_regularizer=gn.regularizers.L1L2(0.1, 0.2),
                       activity_regularizer=gn.regularizers.L1(0.05)), (2, 4)),
    (lambda: nn.Conv2d(2, 2, 3, padding=1, kernel_regularizer=gn.regularizers.L2(0.1),
                       activity_regularizer=gn.regularizers.L1L2(0.01, 0.02)), (1, 2, 4, 3)),
])
def test_gradcheck_regularized(dev, make, shape):
    layer = WithPenalty(make())
    layer.to(dev, dtype="float64")
    n = int(np.prod(layer.inner.forward(randn(dev, *shape)).shape))
    gradcheck_module(layer, randn(dev, *shape), dy=_penalty_dy(dev, n))


def test_gradcheck_regularized_embedding(dev):
    inner = nn.Embedding(5, 3, kernel_regularizer=gn.regularizers.L2(0.2),
                         activity_regularizer=gn.regularizers.L1(0.1))
    layer = WithPenalty(AsIndices(inner))
    layer.to(dev, dtype="float64")
    idx = dev.asarray(np.array([0, 3, 3, 1], dtype=np.float64))
    gradcheck_module(layer, idx, dy=_penalty_dy(dev, 4 * 3), check_input=False)


def test_gradcheck_small_cnn(dev):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3), nn.Tanh())
    checked = check(model, dev, randn(dev, 2, 1, 4, 4))
    assert {"0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"} <= set(checked)


# ---------------------------------------------------------------- forward references

def naive_conv(x, w, b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    xp_ = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    N, _, Hp, Wp = xp_.shape
    O, C, kh, kw = w.shape
    Ho, Wo = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    y[n, o, i, j] = (xp_[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw] * w[o]).sum() + b[o]
    return y


def naive_pool(x, k, s, p, op):
    pad_value = -np.inf if op == "max" else 0.0
    xp_ = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=pad_value)
    Ho, Wo = (xp_.shape[2] - k) // s + 1, (xp_.shape[3] - k) // s + 1
    y = np.zeros(x.shape[:2] + (Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            win = xp_[:, :, i * s:i * s + k, j * s:j * s + k]
            y[:, :, i, j] = win.max(axis=(2, 3)) if op == "max" else win.mean(axis=(2, 3))
    return y


def test_linear_forward_matches_numpy(dev):
    layer = nn.Linear(6, 4, bias_init="normal").to(dev, dtype="float64")
    x = randn(dev, 3, 6)
    W, b = backend.to_numpy(layer.weight.data), backend.to_numpy(layer.bias.data)
    np.testing.assert_allclose(backend.to_numpy(layer(x)), backend.to_numpy(x) @ W.T + b, rtol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,shape", [
    ((3, 3), (2, 2), (1, 1), (2, 3, 7, 5)),
    ((2, 3), (1, 2), (0, 1), (1, 2, 5, 6)),
    ((1, 1), (1, 1), (0, 0), (2, 4, 3, 3)),
])
def test_conv_forward_matches_naive_loop(dev, kernel, stride, padding, shape):
    layer = nn.Conv2d(shape[1], 4, kernel, stride=stride, padding=padding, bias_init="normal")
    layer.to(dev, dtype="float64")
    x = randn(dev, *shape)
    ref = naive_conv(backend.to_numpy(x), backend.to_numpy(layer.weight.data),
                     backend.to_numpy(layer.bias.data), stride, padding)
    np.testing.assert_allclose(backend.to_numpy(layer(x)), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op,k,s,p", [("max", 3, 2, 0), ("max", 3, 2, 1), ("max", 2, 2, 0),
                                      ("avg", 3, 2, 0), ("avg", 3, 2, 1), ("avg", 2, 1, 1)])
def test_pool_forward_matches_naive_loop(dev, op, k, s, p):
    layer = (nn.MaxPool2d if op == "max" else nn.AvgPool2d)(k, stride=s, padding=p)
    x = randn(dev, 2, 3, 7, 6).astype(np.float32)
    ref = naive_pool(backend.to_numpy(x).astype(np.float64), k, s, p, op)
    np.testing.assert_allclose(backend.to_numpy(layer(x)), ref, rtol=1e-6, atol=1e-6)


def test_maxpool_ties_route_to_exactly_one_element(dev):
    """All-equal input, overlapping 3x3/2 windows: each window's dy lands on one element, its first."""
    x = dev.asarray(np.ones((1, 1, 5, 5), dtype=np.float32))
    layer = nn.MaxPool2d(3, stride=2)
    y = layer(x)
    dy = np.arange(1, 1 + y.size, dtype=np.float32).reshape(y.shape)  # distinct per window
    dx = backend.to_numpy(layer.backward(dev.asarray(dy)))
    expected = np.zeros((5, 5), dtype=np.float32)
    for i in range(2):
        for j in range(2):
            expected[2 * i, 2 * j] += dy[0, 0, i, j]  # the first element of window (i, j)
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_softmax_and_sigmoid_do_not_overflow(dev):
    x = dev.asarray(np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32))
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is expected
        y = backend.to_numpy(nn.Softmax()(x))
        s = backend.to_numpy(nn.Sigmoid()(x))
    np.testing.assert_allclose(y, [[0, 0, 1]], atol=1e-7)
    np.testing.assert_allclose(s, [[0, 0.5, 1]], atol=1e-7)


def test_leaky_relu_values(dev):
    x = dev.asarray(np.array([-2.0, -0.5, 0.0, 3.0], dtype=np.float32))
    for a in (0.01, -0.5, 2.0):
        y = backend.to_numpy(nn.LeakyReLU(a)(x))
        np.testing.assert_allclose(y, np.where(backend.to_numpy(x) > 0, backend.to_numpy(x), a * backend.to_numpy(x)))


# ---------------------------------------------------------------- BatchNorm statistics

def test_batchnorm_train_normalises_and_updates_running_stats(dev):
    bn = nn.BatchNorm2d(3, momentum=0.1).to(dev, dtype="float64")
    x_host = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 3, 5, 5))
    y = backend.to_numpy(bn(dev.asarray(x_host)))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)  # eps = 1e-5 against var ~ 9
    mean, var_unbiased = x_host.mean(axis=(0, 2, 3)), x_host.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bn.running_var), 0.9 + 0.1 * var_unbiased, rtol=1e-12)
    assert int(backend.to_numpy(bn.num_batches_tracked)) == 1
    bn.eval()
    y_eval = backend.to_numpy(bn(dev.asarray(x_host)))
    ref = (x_host - 0.1 * mean[None, :, None, None]) / np.sqrt(0.9 + 0.1 * var_unbiased + 1e-5)[None, :, None, None]
    np.testing.assert_allclose(y_eval, ref, rtol=1e-10)
    assert int(backend.to_numpy(bn.num_batches_tracked)) == 1  # eval leaves the statistics alone


def test_batchnorm_cumulative_average_when_momentum_none(dev):
    bn = nn.BatchNorm1d(2, momentum=None).to(dev, dtype="float64")
    batches = [np.random.default_rng(s).normal(s, 1.0, size=(6, 2)) for s in range(3)]
    for b in batches:
        bn(dev.asarray(b))
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean), np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-12)


def test_batchnorm_one_value_per_channel_in_training_raises():
    with pytest.raises(gn.ShapeError, match=r"more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), dtype=np.float32))


# ---------------------------------------------------------------- Embedding

def test_embedding_forward_and_sparse_accumulating_grad(dev):
    emb = nn.Embedding(10, 4).to(dev, dtype="float64")
    idx_host = np.array([[2, 7, 2], [2, 9, 7]])
    y = emb(dev.asarray(idx_host))
    W = backend.to_numpy(emb.weight.data)
    np.testing.assert_array_equal(backend.to_numpy(y), W[idx_host])
    dy = np.random.default_rng(0).standard_normal((2, 3, 4))
    emb.backward(dev.asarray(dy))
    ref = np.zeros_like(W)
    np.add.at(ref, idx_host.reshape(-1), dy.reshape(-1, 4))
    grad = backend.to_numpy(emb.weight.grad)
    np.testing.assert_allclose(grad, ref, rtol=1e-12)
    untouched = np.setdiff1d(np.arange(10), idx_host)
    assert not grad[untouched].any()  # only the rows looked up


def test_embedding_rejects_bad_indices():
    emb = nn.Embedding(5, 2)
    with pytest.raises(gn.GpunetValueError, match=r"Embedding\(5, 2\) expected indices in \[0, 5\), got 7 "
                                                  r"at position \(1, 0\)"):
        emb(np.array([[0, 1], [7, -1]]))
    with pytest.raises(gn.GpunetTypeError, match="integer indices, got dtype float32"):
        emb(np.zeros(3, dtype=np.float32))


# ---------------------------------------------------------------- Dropout

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_inverted_dropout_keeps_the_mean(dev, p):
    n = 200_000
    y = backend.to_numpy(nn.Dropout(p)(dev.asarray(np.ones(n, dtype=np.float64))))
    # Each output is keep/(1−p): mean 1, variance p/(1−p). 5 standard deviations of the mean.
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)
    assert abs((y == 0).mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / (1 - p)])


def test_dropout_eval_modes(dev):
    x = randn(dev, 8, 5).astype(np.float32)
    inverted, classic = nn.Dropout(0.3).eval(), nn.Dropout(0.3, scale=False).eval()
    np.testing.assert_array_equal(backend.to_numpy(inverted(x)), backend.to_numpy(x))
    np.testing.assert_allclose(backend.to_numpy(classic(x)), backend.to_numpy(x) * 0.7, rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(classic.backward(dev.asarray(np.ones((8, 5), np.float32)))), 0.7)


def test_classic_dropout_train_keeps_values_unscaled(dev):
    x = dev.asarray(np.full(10_000, 2.0, dtype=np.float32))
    y = backend.to_numpy(nn.Dropout(0.5, scale=False)(x))
    assert set(np.unique(y)) == {0.0, 2.0}


def test_dropout_is_reproducible_with_manual_seed(dev):
    x = dev.asarray(np.ones((4, 50), dtype=np.float32))
    gn.manual_seed(11)
    a = backend.to_numpy(nn.Dropout(0.5)(x))
    gn.manual_seed(11)
    b = backend.to_numpy(nn.Dropout(0.5)(x))
    np.testing.assert_array_equal(a, b)
    assert (a != backend.to_numpy(nn.Dropout(0.5)(x))).any()


# ---------------------------------------------------------------- errors

def test_linear_shape_error_names_layer_and_both_shapes():
    with pytest.raises(gn.ShapeError) as e:
        nn.Linear(784, 256)(np.zeros((32, 28, 28), dtype=np.float32))
    assert "Linear(784→256) expected input (N, 784)" in str(e.value) and "got (32, 28, 28)" in str(e.value)


@pytest.mark.parametrize("layer,shape,needle", [
    (lambda: nn.Conv2d(3, 4, 3), (2, 1, 8, 8), r"Conv2d\(3→4.*expected input \(N, 3, H, W\), got \(2, 1, 8, 8\)"),
    (lambda: nn.Conv2d(1, 4, 5), (2, 1, 3, 8), r"kernel must fit.*got \(2, 1, 3, 8\)"),
    (lambda: nn.MaxPool2d(2), (4, 4), r"MaxPool2d.*expected input \(N, C, H, W\), got \(4, 4\)"),
    (lambda: nn.BatchNorm1d(4), (8, 3), r"BatchNorm1d\(4\) expected input \(N, 4\) or \(N, 4, L\), got \(8, 3\)"),
    (lambda: nn.BatchNorm2d(4), (8, 4), r"BatchNorm2d\(4\) expected input \(N, 4, H, W\), got \(8, 4\)"),
    (lambda: nn.Softmax(axis=2), (8, 4), r"Softmax\(axis=2\) expected input at least 3 dimensions"),
])
def test_shape_errors(layer, shape, needle):
    with pytest.raises(gn.ShapeError, match=needle):
        layer()(np.zeros(shape, dtype=np.float32))


def test_dtype_errors_name_both_dtypes():
    layer = nn.Linear(4, 2)
    with pytest.raises(gn.GpunetTypeError, match=r"Linear\(4→2\) expected a float32 input.*got float64"):
        layer(np.zeros((3, 4)))
    with pytest.raises(gn.GpunetTypeError, match=r"expected a floating input \(float32\), got uint8"):
        layer(np.zeros((3, 4), dtype=np.uint8))
    with pytest.raises(gn.GpunetTypeError, match=r"ReLU\(\) expected a floating input.*got int64"):
        nn.ReLU()(np.zeros(3, dtype=np.int64))
    with pytest.raises(gn.GpunetTypeError, match="expected input to be an array"):
        layer([[0.0] * 4])


def test_nonfinite_input_raises_only_with_checks():
    x = np.ones((2, 4), dtype=np.float32)
    x[1, 2] = np.nan
    nn.Linear(4, 2)(x)  # checks off: no scan, no error
    with gn.checks():
        with pytest.raises(gn.NonFiniteError, match=r"Linear\(4→2\) got a non-finite input.*index \(1, 2\)"):
            nn.Linear(4, 2)(x)
        with pytest.raises(gn.NonFiniteError, match=r"ReLU"):
            nn.ReLU()(x)


@pytest.mark.parametrize("layer", [nn.Linear(3, 2), nn.Conv2d(1, 1, 1), nn.MaxPool2d(2), nn.AvgPool2d(2),
                                   nn.ReLU(), nn.Sigmoid(), nn.Dropout(), nn.BatchNorm1d(2),
                                   nn.Embedding(3, 2), nn.Flatten(), nn.Softmax()],
                         ids=lambda m: type(m).__name__)
def test_backward_before_forward(layer):
    with pytest.raises(gn.GpunetValueError, match="backward called before forward"):
        layer.backward(np.zeros((2, 2), dtype=np.float32))


def test_backward_with_wrong_dy_shape():
    layer = nn.Linear(3, 2)
    layer(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(gn.ShapeError, match=r"expected dy of the output's shape \(4, 2\), got \(4, 3\)"):
        layer.backward(np.zeros((4, 3), dtype=np.float32))


@pytest.mark.parametrize("make,needle", [
    (lambda: nn.Linear(0, 3), "Linear: in_features expected an int >= 1, got 0"),
    (lambda: nn.Linear(3, 2.5), "Linear: out_features expected an int >= 1, got 2.5"),
    (lambda: nn.Conv2d(1, 1, 3, stride=0), "Conv2d: stride expected ints >= 1, got 0"),
    (lambda: nn.Conv2d(1, 1, 3, padding=-1), "Conv2d: padding expected ints >= 0, got -1"),
    (lambda: nn.Conv2d(1, 1, (3, 3, 3)), "Conv2d: kernel_size expected an int or a pair of ints"),
    (lambda: nn.MaxPool2d(3, padding=2), "MaxPool2d: padding expected at most half the kernel size"),
    (lambda: nn.Dropout(1.0), "Dropout: p expected a finite number in [0.0, 1.0), got 1.0"),
    (lambda: nn.Dropout(-0.1), "Dropout: p expected a finite number in [0.0, 1.0), got -0.1"),
    (lambda: nn.BatchNorm2d(3, momentum=1.5), "BatchNorm2d: momentum expected a finite number in [0.0, 1.0], got 1.5"),
    (lambda: nn.BatchNorm2d(3, eps=0), "BatchNorm2d: eps expected a finite number in (0.0, inf], got 0"),
    (lambda: nn.LeakyReLU(float("nan")), "LeakyReLU: negative_slope expected a finite number"),
    (lambda: nn.Embedding(5, 0), "Embedding: embedding_dim expected an int >= 1, got 0"),
    (lambda: nn.Linear(3, 2, init="xavier"), "init: expected one of ['zeros', 'ones', 'constant'"),
    (lambda: nn.Linear(3, 2, bias_init="nope"), "bias_init: expected one of"),
])
def test_hyperparameter_errors_name_argument_and_value(make, needle):
    with pytest.raises(gn.GpunetValueError) as e:
        make()
    assert needle in str(e.value)


def test_regularizer_argument_must_be_a_regularizer():
    with pytest.raises(gn.GpunetTypeError, match="kernel_regularizer expected None or a regularizer"):
        nn.Linear(3, 2, kernel_regularizer=0.01)
