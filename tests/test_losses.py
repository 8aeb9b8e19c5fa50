"""BCEWithLogits, BCE, MSE and GeneralizedDice: gradients, values, stability, bad inputs.

Every loss gets a float64 central-difference check of dpred for every reduction, and
its forward value is compared with a plain NumPy reference written out here.
"""
import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import GpunetTypeError, GpunetValueError, NonFiniteError, ShapeError
from gpunet.losses.binary import BCE, BCEWithLogits
from gpunet.losses.dice import GeneralizedDice
from gpunet.losses.regression import MSE
from gpunet.testing import gradcheck_loss

REDUCTIONS = ("mean", "sum", "none")
rng = np.random.default_rng


def host(a):
    return gn.backend.to_numpy(a)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _probs(r, shape):
    """Class probabilities along axis 1 (a softmax of random logits)."""
    e = np.exp(r.standard_normal(shape))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_elementwise(dev, reduction):
    r = rng(1)
    z = r.standard_normal((4, 3)) * 3
    t = r.random((4, 3))
    cases = [(BCEWithLogits(reduction), z), (BCEWithLogits(reduction, pos_weight=[0.5, 2.0, 3.0]), z),
             (BCE(reduction), _sigmoid(z)), (MSE(reduction), z)]
    for loss, pred in cases:
        gradcheck_loss(loss, dev.asarray(pred), dev.asarray(t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight,absent", [("square", "max"), ("square", "zero"), ("square", "naive"),
                                           ("simple", "max"), ("uniform", "max")])
def test_gradcheck_dice(dev, reduction, weight, absent):
    r = rng(2)
    p = _probs(r, (2, 3, 4, 3))
    labels = r.integers(0, 2, (2, 4, 3))  # class 2 absent from both samples
    loss = GeneralizedDice(weight=weight, absent=absent, reduction=reduction)
    gradcheck_loss(loss, dev.asarray(p), dev.asarray(labels), atol=1e-5)
    soft = r.random((2, 3, 4, 3))
    gradcheck_loss(loss, dev.asarray(p), dev.asarray(soft), atol=1e-5)


# ---------------------------------------------------------------- forward values

def test_elementwise_values_and_reductions(dev):
    r = rng(3)
    z, t = r.standard_normal((5, 4)), r.random((5, 4))
    p = _sigmoid(z)
    bce_ref = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    pw = np.array([1.0, 2.0, 0.5, 4.0])
    pw_ref = -(pw * t * np.log(p) + (1 - t) * np.log(1 - p))
    mse_ref = (z - t) ** 2
    for loss, pred, ref in [(BCEWithLogits, z, bce_ref), (BCE, p, bce_ref), (MSE, z, mse_ref)]:
        got = {red: host(loss(red).forward(dev.asarray(pred), dev.asarray(t))) for red in REDUCTIONS}
        np.testing.assert_allclose(got["none"], ref, rtol=1e-12)
        np.testing.assert_allclose(got["sum"], ref.sum(), rtol=1e-12)
        np.testing.assert_allclose(got["mean"], ref.mean(), rtol=1e-12)  # over all 20 elements
        assert got["mean"].shape == () and got["none"].shape == (5, 4)
    out = BCEWithLogits("none", pos_weight=pw).forward(dev.asarray(z), dev.asarray(t))
    np.testing.assert_allclose(host(out), pw_ref, rtol=1e-12)


def test_mse_by_hand(dev):
    loss = MSE()
    val = loss.forward(dev.asarray(np.array([[1.0, 2.0], [3.0, 5.0]])), dev.asarray(np.array([[0.0, 2.0], [1.0, 4.0]])))
    assert float(val) == pytest.approx((1 + 0 + 4 + 1) / 4)
    np.testing.assert_allclose(host(loss.backward(2.0)), [[1.0, 0.0], [2.0, 1.0]])  # 2·2·diff/4


def test_float32_stays_float32(dev):
    z = dev.asarray(rng(4).standard_normal((3, 2)), dtype=np.float32)
    t = dev.asarray(np.ones((3, 2)), dtype=np.float32)
    for loss in (BCEWithLogits(), MSE(), BCE()):
        pred = 1 / (1 + gn.backend.xp_of(z).exp(-z)) if isinstance(loss, BCE) else z
        out = loss.forward(pred, t)
        assert out.dtype == np.float32 and out.shape == ()
        assert loss.backward().dtype == np.float32


