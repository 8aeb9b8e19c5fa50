"""The convolution, pooling, normalisation, activation and utility layers that PyTorch users
reach for: float64 gradient checks on every backend, the numerics where gpunet deliberately
differs from PyTorch (left tails), and the argument errors."""

import math

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend
from gpunet.testing import gradcheck_module

from test_nn_layers import Reseeded

nn = gn.nn


def randn(dev, *shape, seed=0, away_from_zero=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    if away_from_zero:  # kinks (pool ties, ELU at 0) must not sit within eps of a sample
        a = np.sign(a) * (np.abs(a) + 0.1)
    return dev.asarray(a)


GRADCHECK_CASES = [
    ("conv-groups-dilation", lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias_init="normal"),
     (2, 4, 5, 4)),
    ("conv-depthwise", lambda: nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3), (1, 3, 5, 5)),
    ("conv-same-even", lambda: nn.Conv2d(2, 1, (2, 3), padding="same"), (2, 2, 4, 5)),
    ("conv-reflect", lambda: nn.Conv2d(2, 2, 3, padding=(2, 1), stride=2, padding_mode="reflect"), (1, 2, 5, 4)),
    ("conv-replicate", lambda: nn.Conv2d(2, 2, 3, padding="same", padding_mode="replicate"), (1, 2, 4, 4)),
    ("conv-circular", lambda: nn.Conv2d(2, 2, (3, 4), padding="same", padding_mode="circular"), (1, 2, 4, 5)),
    ("conv1d", lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2, dilation=2), (2, 2, 9)),
    ("conv-transpose", lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                                                  bias_init="normal"), (2, 2, 3, 3)),
    ("conv-transpose-dilated", lambda: nn.ConvTranspose2d(2, 1, 2, stride=(1, 2), dilation=2), (1, 2, 3, 2)),
    ("maxpool-ceil", lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 2, 6, 5)),
    ("avgpool-ceil-exclude-pad", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
     (1, 2, 6, 5)),
    ("adaptive-avg", lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 2, 5, 5)),
    ("global-avg", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 3, 2)),
    ("adaptive-max", lambda: nn.AdaptiveMaxPool2d((2, 3)), (2, 2, 5, 4)),
    ("layernorm", lambda: nn.LayerNorm((3, 4)), (2, 3, 4)),
    ("groupnorm", lambda: nn.GroupNorm(2, 4), (2, 4, 3)),
    ("batchnorm-no-running-stats", lambda: nn.BatchNorm2d(2, track_running_stats=False), (3, 2, 2, 2)),
    ("lrn", lambda: nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0), (2, 5, 2, 2)),
    ("gelu", lambda: nn.GELU(), (3, 7)),
    ("gelu-tanh", lambda: nn.GELU("tanh"), (3, 7)),
    ("silu", lambda: nn.SiLU(), (3, 7)),
    ("elu", lambda: nn.ELU(0.7), (3, 7)),
    ("softplus", lambda: nn.Softplus(2.0, threshold=1.0), (3, 7)),
    ("logsoftmax", lambda: nn.LogSoftmax(axis=0), (3, 4)),
    ("identity", lambda: nn.Identity(), (2, 3)),
    ("zeropad", lambda: nn.ZeroPad2d((1, 2, 0, 1)), (1, 2, 2, 3)),
    ("residual-identity", lambda: nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.Tanh())), (2, 3)),
    ("resnet-block", lambda: nn.Sequential(*gn.models._basic_block(2, 3, 2)), (2, 2, 4, 4)),
]


def _set_affine(layer):
    """Non-trivial norm weights, so their gradients are checked at a generic point."""
    for m in layer.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)) and m.weight is not None:
            m.weight.data[...] = np.linspace(0.5, 1.5, m.weight.size).reshape(m.weight.shape)


@pytest.mark.parametrize("name,make,shape", GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES])
def test_gradcheck(dev, name, make, shape):
    layer = make()
    _set_affine(layer)
    layer.to(dev, dtype="float64")
    checked = gradcheck_module(layer, randn(dev, *shape, away_from_zero=True))
    assert set(checked) == {"x"} | {n for n, _ in layer.named_parameters()}


