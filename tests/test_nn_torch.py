"""Layers against PyTorch (CPU) in float64: forward, dx and every parameter gradient agree to
1e-10 relative (of the largest reference value). Skipped, with the reason, without torch."""

import math

import numpy as np
import pytest

import gpunet as gn

torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[test]' brings it")
nn, tnn = gn.nn, torch.nn
RTOL = 1e-10
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def close(ours, ref, what):
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch {ref.shape}"
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=RTOL * max(np.abs(ref).max(), 1e-300),
                               err_msg=what)


def compare(layer, tlayer, x, seed=1, dy=None):
    """Copy gpunet's parameters and buffers into tlayer, run both forward and backward, compare."""
    layer.to(dtype="float64")
    tlayer = tlayer.double()
    with torch.no_grad():
        named = dict(tlayer.named_parameters()) | dict(tlayer.named_buffers())
        for name, p in list(layer.named_parameters()) + [(n, b) for n, b in layer.named_buffers()]:
            value = p.data if hasattr(p, "data") and isinstance(p, nn.Parameter) else p
            named[name].copy_(torch.from_numpy(np.asarray(value)).reshape(named[name].shape))
    y = layer(x)
    tx = torch.from_numpy(x.copy()).requires_grad_(x.dtype.kind == "f")
    ty = tlayer(tx)
    close(y, ty.detach().numpy(), f"{layer!r} forward")
    dy = np.random.default_rng(seed).standard_normal(y.shape) if dy is None else dy
    dx = layer.backward(dy)
    ty.backward(torch.from_numpy(dy))
    if x.dtype.kind == "f":
        close(dx, tx.grad.numpy(), f"{layer!r} dx")
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        close(p.grad, tparams[name].grad.numpy().reshape(p.grad.shape), f"{layer!r} d{name}")
    return y


def randn(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# ---------------------------------------------------------------- convolution

CONV_CASES = [  # (in, out, kwargs, input shape)
    (3, 4, dict(kernel_size=3, padding=1), (2, 3, 7, 6)),
    (4, 6, dict(kernel_size=3, padding=2, dilation=2, groups=2), (2, 4, 7, 6)),
    (3, 3, dict(kernel_size=3, padding=1, groups=3, stride=2), (1, 3, 7, 6)),          # depthwise, N = 1
    (2, 6, dict(kernel_size=(3, 2), groups=2, dilation=(1, 3)), (2, 2, 6, 8)),           # depthwise × 3
    (2, 1, dict(kernel_size=(2, 3), padding="same", dilation=(2, 1)), (2, 2, 7, 6)),     # even kernel, O = 1
    (2, 3, dict(kernel_size=4, padding="same"), (2, 2, 5, 6)),
    (2, 3, dict(kernel_size=3, padding="valid", stride=2), (2, 2, 7, 7)),
] + [(2, 3, dict(kernel_size=k, padding=p, stride=s, padding_mode=m), (2, 2, 5, 6))
     for m in ("zeros", "reflect", "replicate", "circular")
     for k, p, s in ((3, "same", 1), ((3, 4), "same", 1), (3, (2, 1), 2), (2, 1, 1))]


@pytest.mark.parametrize("cin,cout,kw,shape", CONV_CASES)
def test_conv2d_matches_torch(cin, cout, kw, shape):
    layer = nn.Conv2d(cin, cout, bias_init="normal", **kw)
    compare(layer, tnn.Conv2d(cin, cout, **kw), randn(*shape))


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=4, padding="same", dilation=2),
                                dict(kernel_size=3, stride=2, groups=2), dict(kernel_size=3, padding=2,
                                                                              padding_mode="reflect")])
def test_conv1d_matches_torch(kw):
    layer = nn.Conv1d(4, 6, bias_init="normal", **kw)
    assert layer.weight.shape == (6, 4 // kw.get("groups", 1), kw["kernel_size"])  # PyTorch's layout
    compare(layer, tnn.Conv1d(4, 6, **kw), randn(2, 4, 11))


@pytest.mark.parametrize("cin,cout,kw,shape", [
    (3, 4, dict(kernel_size=2, stride=2), (2, 3, 4, 5)),                                 # U-Net upsampling
    (4, 6, dict(kernel_size=3, stride=2, padding=1, output_padding=1, groups=2, dilation=2), (2, 4, 4, 3)),
    (2, 1, dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 0)), (1, 2, 3, 3)),
    (3, 3, dict(kernel_size=3, stride=3, output_padding=(2, 1), groups=3), (2, 3, 2, 3)),
])
def test_conv_transpose2d_matches_torch(cin, cout, kw, shape):
    layer = nn.ConvTranspose2d(cin, cout, bias_init="normal", **kw)
    compare(layer, tnn.ConvTranspose2d(cin, cout, **kw), randn(*shape))


# ---------------------------------------------------------------- pooling

POOL_CASES = [(k, s, p, ceil, cip) for k, s, p in ((2, 2, 0), (3, 2, 1), (3, 3, 1), (2, 1, 1), (3, 2, 0))
              for ceil in (False, True) for cip in (True, False)]