def test_bce_with_logits_stable_at_1000(dev):
    for dtype in (np.float32, np.float64):
        z = dev.asarray(np.array([1000.0, -1000.0, 1000.0, -1000.0, 0.0]), dtype=dtype)
        t = dev.asarray(np.array([1.0, 0.0, 0.0, 1.0, 1.0]), dtype=dtype)
        loss = BCEWithLogits("none")
        val = host(loss.forward(z, t))
        np.testing.assert_allclose(val, [0.0, 0.0, 1000.0, 1000.0, np.log(2)], rtol=1e-6)
        np.testing.assert_allclose(host(loss.backward(1.0)), [0.0, 0.0, 1.0, -1.0, -0.5], atol=1e-7)
        weighted = BCEWithLogits("none", pos_weight=3.0)
        np.testing.assert_allclose(host(weighted.forward(z, t)), [0.0, 0.0, 1000.0, 3000.0, 3 * np.log(2)],
                                   rtol=1e-6)
        assert np.all(np.isfinite(host(weighted.backward(1.0))))


def test_bce_clamps_and_gradient_matches_the_clamp(dev):
    loss = BCE("none", eps=1e-7)
    p = dev.asarray(np.array([0.0, 1.0, 0.5, 0.25]))
    t = dev.asarray(np.array([1.0, 0.0, 1.0, 0.0]))
    val = host(loss.forward(p, t))
    np.testing.assert_allclose(val[:2], -np.log(1e-7), rtol=1e-6)  # bounded, not Inf
    np.testing.assert_allclose(val[2:], [np.log(2), -np.log(0.75)], rtol=1e-12)
    # Flat clamp → zero gradient for the two saturated elements; (p−t)/(p(1−p)) inside.
    np.testing.assert_allclose(host(loss.backward()), [0.0, 0.0, -2.0, 0.25 / (0.25 * 0.75)], rtol=1e-12)


# ---------------------------------------------------------------- Generalized Dice

def _gdl_reference(p, t, eps=1e-6, absent="max"):
    """Sudre et al.'s GDL per sample, written with loops for clarity."""
    out = []
    for n in range(p.shape[0]):
        pn, tn = p[n].reshape(p.shape[1], -1), t[n].reshape(p.shape[1], -1)
        r = tn.sum(axis=1)
        w = np.array([1 / rc ** 2 if rc > 0 else np.nan for rc in r])
        fill = {"max": np.nanmax(w), "zero": 0.0}
        w = np.where(np.isnan(w), fill[absent], w) if absent != "naive" else 1 / (r ** 2 + eps)
        num = sum(w[c] * (pn[c] * tn[c]).sum() for c in range(len(r)))
        den = sum(w[c] * (pn[c] + tn[c]).sum() for c in range(len(r)))
        out.append(1 - (2 * num + eps) / (den + eps))
    return np.array(out)


def test_dice_by_hand(dev):
    # One sample, C=2, two pixels labelled 0 and 1; both classes have volume 1 → w = 1.
    p = np.array([[[0.8, 0.3], [0.2, 0.7]]])
    loss = GeneralizedDice()
    val = float(loss.forward(dev.asarray(p), dev.asarray(np.array([[0, 1]]))))
    # num = 0.8 + 0.7 = 1.5, den = (1.1 + 1) + (0.9 + 1) = 4.0
    assert val == pytest.approx(1 - (3.0 + 1e-6) / (4.0 + 1e-6), rel=1e-12)


@pytest.mark.parametrize("absent", ["max", "zero", "naive"])
def test_dice_matches_reference_and_labels_equal_one_hot(dev, absent):
    r = rng(5)
    p = _probs(r, (3, 4, 5, 2))
    labels = r.integers(0, 3, (3, 5, 2))  # class 3 absent everywhere
    labels[1] = 0  # sample 1 holds only class 0
    onehot = (labels[:, None] == np.arange(4)[None, :, None, None]).astype(float)
    loss = GeneralizedDice(absent=absent, reduction="none")
    by_labels = host(loss.forward(dev.asarray(p), dev.asarray(labels)))
    by_onehot = host(loss.forward(dev.asarray(p), dev.asarray(onehot)))
    np.testing.assert_allclose(by_labels, _gdl_reference(p, onehot, absent=absent), rtol=1e-10)
    np.testing.assert_array_equal(by_labels, by_onehot)


def _segmentation_with_absent_class(leak):
    """Near-perfect prediction of classes 0 and 1; class 2 is absent but gets `leak` per pixel."""
    labels = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    p = np.zeros((1, 3, 8))
    p[0, 0, :4] = p[0, 1, 4:] = 1 - leak
    p[0, 2] = leak
    return p, labels


@pytest.mark.parametrize("leak", [1e-3, 1e-6, 1e-9])
def test_dice_absent_class_weight_is_bounded(dev, leak):
    p, labels = _segmentation_with_absent_class(leak)
    for absent in ("max", "zero"):
        loss = GeneralizedDice(absent=absent)
        val = float(loss.forward(dev.asarray(p), dev.asarray(labels)))
        grad = host(loss.backward())
        assert np.isfinite(val) and 0 <= val < 2 * leak  # a near-perfect prediction scores near 0
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() < 0.1