def test_gradcheck_eval_mode_conv_rebuilds_padded_cols(dev):
    layer = nn.Conv2d(2, 2, 3, padding="same", padding_mode="reflect").to(dev, dtype="float64").eval()
    gradcheck_module(layer, randn(dev, 1, 2, 4, 4))


def test_gradcheck_dropout2d(dev):
    layer = Reseeded(nn.Dropout2d(0.5), dev)
    gradcheck_module(layer, randn(dev, 3, 4, 2, 2))


# ---------------------------------------------------------------- left tails and what differs from PyTorch

def test_sigmoid_keeps_relative_accuracy_in_the_left_tail(dev):
    x = np.array([-15.0, -20.0, -50.0, -80.0, -87.0], dtype=np.float32)  # down to the normal range
    ref = np.exp(x.astype(np.float64)) / (1 + np.exp(x.astype(np.float64)))
    layer = nn.Sigmoid()
    y = backend.to_numpy(layer(dev.asarray(x)))
    np.testing.assert_allclose(y, ref, rtol=1e-6)   # (1 + tanh(x/2))/2 gave 0 from x = -20
    dx = backend.to_numpy(layer.backward(dev.asarray(np.ones(5, dtype=np.float32))))
    np.testing.assert_allclose(dx, ref * (1 - ref), rtol=1e-6)
    assert (dx > 0).all()


def test_gelu_left_tail_is_accurate_where_torch_rounds_to_zero(dev):
    """PyTorch's 0.5·x·(1 + erf(x/√2)) is −0.0 at x = −10; x·erfc(−x/√2)/2 keeps the value."""
    x = np.array([-10.0, -6.0, -38.0])
    ref = np.array([x_ * math.erfc(-x_ / math.sqrt(2)) / 2 for x_ in x])
    y = backend.to_numpy(nn.GELU()(dev.asarray(x)))
    np.testing.assert_allclose(y, ref, rtol=1e-13)
    assert y[0] == pytest.approx(-7.619853024160527e-23, rel=1e-13)
    yt = backend.to_numpy(nn.GELU("tanh")(dev.asarray(x[:2])))
    u = math.sqrt(2 / math.pi) * (x[:2] + 0.044715 * x[:2] ** 3)
    np.testing.assert_allclose(yt, x[:2] / (1 + np.exp(-2 * u)), rtol=1e-13)
    assert (yt < 0).all()


def test_erfc_matches_math_erfc_over_the_line():
    t = np.concatenate([np.linspace(-6, 27, 3301), [0.0, 1.4999999, 1.5, -1.5, 1e-300]])
    ref = np.array([math.erfc(v) for v in t])
    got = gn.nn.smooth.erfc(t)
    np.testing.assert_allclose(got, ref, rtol=3e-14, atol=0)


def test_softplus_and_elu_stay_finite_for_large_inputs(dev):
    x = dev.asarray(np.array([-1e4, -30.0, 0.0, 30.0, 1e4]))
    with np.errstate(over="raise", invalid="raise"):
        sp = backend.to_numpy(nn.Softplus()(x))
        elu = backend.to_numpy(nn.ELU()(x))
    np.testing.assert_allclose(sp, [0.0, math.log1p(math.exp(-30)), math.log(2), 30.0, 1e4], rtol=1e-15)
    np.testing.assert_allclose(elu, [-1.0, math.expm1(-30), 0.0, 30.0, 1e4], rtol=1e-15)


def test_log_softmax_is_finite_where_log_of_softmax_is_not(dev):
    x = dev.asarray(np.array([[0.0, 1000.0, -1000.0]]))
    y = backend.to_numpy(nn.LogSoftmax()(x))
    np.testing.assert_allclose(y, [[-1000.0, 0.0, -2000.0]])


# ---------------------------------------------------------------- behaviour

def test_dropout2d_zeroes_whole_channels(dev):
    x = dev.asarray(np.ones((64, 32, 3, 3)))
    y = backend.to_numpy(nn.Dropout2d(0.5)(x))
    per_channel = y.reshape(64, 32, 9)
    assert (per_channel == per_channel[..., :1]).all()            # one draw per (n, c)
    assert set(np.unique(per_channel)) == {0.0, 2.0}
    assert abs((per_channel[..., 0] == 0).mean() - 0.5) < 5 * math.sqrt(0.25 / 2048)
    np.testing.assert_array_equal(backend.to_numpy(nn.Dropout2d(0.5).eval()(x)), backend.to_numpy(x))


