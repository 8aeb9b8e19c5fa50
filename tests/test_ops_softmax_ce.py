"""gpunet.ops.softmax_cross_entropy: the twin against an independent NumPy reference (CPU),
the CUDA kernel against the twin (GPU), input checks and bad-label reporting.

Tolerances: float64 1e-12 relative; float32 1e-5 relative (the kernel flushes denormals,
-ftz=true), each with an absolute floor of the same factor times the largest |value| (at
least 1 for losses).
"""
import numpy as np
import pytest

import gpunet as gn
from gpunet import ops
from gpunet.ops._kernels import BFLOAT16
from gpunet.ops.softmax_cross_entropy_xp import softmax_cross_entropy_eval_xp, softmax_cross_entropy_xp
from gpunet.testing import assert_close

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
IGNORE = -100


def reference(x, t, eps=0.0, ignore_index=None, reduction="mean"):
    """float64 loss and gradient from log-probabilities taken with np.logaddexp (no max shift)."""
    x = np.asarray(x, dtype=np.float64)
    N, C = x.shape
    logp = x - np.logaddexp.reduce(x, axis=1, keepdims=True)
    if t.ndim == 1:
        valid = np.ones(N, bool) if ignore_index is None else t != ignore_index
        target = np.zeros((N, C))
        target[np.nonzero(valid)[0], t[valid]] = 1.0
    else:
        valid, target = np.ones(N, bool), np.asarray(t, dtype=np.float64)
    smoothed = (1 - eps) * target + eps / C
    smoothed[~valid] = 0.0
    rows = -(smoothed * logp).sum(axis=1)
    grad = smoothed.sum(axis=1, keepdims=True) * np.exp(logp) - smoothed
    n = int(valid.sum())
    if reduction == "none":
        return rows, grad, n
    if reduction == "sum":
        return rows.sum(), grad, n
    return (rows.sum() / n if n else np.nan), grad / max(n, 1), n


def make_case(N, C, dtype, kind, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((N, C))).astype(dtype)
    if kind == "soft":
        t = rng.random((N, C)).astype(dtype)
        return x, t / t.sum(axis=1, keepdims=True)
    y = rng.integers(0, C, N).astype(np.int64 if kind == "hard64" else np.int32)
    if kind == "ignore":
        y[rng.random(N) < 0.3] = IGNORE
    return x, y


def check(name, got, want, dtype):
    """|got − want| <= rtol·|want| + rtol·max|want|; losses ("loss" in the name) use
    max(1, max|want|): log Σ exp is accurate to a few ulps of 1, not of a tiny loss."""
    rtol = RTOL[np.dtype(dtype).type]
    want = np.asarray(want, dtype=np.float64)
    scale = float(np.abs(want).max()) if want.size else 0.0
    floor = rtol * (max(1.0, scale) if "loss" in name else scale)
    assert_close(name, gn.backend.to_numpy(got), want, atol=floor, rtol=rtol)