@pytest.mark.parametrize("k,s,p,ceil,cip", POOL_CASES)
def test_pools_match_torch(k, s, p, ceil, cip):
    x = randn(2, 3, 7, 6)
    compare(nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=cip),
            tnn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=cip), x)
    if cip:
        compare(nn.MaxPool2d(k, s, p, ceil_mode=ceil), tnn.MaxPool2d(k, s, p, ceil_mode=ceil), x)


@pytest.mark.parametrize("out", [1, 2, 3, (4, None), (None, 3), (5, 7)])
@pytest.mark.parametrize("hw", [(7, 5), (8, 8), (3, 2)])
def test_adaptive_pools_match_torch(out, hw):
    x = randn(2, 3, *hw)
    compare(nn.AdaptiveAvgPool2d(out), tnn.AdaptiveAvgPool2d(out), x)
    compare(nn.AdaptiveMaxPool2d(out), tnn.AdaptiveMaxPool2d(out), x)


# ---------------------------------------------------------------- normalisation

@pytest.mark.parametrize("shape,norm_shape,kw", [((4, 5), 5, {}), ((2, 3, 4, 5), (4, 5), {}),
                                                 ((3, 6), 6, dict(elementwise_affine=False)),
                                                 ((3, 2, 6), 6, dict(bias=False))])
def test_layernorm_matches_torch(shape, norm_shape, kw):
    layer = nn.LayerNorm(norm_shape, **kw)
    for p in layer.parameters():  # not the trivial ones and zeros
        p.data[...] = np.random.default_rng(5).standard_normal(p.shape)
    compare(layer, tnn.LayerNorm(norm_shape, **kw), randn(*shape, scale=3.0) + 2.0)


@pytest.mark.parametrize("groups,shape,affine", [(2, (2, 6, 3, 2), True), (1, (3, 4, 5), True),
                                                 (4, (2, 4, 3, 3), False), (3, (2, 6), True)])
def test_groupnorm_matches_torch(groups, shape, affine):
    layer = nn.GroupNorm(groups, shape[1], affine=affine)
    for p in layer.parameters():
        p.data[...] = np.random.default_rng(5).standard_normal(p.shape)
    compare(layer, tnn.GroupNorm(groups, shape[1], affine=affine), randn(*shape) + 1.0)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls,tcls,shape", [(nn.BatchNorm2d, tnn.BatchNorm2d, (3, 4, 2, 3)),
                                            (nn.BatchNorm1d, tnn.BatchNorm1d, (5, 4))])
