"""No layer returns memory that it writes again: an output (or a returned dx) stays as it was
after the next forward (and backward) call, and shares no memory with the layer's reused
work buffers. Single-image inference (`a = model(x1); b = model(x2)`) and 1-channel heads
are the cases that once broke (Conv2d returned its GEMM buffer when N = 1 or out_channels = 1).

Every Module class exported by gn.nn must have a case here: a new layer without one fails
test_every_layer_has_a_case."""

import numpy as np
import pytest

import gpunet as gn

nn = gn.nn

CASES = {  # class name -> [(constructor, input shape)]; integer inputs for Embedding
    "Linear": [(lambda: nn.Linear(4, 3), (1, 4)), (lambda: nn.Linear(4, 1), (3, 4))],
    "Flatten": [(lambda: nn.Flatten(), (1, 2, 3))],
    "Conv2d": [(lambda: nn.Conv2d(2, 3, 3, padding=1), (1, 2, 4, 4)),          # N = 1
               (lambda: nn.Conv2d(2, 1, 3), (2, 2, 4, 4)),                     # out_channels = 1
               (lambda: nn.Conv2d(2, 4, 3, groups=2, padding="same", padding_mode="reflect"), (1, 2, 4, 4)),
               (lambda: nn.Conv2d(2, 3, 3), (2, 2, 5, 4))],
    "Conv1d": [(lambda: nn.Conv1d(2, 1, 3), (1, 2, 6)), (lambda: nn.Conv1d(2, 3, 3, padding="same"), (2, 2, 6))],
    "ConvTranspose2d": [(lambda: nn.ConvTranspose2d(2, 1, 2, stride=2), (1, 2, 3, 3)),
                        (lambda: nn.ConvTranspose2d(2, 3, 3, groups=1), (2, 2, 3, 3))],
    "MaxPool2d": [(lambda: nn.MaxPool2d(2), (1, 1, 4, 4)), (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 2, 5, 5))],
    "AvgPool2d": [(lambda: nn.AvgPool2d(2), (1, 1, 4, 4)),
                  (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (1, 2, 5, 5))],
    "AdaptiveAvgPool2d": [(lambda: nn.AdaptiveAvgPool2d(1), (1, 2, 3, 3)), (lambda: nn.AdaptiveAvgPool2d(2), (1, 1, 5, 3))],
    "AdaptiveMaxPool2d": [(lambda: nn.AdaptiveMaxPool2d(1), (1, 2, 3, 3)), (lambda: nn.AdaptiveMaxPool2d(2), (1, 1, 5, 3))],
    "ReLU": [(lambda: nn.ReLU(), (1, 5)), (lambda: nn.ReLU(mask=True), (1, 9))],
    "LeakyReLU": [(lambda: nn.LeakyReLU(0.1), (1, 5))],
    "Sigmoid": [(lambda: nn.Sigmoid(), (1, 5))],
    "Tanh": [(lambda: nn.Tanh(), (1, 5))],
    "Softmax": [(lambda: nn.Softmax(), (1, 5))],
    "LogSoftmax": [(lambda: nn.LogSoftmax(), (1, 5))],
    "GELU": [(lambda: nn.GELU(), (1, 5)), (lambda: nn.GELU("tanh"), (1, 5))],
    "SiLU": [(lambda: nn.SiLU(), (1, 5))],
    "ELU": [(lambda: nn.ELU(), (1, 5))],
    "Softplus": [(lambda: nn.Softplus(), (1, 5))],
    "Dropout": [(lambda: nn.Dropout(0.5), (1, 6)), (lambda: nn.Dropout(0.5, scale=False), (1, 6))],
    "Dropout2d": [(lambda: nn.Dropout2d(0.5), (1, 4, 2, 2))],
    "BatchNorm1d": [(lambda: nn.BatchNorm1d(3), (4, 3))],
    "BatchNorm2d": [(lambda: nn.BatchNorm2d(2), (2, 2, 2, 2)),
                    (lambda: nn.BatchNorm2d(2, track_running_stats=False, affine=False), (2, 2, 2, 2))],
    "LayerNorm": [(lambda: nn.LayerNorm(4), (1, 4)), (lambda: nn.LayerNorm(4, elementwise_affine=False), (1, 4))],
    "GroupNorm": [(lambda: nn.GroupNorm(2, 4), (1, 4, 2)), (lambda: nn.GroupNorm(2, 4, affine=False), (1, 4, 2))],
    "LocalResponseNorm": [(lambda: nn.LocalResponseNorm(3), (1, 4, 2, 2))],
    "Embedding": [(lambda: nn.Embedding(5, 3), (1, 4)), (lambda: nn.Embedding(5, 3, padding_idx=0), (2, 2))],
    "Identity": [(lambda: nn.Identity(), (1, 3))],
    "ZeroPad2d": [(lambda: nn.ZeroPad2d(1), (1, 1, 2, 2))],
    "Residual": [(lambda: nn.Residual(nn.Conv2d(2, 2, 3, padding=1)), (1, 2, 3, 3)),
                 (lambda: nn.Residual(nn.Identity()), (1, 2))],
    "Sequential": [(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                          nn.Linear(2, 1)), (1, 1, 4, 4)),
                   (lambda: gn.models.resnet8(1, 3, image_size=8), (1, 1, 8, 8))],
}


def _layer_classes():
    return sorted(name for name in dir(nn) if isinstance(getattr(nn, name), type)
                  and issubclass(getattr(nn, name), nn.Module) and name != "Module")


def test_every_layer_has_a_case():
    missing = [name for name in _layer_classes() if name not in CASES]
    assert not missing, f"add aliasing cases for {missing}"


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5, size=shape), rng.standard_normal(shape)


def _scratch_buffers(model):
    return [buf for m in model.modules() for buf, _ in m.__dict__.get("_scratch_bufs", {}).values()]


def _assert_owned(model, a, what):
    for buf in _scratch_buffers(model):
        assert not np.shares_memory(a, buf), f"{what} shares memory with a reused work buffer"


@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n]))])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_and_dx_are_not_overwritten_by_the_next_call(name, index, mode):
    make, shape = CASES[name][index]
    model = make().to(dtype="float64")
    model.train(mode == "train")
    ints = name == "Embedding"

    def x_of(seed):
        i, f = _inputs(shape, seed)
        return i if ints else f

    x1, x2 = x_of(1), x_of(2)
    y1 = model(x1)
    kept_y = y1.copy()
    y2 = model(x2)
    np.testing.assert_array_equal(y1, kept_y, err_msg=f"{model!r}: forward(x2) overwrote forward(x1)'s output")
    _assert_owned(model, y1, f"{type(model).__name__} output")
    _assert_owned(model, y2, f"{type(model).__name__} output")

    rng = np.random.default_rng(3)
    model(x1)
    dx1 = model.backward(rng.standard_normal(y1.shape))
    if ints:
        assert dx1 is None
        return
    kept_dx = dx1.copy()
    model(x2)
    model.backward(rng.standard_normal(y1.shape))
    np.testing.assert_array_equal(dx1, kept_dx, err_msg=f"{model!r}: the next backward overwrote dx")
    _assert_owned(model, dx1, f"{type(model).__name__} dx")