def test_dice_naive_weight_blows_up(dev):
    """1/(0 + eps) for the absent class: the loss saturates and the gradient explodes."""
    p, labels = _segmentation_with_absent_class(1e-3)
    naive = GeneralizedDice(absent="naive")
    assert float(naive.forward(dev.asarray(p), dev.asarray(labels))) > 0.99  # near-perfect, yet ≈ 1
    p, labels = _segmentation_with_absent_class(1e-9)
    naive.forward(dev.asarray(p), dev.asarray(labels))
    assert np.abs(host(naive.backward())).max() > 1e5


def test_dice_max_weight_caps(dev):
    p = _probs(rng(6), (1, 2, 4))
    t = np.zeros((1, 2, 4))
    t[0, 0] = 1.0
    t[0, 1, 0] = 1e-4  # a tiny soft volume would weigh 1e8
    capped = GeneralizedDice(max_weight=10.0, reduction="none")
    capped.forward(dev.asarray(p), dev.asarray(t))
    assert float(host(capped._cache[1]).max()) == 10.0
    gradcheck_loss(capped, dev.asarray(p), dev.asarray(t), atol=1e-5)


# ---------------------------------------------------------------- bad inputs

def test_shape_mismatch_names_loss_and_shapes(dev):
    for loss in (BCEWithLogits(), BCE(), MSE()):
        with pytest.raises(ShapeError, match=rf"{type(loss).__name__}.*\(4, 3\).*\(4,\)"):
            loss.forward(dev.asarray(np.zeros((4, 3))), dev.asarray(np.zeros(4)))
    with pytest.raises(ShapeError, match=r"GeneralizedDice.*\(2, 3, 4\).*\(2, 5\)"):
        GeneralizedDice().forward(dev.asarray(np.full((2, 3, 4), 1 / 3)), dev.asarray(np.zeros((2, 5), int)))


def test_bad_types_and_arguments(dev):
    with pytest.raises(GpunetTypeError, match="pred expected a floating dtype"):
        MSE().forward(dev.asarray(np.zeros(3, dtype=np.int64)), dev.asarray(np.zeros(3)))
    with pytest.raises(GpunetTypeError, match="integer dtype"):
        GeneralizedDice().forward(dev.asarray(np.full((1, 2, 3), 0.5)), dev.asarray(np.zeros((1, 3))))
    with pytest.raises(GpunetValueError, match="reduction"):
        MSE(reduction="avg")
    with pytest.raises(GpunetValueError, match="eps"):
        BCE(eps=0.0)
    with pytest.raises(GpunetValueError, match="absent"):
        GeneralizedDice(absent="ignore")
    with pytest.raises(GpunetValueError, match="pos_weight"):
        BCEWithLogits(pos_weight=-1.0)
    with pytest.raises(ShapeError, match="pos_weight"):
        BCEWithLogits(pos_weight=[1.0, 2.0]).forward(dev.asarray(np.zeros((2, 3))), dev.asarray(np.zeros((2, 3))))


def test_backward_before_forward_and_bad_upstream(dev):
    for loss in (BCEWithLogits(), BCE(), MSE(), GeneralizedDice()):
        with pytest.raises(GpunetValueError, match="before forward"):
            loss.backward()
    loss = MSE("none")
    loss.forward(dev.asarray(np.zeros((2, 3))), dev.asarray(np.ones((2, 3))))
    with pytest.raises(ShapeError, match="grad"):
        loss.backward(dev.asarray(np.ones(4)))


def test_checks_catch_non_finite_and_ranges(dev):
    bad = dev.asarray(np.array([0.5, np.nan]))
    ok = dev.asarray(np.array([0.5, 0.5]))
    MSE().forward(bad, ok)  # checks off: no scan, no sync
    with gn.checks():
        for loss in (BCEWithLogits(), BCE(), MSE()):
            with pytest.raises(NonFiniteError, match=type(loss).__name__):
                loss.forward(bad, ok)
        with pytest.raises(GpunetValueError, match=r"target expected values in \[0.0, 1.0\]"):
            BCEWithLogits().forward(ok, dev.asarray(np.array([0.5, 2.0])))
        with pytest.raises(GpunetValueError, match=r"pred expected values in \[0.0, 1.0\]"):
            BCE().forward(dev.asarray(np.array([0.5, 1.5])), ok)
        with pytest.raises(GpunetValueError, match="labels"):
            GeneralizedDice().forward(dev.asarray(np.full((1, 2, 3), 0.5)), dev.asarray(np.array([[0, 1, 2]])))
