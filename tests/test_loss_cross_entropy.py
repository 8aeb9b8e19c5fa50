"""SoftmaxCrossEntropy: float64 gradient checks for every option and reduction, the cached
gradient, input validation, and the same body on the GPU (fused kernel)."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.losses.cross_entropy import SoftmaxCrossEntropy
from gpunet.testing import gradcheck_loss

from conftest import DEVICES

IGNORE = -100


def case(dev, kind, N=6, C=5, seed=0):
    rng = np.random.default_rng(seed)
    x = dev.asarray(2 * rng.standard_normal((N, C)))
    if kind == "soft":
        t = rng.random((N, C))
        return x, dev.asarray(t / t.sum(axis=1, keepdims=True))
    y = rng.integers(0, C, N)
    if kind == "ignore":
        y[[1, 4]] = IGNORE
    return x, dev.asarray(y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind,smoothing", [("hard", 0.0), ("hard", 0.1), ("soft", 0.0), ("soft", 0.2),
                                            ("ignore", 0.0), ("ignore", 0.1)])
def test_gradcheck(device, reduction, kind, smoothing):
    dev = gn.device(device)
    x, t = case(dev, kind)
    loss = SoftmaxCrossEntropy(reduction, label_smoothing=smoothing,
                               ignore_index=IGNORE if kind == "ignore" else None)
    gradcheck_loss(loss, x, t)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_value_and_backward_scaling(device):
    dev = gn.device(device)
    x, y = case(dev, "hard")
    xh, yh = gn.backend.to_numpy(x), gn.backend.to_numpy(y)
    logp = xh - np.logaddexp.reduce(xh, axis=1, keepdims=True)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(x, y)
    assert np.ndim(loss) == 0
    np.testing.assert_allclose(float(loss), -logp[np.arange(6), yh].mean(), rtol=1e-12)
    d1 = loss_fn.backward()
    assert loss_fn.backward(1.0) is d1  # the cached buffer, no copy
    np.testing.assert_allclose(gn.backend.to_numpy(loss_fn.backward(2.5)), 2.5 * gn.backend.to_numpy(d1))
    none = SoftmaxCrossEntropy("none")
    assert none.forward(x, y).shape == (6,)
    w = dev.asarray(np.arange(6.0))
    np.testing.assert_allclose(gn.backend.to_numpy(none.backward(w)),
                               gn.backend.to_numpy(none.backward()) * np.arange(6.0)[:, None])
    with pytest.raises(gn.ShapeError, match=r"got shape \(3,\)"):
        none.backward(dev.asarray(np.ones(3)))


def test_extreme_logits_stay_finite():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=np.float32)
    loss_fn = SoftmaxCrossEntropy(label_smoothing=0.1)
    loss = loss_fn.forward(x, np.array([1, 2]))
    assert np.isfinite(loss) and np.isfinite(loss_fn.backward()).all()
    # loss_i = lse_i - 0.9 x_iy - 0.1 mean_j x_ij, and lse_i = max_j x_ij to float precision
    assert float(loss) == pytest.approx(((1e4 + 0.9e4) + (1e4 - 0.9e4 + 0.1e4 / 3)) / 2, rel=1e-6)


def test_input_validation():
    loss = SoftmaxCrossEntropy()
    x = np.zeros((4, 3))
    with pytest.raises(gn.ShapeError, match=r"SoftmaxCrossEntropy.*\(4, 3\).*\(5,\)"):
        loss.forward(x, np.zeros(5, np.int64))
    with pytest.raises(gn.ShapeError, match=r"logits \(4, 3, 1\)"):
        loss.forward(np.zeros((4, 3, 1)), np.zeros(4, np.int64))
    with pytest.raises(gn.ShapeError, match=r"\(4, 3\).*\(4, 2\)"):
        loss.forward(x, np.zeros((4, 2)))
    with pytest.raises(gn.GpunetTypeError, match="integer class labels"):
        loss.forward(x, np.zeros(4, np.float64))
    with pytest.raises(gn.GpunetTypeError, match="float soft targets"):
        loss.forward(x, np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match=r"got 3 at row 2"):
        loss.forward(x, np.array([0, 1, 3, 5]))
    with pytest.raises(ValueError, match=r"got -1 at row 0"):
        loss.forward(x, np.array([-1, 1, 2, 0], np.int32))
    with pytest.raises(gn.GpunetValueError, match="label_smoothing"):
        SoftmaxCrossEntropy(label_smoothing=-0.1)
    with pytest.raises(gn.GpunetValueError, match="reduction"):
        SoftmaxCrossEntropy(reduction="avg")
    with pytest.raises(gn.GpunetValueError, match="forward"):
        SoftmaxCrossEntropy().backward()


def test_dtype_casts():
    """uint8 labels (as datasets store them) are cast; float32 soft targets follow float64 logits."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    loss = SoftmaxCrossEntropy()
    a = float(loss.forward(x, np.array([0, 2, 1, 2], np.uint8)))
    assert a == pytest.approx(float(loss.forward(x, np.array([0, 2, 1, 2]))), rel=1e-15)
    t = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    assert float(loss.forward(x, t)) == pytest.approx(a, rel=1e-12)
    assert loss.backward().dtype == np.float64


def test_checks_on_catch_non_finite_logits_and_bad_soft_rows():
    loss = SoftmaxCrossEntropy()
    x = np.zeros((3, 4))
    x[1, 2] = np.nan
    loss.forward(x, np.zeros(3, np.int64))  # checks off: no scan
    with gn.checks():
        with pytest.raises(gn.NonFiniteError, match="row 1, column 2"):
            loss.forward(x, np.zeros(3, np.int64))
    t = np.full((3, 4), 0.25)
    t[2, 0] = 0.5
    loss.forward(np.zeros((3, 4)), t)  # not checked by default
    with pytest.raises(gn.GpunetValueError, match=r"summing to 1, got 1.25 at row 2"):
        SoftmaxCrossEntropy(check_targets=True).forward(np.zeros((3, 4)), t)


def test_all_ignored_batch():
    loss = SoftmaxCrossEntropy(ignore_index=IGNORE)
    value = loss.forward(np.ones((2, 3)), np.array([IGNORE, IGNORE]))
    assert np.isnan(value) and not loss.backward().any() and int(loss.n_valid) == 0


def test_repr():
    assert repr(SoftmaxCrossEntropy("sum", 0.1, ignore_index=-1)) == \
        "SoftmaxCrossEntropy(reduction='sum', label_smoothing=0.1, ignore_index=-1)"


@pytest.mark.gpu
def test_gpu_deferred_bad_label_then_raise():
    dev = gn.device("cuda")
    loss = SoftmaxCrossEntropy()
    x = dev.asarray(np.zeros((3, 4), np.float32))
    value = loss.forward(x, dev.asarray(np.array([0, 9, 1])))  # no sync, no raise
    assert np.isnan(float(value))
    with pytest.raises(ValueError, match="got 9 at row 1"):
        gn.ops.raise_deferred_errors(dev)
    with gn.checks(), pytest.raises(ValueError, match="got 9 at row 1"):
        loss.forward(x, dev.asarray(np.array([0, 9, 1])))