def test_batchnorm_without_running_stats_has_no_buffers_and_uses_batch_stats_in_eval(dev):
    bn = nn.BatchNorm2d(2, track_running_stats=False).to(dev, dtype="float64").eval()
    assert bn.running_mean is None and list(bn.state_dict()) == ["weight", "bias"]
    x = np.random.default_rng(0).normal(3.0, 2.0, (4, 2, 3, 3))
    y = backend.to_numpy(bn(dev.asarray(x)))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    bn.load_state_dict(bn.state_dict())  # strict: round-trips without the missing buffers
    assert "track_running_stats=False" in repr(bn)


def test_layernorm_and_groupnorm_are_per_sample(dev):
    """Batch size 1 and train/eval give the same output: no batch statistics."""
    x = randn(dev, 3, 4, 5)
    for layer in (nn.LayerNorm(5).to(dev, dtype="float64"), nn.GroupNorm(2, 4).to(dev, dtype="float64")):
        full = backend.to_numpy(layer(x))
        one = backend.to_numpy(layer.eval()(x[1:2]))
        np.testing.assert_allclose(one, full[1:2], rtol=1e-12, atol=1e-12)


def test_global_average_pool_is_the_mean(dev):
    x = randn(dev, 2, 3, 5, 7)
    y = backend.to_numpy(nn.AdaptiveAvgPool2d(1)(x))
    np.testing.assert_allclose(y[..., 0, 0], backend.to_numpy(x).mean(axis=(2, 3)), rtol=1e-14)


def test_conv1d_weight_layout_and_repr():
    layer = nn.Conv1d(4, 6, 5, stride=2, padding=2, groups=2, dilation=3)
    assert layer.weight.shape == (6, 2, 5)
    assert repr(layer) == "Conv1d(4→6, kernel_size=5, stride=2, padding=2, dilation=3, groups=2)"
    assert repr(nn.Conv2d(2, 2, 3, padding="same", padding_mode="circular")) == \
        "Conv2d(2→2, kernel_size=(3, 3), padding='same', padding_mode='circular')"


@pytest.mark.parametrize("make,needle", [
    (lambda: nn.Conv2d(4, 6, 3, groups=4), r"groups expected to divide in_channels \(4\) and out_channels \(6\), got 4"),
    (lambda: nn.Conv2d(2, 2, 3, padding="full"), r"padding expected an int, a pair, 'valid' or 'same', got 'full'"),
    (lambda: nn.Conv2d(2, 2, 3, stride=2, padding="same"), r"padding='same' expected stride 1"),
    (lambda: nn.Conv2d(2, 2, 3, padding_mode="mirror"), r"padding_mode expected one of .*got 'mirror'"),
    (lambda: nn.Conv2d(2, 2, 3, dilation=0), r"dilation expected ints >= 1, got 0"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, dilation=3, output_padding=2),
     r"output_padding expected smaller than the stride \(2, 2\), got 2"),
    (lambda: nn.AvgPool2d(2, count_include_pad=1), r"count_include_pad expected True or False, got 1"),
    (lambda: nn.MaxPool2d(2, ceil_mode="yes"), r"ceil_mode expected True or False"),
    (lambda: nn.AdaptiveAvgPool2d(0), r"output_size expected an int >= 1 or a pair"),
    (lambda: nn.LayerNorm(()), r"normalized_shape expected an int or a non-empty tuple"),
    (lambda: nn.GroupNorm(3, 4), r"num_groups expected to divide num_channels \(4\), got 3"),
    (lambda: nn.LocalResponseNorm(0), r"size expected an int >= 1, got 0"),
    (lambda: nn.GELU("erf"), r"approximate expected 'none' or 'tanh', got 'erf'"),
    (lambda: nn.Softplus(beta=0), r"beta expected a finite number in \(0.0, inf\]"),
    (lambda: nn.LogSoftmax(axis=0, dim=1), r"give axis or dim, not both"),
    (lambda: nn.Identity(54, unused="x"), r"Identity: takes no arguments"),
    (lambda: nn.ZeroPad2d((1, 2)), r"ZeroPad2d: padding expected an int >= 0 or \(left, right, top, bottom\)"),
    (lambda: nn.Embedding(5, 2, padding_idx=5), r"padding_idx expected an int in \[-5, 5\) or None, got 5"),
    (lambda: nn.Residual(None), r"Residual: body expected a gn.nn.Module, got None"),
    (lambda: gn.models.resnet(21), r"depth expected 6n \+ 2"),
    (lambda: gn.models.tf_cifar10_cnn(lrn=1), r"batchnorm and lrn expected True or False"),
])
def test_argument_errors_name_the_value(make, needle):
    with pytest.raises((gn.GpunetValueError, gn.GpunetTypeError), match=needle):
        make()


