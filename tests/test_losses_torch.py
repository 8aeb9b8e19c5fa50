"""Class weights (SoftmaxCrossEntropy, BCE, BCEWithLogits) and NLLLoss, L1Loss, SmoothL1Loss,
HuberLoss, KLDivLoss: values and gradients against PyTorch in float64 (1e-10 relative), for
every reduction, plus float64 central-difference checks on both backends."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import GpunetTypeError, GpunetValueError, ShapeError
from gpunet.losses import (BCE, NLLLoss, BCEWithLogits, HuberLoss, KLDivLoss, L1Loss, SmoothL1Loss,
                           SoftmaxCrossEntropy)
from gpunet.testing import gradcheck_loss

try:
    import torch
except ImportError:  # the comparisons skip, with this reason; the other tests still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the comparison with "
                                                       "PyTorch needs torch (the CPU build is enough)")
F = torch.nn.functional if torch is not None else None

REDUCTIONS = ("mean", "sum", "none")
RTOL = 1e-10
N, C = 6, 5


def host(a):
    return gn.backend.to_numpy(a)


def _close(got, want, what):
    got, want = np.asarray(host(got), dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    err = np.abs(got - want) - RTOL * np.abs(want) - 1e-15
    assert err.max(initial=-1) <= 0, (f"{what}: worst mismatch at {np.unravel_index(np.argmax(err), err.shape)}: "
                                      f"{got.flat[np.argmax(err)]!r} vs {want.flat[np.argmax(err)]!r}")


def _check(loss, torch_fn, pred, target, reduction, seed=0):
    """gpunet's loss and d(upstream·loss)/dpred against PyTorch's autograd."""
    got = loss.forward(pred, target)
    tp = torch.tensor(pred, requires_grad=True)
    want = torch_fn(tp)
    _close(got, want.detach().numpy(), f"{loss} value")
    up = np.random.default_rng(seed).standard_normal(want.shape) if reduction == "none" else 1.7
    (want * torch.as_tensor(up, dtype=torch.float64)).sum().backward()
    _close(loss.backward(up), tp.grad.numpy(), f"{loss} gradient")


def _data(seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, C)) * 2
    y = np.array([0, 1, 4, 4, 2, 1])
    w = r.uniform(0.2, 2.0, C)
    soft = np.exp(r.standard_normal((N, C)))
    return x, y, w, soft / soft.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- class-weighted cross-entropy

@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.15])
@pytest.mark.parametrize("ignore", [None, 4])
def test_weighted_cross_entropy_hard_labels(reduction, eps, ignore):
    x, y, w, _ = _data()
    loss = SoftmaxCrossEntropy(reduction, label_smoothing=eps, ignore_index=ignore, weight=w)
    _check(loss, lambda t: F.cross_entropy(t, torch.tensor(y), weight=torch.tensor(w), reduction=reduction,
                                           label_smoothing=eps, ignore_index=-100 if ignore is None else ignore),
           x, y, reduction)


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_weighted_cross_entropy_soft_targets(reduction, eps):
    x, _, w, soft = _data(1)
    loss = SoftmaxCrossEntropy(reduction, label_smoothing=eps, weight=w)
    _check(loss, lambda t: F.cross_entropy(t, torch.tensor(soft), weight=torch.tensor(w), reduction=reduction,
                                           label_smoothing=eps), x, soft, reduction)


def test_weighted_cross_entropy_edges_and_checks(dev):
    x, y, w, _ = _data()
    # all rows ignored: NaN mean (as PyTorch) and a zero gradient
    loss = SoftmaxCrossEntropy(ignore_index=1, weight=w)
    yy = dev.asarray(np.ones(N, dtype=np.int64))
    assert np.isnan(float(loss.forward(dev.asarray(x), yy)))
    assert not host(loss.backward()).any()
    # weights of ones equal the unweighted (fused) loss; float32 logits keep float32
    for eps in (0.0, 0.1):
        a = SoftmaxCrossEntropy(label_smoothing=eps, weight=np.ones(C))
        b = SoftmaxCrossEntropy(label_smoothing=eps)
        xx, yy = dev.asarray(x), dev.asarray(y)
        np.testing.assert_allclose(float(a.forward(xx, yy)), float(b.forward(xx, yy)), rtol=1e-14)
        np.testing.assert_allclose(host(a.backward()), host(b.backward()), rtol=1e-13, atol=1e-16)
    x32 = dev.asarray(x.astype(np.float32))
    out = SoftmaxCrossEntropy(weight=w)
    assert out.forward(x32, dev.asarray(y)).dtype == np.float32 and out.backward().dtype == np.float32
    with pytest.raises(ShapeError, match=r"weight expected shape \(5,\) for 5 classes, got \(4,\)"):
        SoftmaxCrossEntropy(weight=np.ones(4)).forward(dev.asarray(x), dev.asarray(y))
    with pytest.raises(GpunetValueError, match="weight expected finite values >= 0"):
        SoftmaxCrossEntropy(weight=[1.0, -1.0])
    with pytest.raises(ShapeError, match=r"weight expected a \(C,\) array"):
        SoftmaxCrossEntropy(weight=np.ones((2, 2)))
    with pytest.raises(GpunetValueError, match=r"class labels in \[0, 5\)"):
        SoftmaxCrossEntropy(weight=w).forward(dev.asarray(x), dev.asarray(np.array([0, 1, 2, 3, 4, 5])))
    assert "weight=[" in repr(SoftmaxCrossEntropy(weight=w))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_weighted_losses(dev, reduction):
    x, y, w, soft = _data(2)
    x = dev.asarray(x)
    gradcheck_loss(SoftmaxCrossEntropy(reduction, label_smoothing=0.1, ignore_index=2, weight=w), x, dev.asarray(y))
    gradcheck_loss(SoftmaxCrossEntropy(reduction, label_smoothing=0.1, weight=w), x, dev.asarray(soft))
    logp = x - np.log(np.exp(host(x)).sum(axis=1, keepdims=True))
    gradcheck_loss(NLLLoss(weight=w, ignore_index=4, reduction=reduction), dev.asarray(logp), dev.asarray(y))
    z, t = dev.asarray(host(x)[:, :3]), dev.asarray(np.random.default_rng(3).random((N, 3)))
    gradcheck_loss(BCEWithLogits(reduction, pos_weight=[0.5, 2.0, 3.0], weight=w[:3]), z, t)
    gradcheck_loss(BCE(reduction, weight=w[:3]), dev.asarray(1 / (1 + np.exp(-host(z)))), t)


# ---------------------------------------------------------------- NLL

@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1])
def test_nll_matches_torch(reduction, weighted, ignore):
    x, y, w, _ = _data(3)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    loss = NLLLoss(weight=w if weighted else None, ignore_index=ignore, reduction=reduction)
    _check(loss, lambda t: F.nll_loss(t, torch.tensor(y), weight=torch.tensor(w) if weighted else None,
                                      ignore_index=-100 if ignore is None else ignore, reduction=reduction),
           logp, y, reduction)


def test_nll_of_log_softmax_is_cross_entropy_and_checks_input():
    x, y, w, _ = _data(4)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    a, b = NLLLoss(weight=w), SoftmaxCrossEntropy(weight=w)
    np.testing.assert_allclose(float(a.forward(logp, y)), float(b.forward(x, y)), rtol=1e-14)
    with pytest.raises(ShapeError, match=r"expected logp \(N, C\) and target \(N,\)"):
        NLLLoss().forward(logp, y[:3])
    with pytest.raises(GpunetTypeError, match="integer class labels"):
        NLLLoss().forward(logp, y.astype(float))
    with pytest.raises(GpunetValueError, match=r"class labels in \[0, 5\) or ignore_index=-1, got 7 at row 2"):
        NLLLoss(ignore_index=-1).forward(logp, np.array([0, -1, 7, 1, 1, 1]))
    with pytest.raises(GpunetTypeError, match="ignore_index"):
        NLLLoss(ignore_index=1.5)
    with pytest.raises(GpunetValueError, match="a forward call first"):
        NLLLoss().backward()


# ---------------------------------------------------------------- BCE with weights

@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_weights_match_torch(reduction):
    r = np.random.default_rng(5)
    z, t = r.standard_normal((N, 3)) * 3, r.random((N, 3))
    w, pw = r.uniform(0.1, 2, (N, 1)), np.array([0.5, 2.0, 3.0])
    _check(BCEWithLogits(reduction, weight=w, pos_weight=pw),
           lambda q: F.binary_cross_entropy_with_logits(q, torch.tensor(t), weight=torch.tensor(w),
                                                        pos_weight=torch.tensor(pw), reduction=reduction), z, t, reduction)
    p = 1 / (1 + np.exp(-z))
    _check(BCE(reduction, weight=w[:, 0][:, None] * np.ones(3)),
           lambda q: F.binary_cross_entropy(q, torch.tensor(t), weight=torch.tensor(w) * torch.ones(3),
                                            reduction=reduction), p, t, reduction)
    with pytest.raises(ShapeError, match="weight shape"):
        BCEWithLogits(weight=np.ones(4)).forward(z, t)
    with pytest.raises(GpunetValueError, match="weight expected finite values >= 0"):
        BCE(weight=[-1.0])


# ---------------------------------------------------------------- regression losses

def _pair(seed=6, shape=(N, 4)):
    r = np.random.default_rng(seed)
    pred = r.standard_normal(shape) * 2
    target = r.standard_normal(shape) * 2
    target[0, :2] = pred[0, :2]  # d = 0: every loss's derivative there is 0 (sign(0) = 0)
    return pred, target


REGRESSION = [
    ("l1", lambda r: L1Loss(r), lambda t, y, r: F.l1_loss(t, y, reduction=r)),
    ("smooth_l1", lambda r: SmoothL1Loss(r, beta=0.7), lambda t, y, r: F.smooth_l1_loss(t, y, reduction=r, beta=0.7)),
    ("smooth_l1_beta0", lambda r: SmoothL1Loss(r, beta=0.0), lambda t, y, r: F.smooth_l1_loss(t, y, reduction=r, beta=0.0)),
    ("huber", lambda r: HuberLoss(r, delta=1.3), lambda t, y, r: F.huber_loss(t, y, reduction=r, delta=1.3)),
]


@needs_torch
@pytest.mark.parametrize("name,make,ref", REGRESSION, ids=[c[0] for c in REGRESSION])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_match_torch(name, make, ref, reduction):
    pred, target = _pair()
    _check(make(reduction), lambda t: ref(t, torch.tensor(target), reduction), pred, target, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_regression_and_kl(dev, reduction):
    pred, target = _pair(7)
    pred[0, :2] += 0.05  # keep central differences off the kinks
    pred, target = dev.asarray(pred), dev.asarray(target)
    for loss in (L1Loss(reduction), SmoothL1Loss(reduction, beta=0.7), HuberLoss(reduction, delta=1.3)):
        gradcheck_loss(loss, pred, target)
    logq, p, logp = _dists(8)
    for kl_reduction in (reduction, "batchmean"):
        gradcheck_loss(KLDivLoss(kl_reduction), dev.asarray(logq), dev.asarray(p))
        gradcheck_loss(KLDivLoss(kl_reduction, log_target=True), dev.asarray(logq), dev.asarray(logp))


def test_regression_relations_and_checks():
    pred, target = _pair(9)
    h = float(HuberLoss(delta=0.4).forward(pred, target))
    s = float(SmoothL1Loss(beta=0.4).forward(pred, target))
    assert h == pytest.approx(0.4 * s, rel=1e-14)  # Huber(δ) = δ · SmoothL1(β = δ)
    assert float(SmoothL1Loss(beta=0.0).forward(pred, target)) == pytest.approx(float(L1Loss().forward(pred, target)))
    with pytest.raises(GpunetValueError, match=r"beta expected a finite number in \[0.0"):
        SmoothL1Loss(beta=-1)
    with pytest.raises(GpunetValueError, match=r"delta expected a finite number in \(0.0"):
        HuberLoss(delta=0)
    with pytest.raises(ShapeError, match="target shape must equal pred shape"):
        L1Loss().forward(pred, target[:2])


# ---------------------------------------------------------------- KL divergence

def _dists(seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, C))
    logq = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    e = np.exp(r.standard_normal((N, C)))
    p = e / e.sum(axis=1, keepdims=True)
    return logq, p, np.log(p)


@needs_torch
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # PyTorch's note on "mean"
@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(reduction, log_target):
    logq, p, logp = _dists(10)
    p[1, 2] = 0.0  # a zero probability contributes 0 (p·log p → 0)
    target = logp if log_target else p
    _check(KLDivLoss(reduction, log_target=log_target),
           lambda t: F.kl_div(t, torch.tensor(target), reduction=reduction, log_target=log_target),
           logq, target, reduction)


def test_kl_div_batchmean_is_the_divergence_and_checks():
    logq, p, _ = _dists(11)
    per_row = (p * (np.log(p) - logq)).sum(axis=1)
    assert float(KLDivLoss("batchmean").forward(logq, p)) == pytest.approx(per_row.mean(), rel=1e-14)
    assert float(KLDivLoss("mean").forward(logq, p)) == pytest.approx(per_row.mean() / C, rel=1e-14)
    with pytest.raises(GpunetValueError, match=r"reduction expected one of \('mean', 'sum', 'none', 'batchmean'\)"):
        KLDivLoss("average")
    with pytest.raises(GpunetValueError, match="batchmean"):
        gn.losses.MSE("batchmean")  # only KLDivLoss has it
    with pytest.raises(GpunetTypeError, match="log_target expected a bool"):
        KLDivLoss(log_target=1)
    gn.set_checks(True)
    with pytest.raises(GpunetValueError, match=r"target expected values in \[0.0, inf\]"):
        KLDivLoss().forward(logq, -p)