# ---------------------------------------------------------------- CPU: twin vs reference

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["hard", "hard64", "soft", "ignore"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_twin_matches_reference(dtype, kind, eps, reduction):
    x, t = make_case(13, 7, dtype, kind)
    ign = IGNORE if kind == "ignore" else None
    loss, g, n = ops.softmax_cross_entropy(x, t, label_smoothing=eps, ignore_index=ign, reduction=reduction)
    rloss, rg, rn = reference(x, t, eps, ign, reduction)
    assert loss.dtype == dtype and g.dtype == dtype and loss.shape == np.shape(rloss)
    assert int(n) == rn and n.dtype == np.int64 and n.shape == ()
    check("loss", loss, rloss, dtype)
    check("dlogits", g, rg, dtype)


HALF = [np.dtype(np.float16)] + ([BFLOAT16] if BFLOAT16 is not None else [])   # ml_dtypes: a test dependency


@pytest.mark.parametrize("dtype", HALF, ids=lambda d: d.name)
@pytest.mark.parametrize("kind", ["hard", "soft", "ignore"])
def test_16_bit_twin_is_the_float32_twin_rounded_once(dtype, kind):
    """float16 / bfloat16 logits: the twin computes in float32 (loss float32, bit for bit the
    float32 twin's on the widened values) and rounds dlogits once to the logits' type; against
    the float64 reference each element is the correctly rounded float32 result."""
    from test_kernels_emulated import close_rounded
    x, t = make_case(33, 50, dtype, kind, seed=1)
    x[0, :3] = [20.0, -20.0, 0.0]   # a confident row: tiny gradients, subnormal in float16
    t32 = t.astype(np.float32) if kind == "soft" else t
    ign = IGNORE if kind == "ignore" else None
    for eps, reduction in [(0.0, "mean"), (0.1, "none"), (0.1, "sum")]:
        tag = f"{dtype.name} {kind} eps={eps} {reduction}"
        loss, g, n = softmax_cross_entropy_xp(x, t, label_smoothing=eps, ignore_index=ign, reduction=reduction)
        l32, g32, n32 = softmax_cross_entropy_xp(x.astype(np.float32), t32, label_smoothing=eps, ignore_index=ign,
                                                 reduction=reduction)
        assert loss.dtype == np.float32 and g.dtype == dtype and int(n) == int(n32), tag
        np.testing.assert_array_equal(loss, l32, err_msg=tag)
        np.testing.assert_array_equal(g.view(np.uint16), g32.astype(dtype).view(np.uint16), err_msg=tag)
        rloss, rg, rn = reference(x, t, eps, ign, reduction)
        check(f"loss [{tag}]", loss, rloss, np.float32)
        close_rounded(f"dlogits [{tag}]", g, rg, dtype, unit=1.0 / max(rn, 1) if reduction == "mean" else 1.0)
    xi = x.copy()
    loss, g, _ = softmax_cross_entropy_xp(xi, t, ignore_index=ign, out=xi)   # in place
    assert g is xi and g.dtype == dtype
    np.testing.assert_array_equal(xi.view(np.uint16),
                                  softmax_cross_entropy_xp(x.astype(np.float32), t32, ignore_index=ign)[1]
                                  .astype(dtype).view(np.uint16))
    ls, nv, nc = softmax_cross_entropy_eval_xp(x, t, ignore_index=ign)
    ls32, nv32, nc32 = softmax_cross_entropy_eval_xp(x.astype(np.float32), t32, ignore_index=ign)
    assert ls.dtype == np.float32 and ls == ls32 and (int(nv), int(nc)) == (int(nv32), int(nc32))


def test_soft_targets_not_summing_to_one_give_the_exact_gradient():
    x, _ = make_case(5, 6, np.float64, "hard")
    t = np.random.default_rng(1).random((5, 6))
    loss, g, _ = ops.softmax_cross_entropy(x, t, reduction="sum", label_smoothing=0.2)
    rloss, rg, _ = reference(x, t, 0.2, None, "sum")
    check("loss", loss, rloss, np.float64)
    check("dlogits", g, rg, np.float64)


def test_all_rows_ignored_mean_is_nan_and_gradient_zero():
    """PyTorch's behaviour: mean over zero rows is 0/0 = NaN; nothing flows back."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    y = np.full(4, IGNORE)
    loss, g, n = ops.softmax_cross_entropy(x, y, ignore_index=IGNORE)
    assert np.isnan(loss) and int(n) == 0 and not g.any()
    loss, g, _ = ops.softmax_cross_entropy(x, y, ignore_index=IGNORE, reduction="sum")
    assert float(loss) == 0.0 and not g.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_extreme_logits_stay_finite(dtype, kind):
    x, t = make_case(8, 5, dtype, kind)
    x = (np.sign(x) * 1e4).astype(dtype)
    x[0] = 1e4  # a row of ties
    loss, g, _ = ops.softmax_cross_entropy(x, t, label_smoothing=0.1)
    assert np.isfinite(loss) and np.isfinite(g).all()
    rloss, rg, _ = reference(x, t, 0.1)
    check("loss", loss, rloss, dtype)
    check("dlogits", g, rg, dtype)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_in_place_and_separate_out(kind):
    x, t = make_case(9, 4, np.float64, kind)
    _, g, _ = ops.softmax_cross_entropy(x, t)
    out = np.empty_like(x)
    _, g2, _ = ops.softmax_cross_entropy(x, t, out=out)
    assert g2 is out
    np.testing.assert_array_equal(g2, g)
    xi = x.copy()
    _, g3, _ = ops.softmax_cross_entropy(xi, t, out=xi)
    assert g3 is xi
    np.testing.assert_array_equal(g3, g)


def test_want_grad_false_returns_no_gradient_and_leaves_logits():
    x, y = make_case(6, 5, np.float32, "hard")
    x0 = x.copy()
    loss, g, n = ops.softmax_cross_entropy(x, y, want_grad=False)
    assert g is None and int(n) == 6
    np.testing.assert_array_equal(x, x0)
    check("loss", loss, reference(x, y)[0], np.float32)


@pytest.mark.parametrize("kind", ["hard", "soft", "ignore"])
def test_eval_counts(kind):
    x, t = make_case(50, 6, np.float64, kind)
    ign = IGNORE if kind == "ignore" else None
    loss_sum, n_valid, n_correct = ops.softmax_cross_entropy_eval(x, t, ignore_index=ign, label_smoothing=0.05)
    rows, _, rn = reference(x, t, 0.05, ign, "none")
    ref = t.argmax(axis=1) if kind == "soft" else t
    valid = np.ones(50, bool) if ign is None else t != ign
    assert int(n_valid) == rn and int(n_correct) == int(((x.argmax(axis=1) == ref) & valid).sum())
    assert all(np.ndim(v) == 0 for v in (loss_sum, n_valid, n_correct))
    check("loss_sum", loss_sum, rows.sum(), np.float64)


def test_cpu_has_no_kernels():
    assert ops.kernels_available("cpu") is False
    assert ops.kernels_available(gn.device("cpu")) is False
    ops.raise_deferred_errors("cpu")  # nothing recorded on the CPU: a no-op


# ---------------------------------------------------------------- CPU: input checks

def test_bad_labels_name_first_row_and_value():
    x = np.zeros((6, 4), np.float32)
    y = np.array([0, 1, 2, 9, 3, 7])
    with pytest.raises(ValueError, match=r"got 9 at row 3"):
        ops.softmax_cross_entropy(x, y)
    y = np.array([0, -1, 2, 3, 3, -5])
    with pytest.raises(ValueError, match=r"got -1 at row 1"):
        ops.softmax_cross_entropy(x, y, ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"got -1 at row 1"):
        ops.softmax_cross_entropy_eval(x, y)
    y = np.array([0, IGNORE, 2, 3, 3, 1])
    ops.softmax_cross_entropy(x, y, ignore_index=IGNORE)  # ignore_index itself is fine
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ops.softmax_cross_entropy(x, y)  # without ignore_index, -100 is out of range


@pytest.mark.parametrize("logits,target,err,needle", [
    (np.zeros((3, 4), np.int32), np.zeros(3, np.int64), gn.GpunetTypeError,
     r"logits of dtype float32, float64, float16 or bfloat16, got int32"),
    (np.zeros((3, 4, 2)), np.zeros(3, np.int64), gn.ShapeError, r"\(N, C\), got \(3, 4, 2\)"),
    (np.zeros((4, 3)).T, np.zeros(3, np.int64), gn.GpunetValueError, "C-contiguous"),
    (np.zeros((3, 4)), np.zeros(5, np.int64), gn.ShapeError, r"\(3,\).*got \(5,\)"),
    (np.zeros((3, 4)), np.zeros(3, np.float64), gn.GpunetTypeError, "int32 or int64"),
    (np.zeros((3, 4)), np.zeros(3, np.uint8), gn.GpunetTypeError, "int32 or int64"),
    (np.zeros((3, 4)), np.zeros((3, 4), np.float32), gn.GpunetTypeError, "float64"),
    (np.zeros((3, 4), np.float16), np.zeros((3, 4), np.float32), gn.GpunetTypeError,
     r"target of dtype float16 \(the dtype of logits\), got float32"),
    (np.zeros((3, 4)), np.zeros((3, 5)), gn.ShapeError, r"\(3, 4\).*got \(3, 5\)"),
    (np.zeros((3, 4)), np.zeros((3, 4, 1)), gn.ShapeError, "soft targets"),
    (np.zeros((3, 4)), np.zeros(6, np.int64)[::2], gn.GpunetValueError, "C-contiguous"),
])
def test_wrapper_input_checks(logits, target, err, needle):
    with pytest.raises(err, match=needle):
        ops.softmax_cross_entropy(logits, target)


@pytest.mark.parametrize("kwargs,err,needle", [
    ({"reduction": "avg"}, gn.GpunetValueError, "reduction"),
    ({"label_smoothing": 1.5}, gn.GpunetValueError, "label_smoothing"),
    ({"ignore_index": 1.0}, gn.GpunetTypeError, "ignore_index"),
    ({"check_labels": "later"}, gn.GpunetValueError, "check_labels"),
    ({"out": np.zeros((3, 5))}, gn.ShapeError, "out"),
    ({"out": np.zeros((3, 4), np.float32)}, gn.GpunetTypeError, "out"),
    ({"out": np.zeros((4, 3)).T}, gn.GpunetValueError, "C-contiguous"),
])
def test_wrapper_option_checks(kwargs, err, needle):
    with pytest.raises(err, match=needle):
        ops.softmax_cross_entropy(np.zeros((3, 4)), np.zeros(3, np.int64), **kwargs)


def test_empty_batch():
    loss, g, n = ops.softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, np.int64), reduction="sum")
    assert float(loss) == 0.0 and g.shape == (0, 4) and int(n) == 0


# ---------------------------------------------------------------- GPU: kernel vs twin

GRID_N = [1, 7, 128, 4097]
GRID_C = [2, 10, 33, 1000, 32768, 131072]
# (kind, label_smoothing, ignore_index, reduction, in_place)
OPTIONS = [("hard", 0.0, None, "mean", False), ("hard64", 0.1, None, "sum", True),
           ("ignore", 0.1, IGNORE, "mean", False), ("soft", 0.1, None, "none", False),
           ("soft", 0.0, None, "mean", True)]


def _cuda():
    return gn.device("cuda")


def _kernel_vs_twin(dev, x, t, kind, eps, ign, reduction, in_place, dtype):
    xp = dev.xp
    xd, td = dev.asarray(x), dev.asarray(t)
    # The twin runs in float64 on the same values: the reference is the exact-ish answer.
    rloss, rg, rn = softmax_cross_entropy_xp(xd.astype(np.float64), td if t.ndim == 1 else td.astype(np.float64),
                                             label_smoothing=eps, ignore_index=ign, reduction=reduction)
    out = xd if in_place else xp.empty_like(xd)
    loss, g, n = ops.softmax_cross_entropy(xd, td, label_smoothing=eps, ignore_index=ign,
                                           reduction=reduction, out=out)
    assert g is out and int(n) == int(rn)
    tag = f"{kind} eps={eps} {reduction} in_place={in_place} {np.dtype(dtype).name}"
    check(f"loss [{tag}]", loss, gn.backend.to_numpy(rloss), dtype)
    check(f"dlogits [{tag}]", g, gn.backend.to_numpy(rg), dtype)
    ls, nv, nc = ops.softmax_cross_entropy_eval(dev.asarray(x), td, label_smoothing=eps, ignore_index=ign)
    els, env, enc = softmax_cross_entropy_eval_xp(dev.asarray(x).astype(np.float64),
                                                  td if t.ndim == 1 else td.astype(np.float64),
                                                  label_smoothing=eps, ignore_index=ign)
    check(f"eval loss_sum [{tag}]", ls, gn.backend.to_numpy(els), dtype)
    assert (int(nv), int(nc)) == (int(env), int(enc)), f"eval counts [{tag}]"


# Logits up to 2 GiB (larger shapes are left out, not skipped: GPUNET_REQUIRE_GPU fails skips).
GRID = [(N, C, dt) for N in GRID_N for C in GRID_C for dt in (np.float32, np.float64)
        if N * C * np.dtype(dt).itemsize <= 2 * 2**30]


@pytest.mark.gpu
@pytest.mark.parametrize("N,C,dtype", GRID, ids=[f"{N}x{C}-{np.dtype(d).name}" for N, C, d in GRID])
def test_kernel_matches_twin(N, C, dtype):
    dev = _cuda()
    for i, (kind, eps, ign, reduction, in_place) in enumerate(OPTIONS):
        x, t = make_case(N, C, dtype, kind, seed=i)
        _kernel_vs_twin(dev, x, t, kind, eps, ign, reduction, in_place, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [10, 4099])
def test_kernel_misaligned_rows_and_extreme_logits(C, dtype):
    """Offsets that defeat float4 loads, or share a misalignment (scalar head), and |x| = 1e4."""
    dev = _cuda()
    N = 9
    x, y = make_case(N, C, dtype, "hard")
    x[::2] = np.sign(x[::2]) * 1e4
    for offset_x, offset_out in [(1, 1), (1, 2), (0, 3)]:
        bx = dev.xp.zeros(N * C + 8, dtype=dtype)
        bo = dev.xp.zeros(N * C + 8, dtype=dtype)
        xd = bx[offset_x:offset_x + N * C].reshape(N, C)
        xd[...] = dev.asarray(x)
        out = bo[offset_out:offset_out + N * C].reshape(N, C)
        loss, g, _ = ops.softmax_cross_entropy(xd, dev.asarray(y), label_smoothing=0.1, out=out)
        rloss, rg, _ = reference(x, y, 0.1)
        check(f"loss offsets {offset_x},{offset_out}", loss, rloss, dtype)
        check(f"dlogits offsets {offset_x},{offset_out}", g, rg, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=lambda d: d.name)
@pytest.mark.parametrize("N,C", [(7, 10), (128, 1000), (9, 4099), (3, 32768)])
def test_kernel_16_bit_matches_twin(N, C, dtype):
    """float16 / bfloat16 logits on the device: float32 loss, dlogits correctly rounded from float32
    (tests/test_kernels_emulated.py's run_ce, which the emulator runs over a larger grid)."""
    from test_kernels_emulated import make_inputs, run_ce
    dev = _cuda()
    for i, (kind, eps, ign, reduction, in_place) in enumerate(OPTIONS):
        k = {"hard": "i32", "hard64": "i64", "ignore": "i64"}.get(kind, kind)
        x, t = make_inputs(N, C, dtype, k, ign, seed=i)
        run_ce(dev, x, t, dtype, k, eps, ign, reduction, in_place, (i % 3, (i + 1) % 3, 0),
               check_labels="deferred" if i % 2 else "sync")


@pytest.mark.gpu
def test_kernel_all_ignored_and_counts():
    dev = _cuda()
    x = dev.asarray(np.random.default_rng(0).standard_normal((5, 40)))
    y = dev.asarray(np.full(5, IGNORE))
    loss, g, n = ops.softmax_cross_entropy(x, y, ignore_index=IGNORE)
    assert np.isnan(float(loss)) and int(n) == 0 and not bool(g.any())


@pytest.mark.gpu
@pytest.mark.parametrize("C", [10, 5000])
def test_kernel_bad_label_sync_and_deferred(C):
    dev = _cuda()
    x = dev.asarray(np.random.default_rng(0).standard_normal((8, C)).astype(np.float32))
    y = dev.asarray(np.array([0, 1, 2, -7, 4, C + 5, 1, -3], dtype=np.int64))
    with pytest.raises(ValueError, match=r"got -7 at row 3"):
        ops.softmax_cross_entropy(x, y)
    ops.raise_deferred_errors(dev)  # the sync slot does not leak into the deferred one
    loss, g, _ = ops.softmax_cross_entropy(x, y, check_labels="deferred", reduction="none")
    rows = gn.backend.to_numpy(loss)
    assert np.isnan(rows[[3, 5, 7]]).all() and np.isfinite(rows[[0, 1, 2, 4, 6]]).all()
    assert bool(dev.xp.isnan(g[3]).all()) and bool(dev.xp.isfinite(g[0]).all())
    with pytest.raises(ValueError, match=r"got -7 at row 3"):
        ops.raise_deferred_errors(dev)
    ops.raise_deferred_errors(dev)  # cleared
    y[3] = 0
    with pytest.raises(ValueError, match=rf"got {C + 5} at row 5"):
        ops.softmax_cross_entropy_eval(x, y)


@pytest.mark.gpu
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("C", [5, 2000])
def test_kernel_non_finite_logits_match_twin(C, soft):
    """On the device: NaN / ±inf / all -inf rows give the twin's (and PyTorch's) loss, dlogits and
    argmax (tests/test_kernels_emulated.py checks the same on the CPU emulator)."""
    from test_kernels_emulated import SPECIAL_ROWS, put, run_ce, special_logits
    dev = _cuda()
    x, y = special_logits(C, np.float32)
    t = np.eye(C, dtype=np.float32)[y] if soft else y
    for eps in (0.0, 0.1):
        run_ce(dev, x, t, np.float32, "soft" if soft else "i64", eps, None, "none", False, (0, 0, 0))
    for r in range(len(SPECIAL_ROWS)):
        _, _, nc = ops.softmax_cross_entropy_eval(put(dev, x[r:r + 1]), put(dev, t[r:r + 1]))
        _, _, enc = softmax_cross_entropy_eval_xp(x[r:r + 1], t[r:r + 1])
        assert int(nc) == int(enc), f"argmax of row {SPECIAL_ROWS[r]!r} (C={C})"