def test_batchnorm_without_running_stats_matches_torch(mode, cls, tcls, shape):
    layer, tlayer = cls(4, track_running_stats=False), tcls(4, track_running_stats=False)
    layer.weight.data[...] = np.linspace(0.5, 2.0, 4)
    if mode == "eval":
        layer.eval(), tlayer.eval()
    compare(layer, tlayer, randn(*shape, scale=2.0) + 1.0)
    assert list(layer.state_dict()) == list(tlayer.state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("size,alpha,beta,k,shape", [(5, 1e-2, 0.75, 1.0, (2, 7, 3, 2)),
                                                     (2, 0.5, 0.5, 2.0, (2, 4, 3)),
                                                     (9, 0.001, 0.75, 1.0, (2, 12, 2, 2)),
                                                     (4, 1.0, 1.5, 0.5, (1, 3, 2, 2))])
def test_local_response_norm_matches_torch(size, alpha, beta, k, shape):
    compare(nn.LocalResponseNorm(size, alpha, beta, k), tnn.LocalResponseNorm(size, alpha, beta, k),
            randn(*shape, scale=2.0))


def test_tf_cifar10_cnn_lrn_is_the_tutorial_tf_lrn():
    """tf.nn.lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75), written out: x / (1 + a·Σx²)^b."""
    x = randn(2, 64, 3, 3)
    lrn = [m for m in gn.models.tf_cifar10_cnn().modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrn) == 2
    sq = np.pad(x * x, ((0, 0), (4, 4), (0, 0), (0, 0)))
    sums = sum(sq[:, d:d + 64] for d in range(9))
    close(lrn[0](x), x / (1.0 + 0.001 / 9 * sums) ** 0.75, "tutorial LRN")


# ---------------------------------------------------------------- activations and utility layers

ACTIVATION_CASES = [
    ("gelu", lambda: nn.GELU(), lambda: tnn.GELU()),
    ("gelu-tanh", lambda: nn.GELU("tanh"), lambda: tnn.GELU(approximate="tanh")),
    ("silu", lambda: nn.SiLU(), lambda: tnn.SiLU()),
    ("elu", lambda: nn.ELU(), lambda: tnn.ELU()),
    ("elu-0.3", lambda: nn.ELU(0.3), lambda: tnn.ELU(0.3)),
    ("softplus", lambda: nn.Softplus(), lambda: tnn.Softplus()),
    ("softplus-beta2-thr3", lambda: nn.Softplus(2.0, 3.0), lambda: tnn.Softplus(2.0, 3.0)),
    ("logsoftmax", lambda: nn.LogSoftmax(), lambda: tnn.LogSoftmax(dim=-1)),
    ("logsoftmax-dim1", lambda: nn.LogSoftmax(dim=1), lambda: tnn.LogSoftmax(dim=1)),
    ("sigmoid", lambda: nn.Sigmoid(), lambda: tnn.Sigmoid()),
    ("identity", lambda: nn.Identity(), lambda: tnn.Identity()),
    ("zeropad", lambda: nn.ZeroPad2d((1, 0, 2, 3)), lambda: tnn.ZeroPad2d((1, 0, 2, 3))),
]


@pytest.mark.parametrize("name,make,tmake", ACTIVATION_CASES, ids=[c[0] for c in ACTIVATION_CASES])
def test_activations_match_torch(name, make, tmake):
    x = np.clip(randn(3, 4, 5, 6, scale=2.0), -3.9, 12.0)  # the GELUs agree to rounding above -4
    compare(make(), tmake(), x)


def test_embedding_padding_idx_matches_torch():
    layer = nn.Embedding(6, 3, padding_idx=-2)
    tlayer = tnn.Embedding(6, 3, padding_idx=-2)
    assert layer.padding_idx == tlayer.padding_idx == 4
    np.testing.assert_array_equal(layer.weight.data[4], 0)  # starts at zero, as in PyTorch
    idx = np.array([[4, 1, 4], [0, 4, 1]])
    compare(layer, tlayer, idx)
    np.testing.assert_array_equal(layer.weight.grad[4], 0)
    assert layer.weight.grad[1].any()


def test_residual_block_matches_torch():
    """A ResNet basic block with a projection shortcut, against the same block in PyTorch."""
    block = gn.models._basic_block(3, 4, 2)
    seq = nn.Sequential(*block)

    class TBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.body = tnn.Sequential(tnn.Conv2d(3, 4, 3, 2, 1, bias=False), tnn.BatchNorm2d(4), tnn.ReLU(),
                                       tnn.Conv2d(4, 4, 3, 1, 1, bias=False), tnn.BatchNorm2d(4))
            self.shortcut = tnn.Sequential(tnn.Conv2d(3, 4, 1, 2, bias=False), tnn.BatchNorm2d(4))

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    tblock = TBlock()
    tnamed = dict(tblock.named_parameters())
    ours = {k.removeprefix("0."): v for k, v in seq.named_parameters()}
    assert set(ours) == set(tnamed)  # PyTorch-style names: body.0.weight, shortcut.1.bias, ...
    compare(seq, _Renamed(tblock), randn(2, 3, 6, 5))


class _Renamed(tnn.Module):
    """Exposes a torch module's parameters under a "0." prefix, as in our Sequential."""

    def __init__(self, inner):
        super().__init__()
        self.add_module("0", inner)

    def forward(self, x):
        return getattr(self, "0")(x)


# ---------------------------------------------------------------- init

@pytest.mark.parametrize("make,tmake", [
    (lambda: nn.Linear(300, 40, init="torch_default"), lambda: tnn.Linear(300, 40)),
    (lambda: nn.Conv2d(12, 64, (3, 5), init="torch_default"), lambda: tnn.Conv2d(12, 64, (3, 5))),
    (lambda: nn.Conv2d(12, 48, 3, groups=4, init="torch_default"), lambda: tnn.Conv2d(12, 48, 3, groups=4)),
    (lambda: nn.ConvTranspose2d(8, 60, 3, init="torch_default"), lambda: tnn.ConvTranspose2d(8, 60, 3)),
])
def test_torch_default_init_matches_torch_distribution(make, tmake):
    """Same fans as torch, and both draws fill the same interval U(±1/sqrt(fan_in)) uniformly."""
    gn.manual_seed(0)
    torch.manual_seed(0)
    layer, tlayer = make(), tmake()
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(tlayer.weight)
    assert gn.nn.init.compute_fans(layer.weight.shape)[0] == fan_in
    bound = 1.0 / math.sqrt(fan_in)
    for ours, theirs in ((layer.weight.data, tlayer.weight), (layer.bias.data, tlayer.bias)):
        theirs = theirs.detach().numpy()
        for a in (ours, theirs):
            u = np.abs(a.astype(np.float64)) / bound   # U(0, 1) when the bound is right
            assert u.max() <= 1.0
            assert u.max() > 1.0 - 8.0 / u.size        # reaches the bound: P(fail) = e^-8
            assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)


def test_torch_default_bias_follows_weight_only_when_asked():
    gn.manual_seed(0)
    assert not nn.Linear(50, 20).bias.data.any()                          # gpunet's default: zeros
    assert nn.Linear(50, 20, init="torch_default").bias.data.any()        # PyTorch's bias with its weight
    assert not nn.Linear(50, 20, init="torch_default", bias_init="zeros").bias.data.any()
    b = nn.Linear(50, 200, bias_init="torch_default").bias.data
    assert 0.9 / math.sqrt(50) < np.abs(b).max() <= 1 / math.sqrt(50)
