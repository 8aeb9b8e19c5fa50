"""The model zoo: shapes, parameter counts and PyTorch-style state-dict names."""
import numpy as np
import pytest

import gpunet as gn


def _out(model, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return model.forward(x)


def test_softmax_regression_zero_init():
    m = gn.models.softmax_regression(784, 10)
    assert list(m.state_dict()) == ["1.weight", "1.bias"]
    assert m.state_dict()["1.weight"].shape == (10, 784)
    assert not np.any(m.state_dict()["1.weight"])
    assert _out(m, (4, 1, 28, 28)).shape == (4, 10)


def test_mlp_layout_and_dropout():
    m = gn.models.mlp([784, 512, 256, 10], dropout=0.5)
    names = [type(l).__name__ for l in m]
    assert names == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert sum(p.size for p in m.parameters()) == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert _out(m, (3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="sizes"):
        gn.models.mlp([10])
    with pytest.raises(ValueError, match="activation"):
        gn.models.mlp([4, 4], activation="swishy")


def test_tf_cifar10_cnn_shapes():
    m = gn.models.tf_cifar10_cnn()
    assert _out(m, (2, 3, 24, 24)).shape == (2, 10)
    convs = [l for l in m if type(l).__name__ == "Conv2d"]
    assert [c.weight.shape for c in convs] == [(64, 3, 5, 5), (64, 64, 5, 5)]
    fcs = [l.weight.shape for l in m if type(l).__name__ == "Linear"]
    assert fcs == [(384, 2304), (192, 384), (10, 192)]


@pytest.mark.parametrize("before", [True, False])
def test_small_cnn_shapes(before):
    m = gn.models.small_cnn(in_channels=1, classes=10, image_size=28, bn_before_relu=before)
    assert _out(m, (2, 1, 28, 28)).shape == (2, 10)
    kinds = [type(l).__name__ for l in m][:3]
    assert kinds == (["Conv2d", "BatchNorm2d", "ReLU"] if before else ["Conv2d", "ReLU", "BatchNorm2d"])
    bn = "1" if before else "2"
    assert f"{bn}.running_mean" in m.state_dict() and f"{bn}.running_var" in m.state_dict()


def test_unknown_model_lists_valid():
    with pytest.raises(ValueError, match="small_cnn"):
        gn.models.get("resnet")