@pytest.mark.parametrize("layer,shape,needle", [
    (lambda: nn.Conv2d(2, 2, 3, padding=3, padding_mode="reflect"), (1, 2, 3, 8),
     r"H and W larger than the padding"),
    (lambda: nn.Conv2d(2, 2, 3, dilation=3), (1, 2, 6, 9), r"H \+ 0 >= 7 and W \+ 0 >= 7"),
    (lambda: nn.Conv1d(2, 2, 3), (1, 2, 1, 8), r"Conv1d\(2→2.*expected input \(N, 2, L\)"),
    (lambda: nn.LayerNorm((3, 4)), (2, 4, 3), r"LayerNorm.*expected input \(\*, 3, 4\), got \(2, 4, 3\)"),
    (lambda: nn.Dropout2d(), (2, 3), r"Dropout2d.*expected input \(N, C, H, W\)"),
    (lambda: nn.LocalResponseNorm(3), (2, 3), r"at least 3 dimensions"),
    (lambda: nn.Residual(nn.Linear(3, 2)), (2, 3), r"body output \(2, 2\) and shortcut output \(2, 3\) differ"),
])
def test_shape_errors(layer, shape, needle):
    with pytest.raises(gn.ShapeError, match=needle):
        layer()(np.zeros(shape, dtype=np.float32))


def test_embedding_padding_idx_row_gets_no_gradient(dev):
    emb = nn.Embedding(4, 3, padding_idx=0).to(dev, dtype="float64")
    emb(dev.asarray(np.array([0, 2, 0, 2])))
    emb.backward(dev.asarray(np.ones((4, 3))))
    grad = backend.to_numpy(emb.weight.grad)
    np.testing.assert_array_equal(grad[0], 0)
    np.testing.assert_array_equal(grad[2], 2)


# ---------------------------------------------------------------- model zoo

@pytest.mark.parametrize("name,params", [("resnet20", 272_186), ("resnet8", 77_754)])
def test_resnets_pad_28_to_32_and_pool_globally(name, params):
    model = gn.models.get(name)(in_channels=1, classes=10, image_size=28)
    assert sum(p.size for p in model.parameters()) == params
    assert isinstance(model[0], nn.ZeroPad2d) and model[0].padding == (2, 2, 2, 2)
    assert isinstance(model[-3], nn.AdaptiveAvgPool2d)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert model(x).shape == (2, 10)
    assert not isinstance(gn.models.resnet8(3, 10, 32)[0], nn.ZeroPad2d)


def test_tf_cifar10_cnn_norm_layers():
    kinds = lambda m: [type(layer).__name__ for layer in m]  # noqa: E731
    tutorial = kinds(gn.models.tf_cifar10_cnn())
    assert tutorial[:8] == ["Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm",     # conv-pool-lrn
                            "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]     # conv-lrn-pool
    bn = kinds(gn.models.tf_cifar10_cnn(batchnorm=True))
    assert "LocalResponseNorm" not in bn and bn.count("BatchNorm2d") == 2
    both = kinds(gn.models.tf_cifar10_cnn(batchnorm=True, lrn=True))
    assert both.count("LocalResponseNorm") == 2 and both.count("BatchNorm2d") == 2


def test_gpunet_train_builds_the_padded_resnet_for_28x28_images():
    from gpunet.cli import recipe as runconfig
    cfg = runconfig.resolve({"model": "resnet20", "dataset": "fashion-mnist"})
    model = runconfig.build_model(cfg, (1, 28, 28), 10)
    assert isinstance(model[0], nn.ZeroPad2d) and sum(p.size for p in model.parameters()) == 272_186
