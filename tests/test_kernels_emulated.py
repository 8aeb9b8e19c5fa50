"""kernels/*.cu, byte for byte as shipped, run on the CPU through gpunet's real wrappers.

tests/cuda_emu compiles each .cu with the host C++ compiler after a CUDA shim, runs every
thread of a block as its own fiber (barriers wait, warps exchange values only at shuffles
and ballots, a collective or barrier not reached by every thread is an error, not a hang),
keeps device arrays between PROT_NONE guard pages (an out-of-bounds access is an error
naming block, thread and argument) and traps misaligned float4/double2 accesses. A
stand-in for CuPy's RawModule/RawKernel takes the wrappers' launches (argument types,
grid and block, flags, alignment choice) and refuses what CuPy or the driver would, or
what would be silently wrong on a GPU. Every result is compared with the NumPy twin.

float16 and bfloat16 inputs (the kernels widen them to float32 and round results once to
the input type; the shim's conversions round bit for bit as CUDA's, tests/test_cuda_emu_fp16.py):
ReLU results must equal the twins' bit for bit (NaN by position: CUDA's conversions give the
canonical NaN). The cross-entropy loss is float32 and held to float32's tolerance; dlogits
must be the correctly rounded float32 result up to float32's own error (close_rounded), for
the kernel and for the twin run on the 16-bit inputs alike.

What the emulator cannot show (only a GPU run can; see scripts/gpu_check.sh):
  * flush-to-zero: NVRTC compiles with -ftz=true, the host keeps float32 denormals (so a
    bfloat16 result below 2^-126 may be 0 on a GPU, a subnormal here);
  * device math rounding: CUDA's expf/logf/exp/log and fused multiply-adds (nvcc contracts
    a*b+c by default; the host build uses -ffp-contract=off) round differently from glibc;
  * timing, occupancy, coalescing, register pressure and spills, launch resource limits
    other than __launch_bounds__ and the block/grid limits;
  * the memory model: one OS thread runs the fibers, so a race between warps that lack a
    barrier shows only when the forward or reverse schedule tried here exposes it, atomics
    never contend, and uninitialised shared memory holds the previous block's values;
  * NVRTC itself (tests/test_kernels_compile.py compiles the same files with nvcc).

Cost: 270 tests, 22 s wall (15 s CPU) on a shared 2-core machine under load 4, once the
emulator libraries are built (a first run builds them: about 3 s per .cu, cached by content
hash under the temp dir); the float16 / bfloat16 cases add about 5 s CPU. Sizes are
sampled: C up to 131072 only for N <= 3.
"""
import importlib
import importlib.util
import itertools
import zlib

import numpy as np
import pytest

import cuda_emu
import gpunet as gn
from conftest import ROOT
from gpunet import ops
from gpunet.errors import GpunetTypeError
from gpunet.ops._kernels import BFLOAT16, compute_dtype, is_half
from gpunet.ops import relu as relu_mod
from gpunet.ops.relu import (leaky_relu_backward_xp, relu_backward_mask_xp, relu_backward_xp,
                             relu_pack_mask_xp)
from gpunet.ops.softmax_cross_entropy_xp import softmax_cross_entropy_eval_xp, softmax_cross_entropy_xp

ce_mod = importlib.import_module("gpunet.ops.softmax_cross_entropy")
pytestmark = pytest.mark.skipif(not cuda_emu.build.compiler_available() or not cuda_emu.build.host_supported(),
                                reason="the CUDA emulator needs g++ (or $CXX) on an x86-64 Linux host")
IGNORE = -100
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# float16 and bfloat16 (ml_dtypes, a test dependency): the kernels compute in float32 and round
# the output once to the 16-bit type.
HALF = [np.dtype(np.float16)] + ([BFLOAT16] if BFLOAT16 is not None else [])


@pytest.fixture
def emu(monkeypatch):
    fake = cuda_emu.install(monkeypatch)
    return fake.emulator


@pytest.fixture
def dev(emu):
    return gn.device("cuda")


def put(dev, host, offset=0):
    """`host` on the device, starting `offset` elements into a buffer that ends with it (so
    its end is flush against a guard page in the default allocation mode)."""
    host = np.ascontiguousarray(host)
    buf = dev.xp.empty(host.size + offset, dtype=host.dtype)
    view = buf[offset:].reshape(host.shape)
    view[...] = host
    return view


def special_values_match(tag, got, want):
    """Same shape, NaN and ±inf exactly where `want` has them; the mask of want's finite values."""
    assert got.shape == want.shape, f"{tag}: shape {got.shape} != {want.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{tag}: NaN positions differ")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{tag}: inf values differ")
    return np.isfinite(want)


def close(tag, got, want, dtype, loss=False, unit=0.0):
    """NaN and ±inf exactly where the twin has them; elsewhere |got - want| <= rtol·|want| + floor,
    floor = rtol·max(max|want|, unit) (losses: unit 1, as log Σ exp is accurate to ulps of 1;
    dlogits: unit = the gradient scale, since p - t cancels to ~0 for a confident row)."""
    got = gn.backend.to_numpy(got).astype(np.float64)
    want = np.asarray(gn.backend.to_numpy(want), dtype=np.float64)
    fin = special_values_match(tag, got, want)
    assert np.isfinite(got[fin]).all(), f"{tag}: non-finite where the twin is finite"
    if not fin.any():
        return
    rtol = RTOL[np.dtype(dtype)]
    scale = float(np.abs(want[fin]).max())
    floor = rtol * max(scale, 1.0 if loss else unit)
    err = np.abs(got[fin] - want[fin]) - (floor + rtol * np.abs(want[fin]))
    assert err.max() <= 0, f"{tag}: worst excess {err.max():.3g} (rtol {rtol})"


def close_rounded(tag, got, want, dtype, unit=0.0):
    """A float16 / bfloat16 result computed in float32 and rounded once: NaN and ±inf exactly
    where the float64 twin `want` has them; elsewhere `got` lies between the roundings to
    `dtype` (nearest even) of want ∓ d, d = the float32 tolerance of `close` (rtol 1e-5, floor
    1e-5·max(max|want|, unit)). So each element is the correctly rounded float32 result, up to
    float32's own error; a truncation or a double rounding shows as an element outside."""
    got = gn.backend.to_numpy(got)
    assert got.dtype == dtype, f"{tag}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    got = got.astype(np.float64)
    want = np.asarray(gn.backend.to_numpy(want), dtype=np.float64)
    fin = special_values_match(tag, got, want)
    if not fin.any():
        return
    rtol = RTOL[np.dtype(np.float32)]
    w = want[fin]
    d = rtol * np.abs(w) + rtol * max(float(np.abs(w).max()), unit)
    lo, hi = (w - d).astype(dtype).astype(np.float64), (w + d).astype(dtype).astype(np.float64)
    out = (got[fin] < lo) | (got[fin] > hi)
    assert not out.any(), (f"{tag}: {out.sum()} of {out.size} elements outside the correctly rounded range, e.g. "
                           f"got {got[fin][out][:3]} for {w[out][:3]}")


# ---------------------------------------------------------------- fused softmax cross-entropy

GRID_N = [1, 2, 3, 7, 33, 257]
GRID_C = [1, 2, 3, 4, 5, 8, 9, 16, 17, 31, 32, 33, 64, 65, 127, 255, 1023, 1024, 1025, 2047, 4096, 4097,
          16384, 16385, 65536, 65537, 131072]


def _fits(N, C):
    return N * C <= 300_000 or (C >= 65536 and N <= 3)


CASES = [(N, C) for C in GRID_C for N in GRID_N if _fits(N, C)]
KINDS = ["i32", "i64", "soft"]
# (dtype, target kind, label_smoothing, ignore_index, reduction, in_place, (x, out, target) offsets, mode)
OPTIONS = list(itertools.product([np.float32, np.float64], KINDS, [0.0, 0.1], [None, IGNORE],
                                 ["mean", "sum", "none"], [False, True], [(0, 0, 0), (1, 1, 0), (1, 2, 1), (3, 0, 2)],
                                 ["end", "start"]))
PER_CASE = 3
# The 16-bit logits: one more option set per case (PER_CASE_HALF), drawn apart from the same choices.
HALF_OPTIONS = list(itertools.product(HALF, KINDS, [0.0, 0.1], [None, IGNORE], ["mean", "sum", "none"], [False, True],
                                      [(0, 0, 0), (1, 1, 0), (1, 2, 1), (3, 0, 2), (7, 5, 1)], ["end", "start"]))
PER_CASE_HALF = 1


def case_options(N, C):
    """PER_CASE option sets for one (N, C), a seeded draw: every option value shows up across the grid."""
    rng = np.random.default_rng(zlib.crc32(f"{N}x{C}".encode()))
    return [OPTIONS[i] for i in rng.choice(len(OPTIONS), PER_CASE, replace=False)]


def case_options_half(N, C):
    rng = np.random.default_rng(zlib.crc32(f"{N}x{C} half".encode()))
    return [HALF_OPTIONS[i] for i in rng.choice(len(HALF_OPTIONS), PER_CASE_HALF, replace=False)]


def make_inputs(N, C, dtype, kind, ignore, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((N, C))).astype(dtype)
    if kind == "soft":
        t = rng.random((N, C))
        return x, (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    y = rng.integers(0, C, N).astype(np.int32 if kind == "i32" else np.int64)
    if ignore is not None:
        y[rng.random(N) < 0.3] = ignore
    return x, y


def run_ce(dev, x, t, dtype, kind, eps, ign, reduction, in_place, offsets, check_labels="sync"):
    """The wrapper on the device vs the twin in float64 on the host: loss, dlogits, n_valid, eval."""
    ign = ign if kind != "soft" else None
    tag = (f"{x.shape} {np.dtype(dtype).name} {kind} eps={eps} ignore={ign} {reduction} in_place={in_place} "
           f"offsets={offsets}")
    ox, oo, ot = offsets
    t64 = t if kind != "soft" else t.astype(np.float64)
    with np.errstate(invalid="ignore"):   # NaN / inf rows in the twin are the point of some cases
        rloss, rg, rn = softmax_cross_entropy_xp(x.astype(np.float64), t64, label_smoothing=eps,
                                                 ignore_index=ign, reduction=reduction)
    xd, td = put(dev, x, ox), put(dev, t, ot)
    out = xd if in_place else put(dev, np.zeros_like(x), oo)
    loss, g, n = ops.softmax_cross_entropy(xd, td, label_smoothing=eps, ignore_index=ign, reduction=reduction,
                                           out=out, check_labels=check_labels)
    assert g is out, tag
    assert int(n.get()) == int(rn), tag
    ct = compute_dtype(dtype)   # the loss's type: float32 for 16-bit logits
    assert loss.dtype == ct, f"loss dtype {loss.dtype} [{tag}]"
    close(f"loss [{tag}]", loss, rloss, ct, loss=True)
    unit = 1.0 / max(int(rn), 1) if reduction == "mean" else 1.0
    if is_half(dtype):
        close_rounded(f"dlogits [{tag}]", g, rg, dtype, unit=unit)
        # the twin on the 16-bit inputs (float32, one rounding) meets the same bound
        with np.errstate(invalid="ignore"):
            _, tg, _ = softmax_cross_entropy_xp(x, t, label_smoothing=eps, ignore_index=ign, reduction=reduction)
        close_rounded(f"16-bit twin dlogits [{tag}]", tg, rg, dtype, unit=unit)
    else:
        close(f"dlogits [{tag}]", g, rg, dtype, unit=unit)
    ls, nv, nc = ops.softmax_cross_entropy_eval(put(dev, x, ox), td, label_smoothing=eps, ignore_index=ign)
    with np.errstate(invalid="ignore"):
        els, env, enc = softmax_cross_entropy_eval_xp(x.astype(np.float64), t64, label_smoothing=eps,
                                                      ignore_index=ign)
    close(f"eval loss_sum [{tag}]", ls, els, ct, loss=True)
    assert (int(nv.get()), int(nc.get())) == (int(env), int(enc)), f"eval counts [{tag}]"
    return tag


@pytest.mark.parametrize("N,C", CASES, ids=[f"{N}x{C}" for N, C in CASES])
def test_ce_grid_matches_twin(emu, dev, N, C):
    for i, (dtype, kind, eps, ign, reduction, in_place, offsets, mode) in enumerate(case_options(N, C)
                                                                                     + case_options_half(N, C)):
        with cuda_emu.allocation_mode(mode):
            x, t = make_inputs(N, C, dtype, kind, ign, seed=i)
            run_ce(dev, x, t, dtype, kind, eps, ign, reduction, in_place, offsets)
    # The launch matches the wrapper's rule: lane groups up to C = 1024, a block per row above.
    name, grid, block, _ = emu.launches[-1]
    if C <= 1024:
        assert name.startswith("ce_small_") and block == (256, 1, 1)
    else:
        assert name.startswith("ce_large_") and grid == (N, 1, 1) and block[0] % 32 == 0


def test_ce_grid_covers_every_option():
    for options, draw in ((OPTIONS, case_options), (HALF_OPTIONS, case_options_half)):
        drawn = [o for N, C in CASES for o in draw(N, C)]
        for k in range(len(options[0])):
            assert {repr(o[k]) for o in drawn} == {repr(o[k]) for o in options}, f"option {k} not fully covered"
    assert len(HALF) == 2, "bfloat16 (ml_dtypes) is a test dependency"
    assert {C for _, C in CASES} == set(GRID_C) and {N for N, _ in CASES} == set(GRID_N)


@pytest.mark.parametrize("schedule", [0, 1], ids=["forward", "reverse"])
@pytest.mark.parametrize("C", [7, 100, 1025, 5000])
def test_ce_every_option_combination_at_the_boundaries(emu, dev, C, schedule):
    """All dtypes x target kinds x smoothing x ignore x reductions at one size per code path,
    in both scheduling orders (float16 / bfloat16: one reduction per combination, in turn)."""
    emu.schedule = schedule
    N = 9
    for i, (dtype, kind, eps, ign, reduction) in enumerate(itertools.product(
            [np.float32, np.float64] + HALF, KINDS, [0.0, 0.1], [None, IGNORE], ["mean", "sum", "none"])):
        if kind == "soft" and ign is not None:
            continue
        if is_half(dtype) and (i // 3) % 3 != ["mean", "sum", "none"].index(reduction):
            continue
        x, t = make_inputs(N, C, dtype, kind, ign, seed=i)
        run_ce(dev, x, t, dtype, kind, eps, ign, reduction, in_place=i % 2 == 1, offsets=(i % 4, (i // 2) % 4, 0),
               check_labels="deferred" if i % 3 else "sync")


SPECIAL_ROWS = ["nan", "+inf", "+inf label", "-inf some", "all -inf", "-inf label", "big", "nan and +inf", "ok"]


def special_logits(C, dtype, seed=0):
    """One row per SPECIAL_ROWS entry (labels 0 except where the row says), NaN/inf in the middle."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(SPECIAL_ROWS), C)).astype(dtype)
    y = np.zeros(len(SPECIAL_ROWS), np.int64)
    j = C // 2
    for r, kind in enumerate(SPECIAL_ROWS):
        if kind == "nan":
            x[r, j] = np.nan
        elif kind == "+inf":
            x[r, j] = np.inf
        elif kind == "+inf label":
            x[r, j], y[r] = np.inf, j
        elif kind == "-inf some":
            x[r, ::2] = -np.inf
            y[r] = 1 if C > 1 else 0
        elif kind == "all -inf":
            x[r] = -np.inf
        elif kind == "-inf label":
            x[r, 0] = -np.inf
        elif kind == "big":
            x[r] = np.sign(x[r]) * 1e4
        elif kind == "nan and +inf":
            x[r, -1], x[r, j] = np.inf, np.nan
    return x, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64] + HALF, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("C", [1, 5, 100, 2000])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_ce_non_finite_logits_match_twin(dev, C, dtype, soft):
    """NaN / ±inf / all -inf rows: loss, dlogits and argmax (eval's n_correct) agree with the
    twin, which agrees with PyTorch (a NaN or +inf logit makes the row NaN; argmax takes the
    first NaN)."""
    x, y = special_logits(C, dtype)
    t = y if not soft else np.eye(C, dtype=dtype)[y]
    for eps in (0.0, 0.1):
        run_ce(dev, x, t, dtype, "soft" if soft else "i64", eps, None, "none", False, (0, 0, 0))
    # eval counts per row: argmax parity, row by row
    xd = put(dev, x)
    for r in range(len(SPECIAL_ROWS)):
        _, _, nc = ops.softmax_cross_entropy_eval(xd[r:r + 1].copy(), put(dev, t[r:r + 1]))
        with np.errstate(invalid="ignore"):
            _, _, enc = softmax_cross_entropy_eval_xp(x[r:r + 1], t[r:r + 1])
        assert int(nc.get()) == int(enc), f"argmax of row {SPECIAL_ROWS[r]!r} (C={C})"


def test_twin_matches_pytorch_on_non_finite_logits():
    torch = pytest.importorskip("torch")
    x, y = special_logits(7, np.float64)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(y), reduction="none")
    lt.sum().backward()
    loss, g, _ = softmax_cross_entropy_xp(x, y, reduction="none")
    close("loss vs torch", loss, lt.detach().numpy(), np.float64, loss=True)
    close("dlogits vs torch", g, xt.grad.numpy(), np.float64)
    np.testing.assert_array_equal(np.argmax(x, axis=1), torch.argmax(torch.tensor(x), dim=1).numpy())


@pytest.mark.parametrize("dtype", [np.float32] + HALF, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("C", [10, 5000])
def test_ce_bad_labels_sync_and_deferred(dev, C, dtype):
    x = put(dev, np.random.default_rng(0).standard_normal((8, C)).astype(dtype))
    y = put(dev, np.array([0, 1, 2, -7, 4, C + 5, 1, 2**40], dtype=np.int64))
    with pytest.raises(ValueError, match=r"got -7 at row 3"):
        ops.softmax_cross_entropy(x, y)
    ops.raise_deferred_errors(dev)   # the sync slot does not leak into the deferred one
    loss, g, _ = ops.softmax_cross_entropy(x, y, check_labels="deferred", reduction="none")
    rows = loss.get()
    assert np.isnan(rows[[3, 5, 7]]).all() and np.isfinite(rows[[0, 1, 2, 4, 6]]).all()
    assert np.isnan(g.get()[[3, 5, 7]]).all() and np.isfinite(g.get()[[0, 1, 2, 4, 6]]).all()
    with pytest.raises(ValueError, match=r"got -7 at row 3"):
        ops.raise_deferred_errors(dev)
    ops.raise_deferred_errors(dev)   # cleared
    y[3] = 0
    y[5] = 1
    with pytest.raises(ValueError, match=r"got 2147483647 \(clamped to the int32 range\) at row 7"):
        ops.softmax_cross_entropy_eval(x, y, check_labels="deferred")
        ops.raise_deferred_errors(dev)
    with pytest.raises(ValueError, match=rf"got {2**40} at row 7"):   # sync: the exact value
        ops.softmax_cross_entropy(x, y)


@pytest.mark.parametrize("dtype", [np.float64] + HALF, ids=lambda d: np.dtype(d).name)
def test_ce_all_ignored(dev, dtype):
    x = put(dev, np.random.default_rng(0).standard_normal((5, 40)).astype(dtype))
    loss, g, n = ops.softmax_cross_entropy(x, put(dev, np.full(5, IGNORE)), ignore_index=IGNORE)
    assert np.isnan(float(loss.get())) and int(n.get()) == 0 and not g.get().view(np.uint8).any()
    assert loss.dtype == compute_dtype(dtype) and g.dtype == dtype


def test_deferred_error_left_pending_by_a_test():
    """Leaves a deferred bad label behind on purpose: the next test must not see it."""
    cuda_emu_mp = pytest.MonkeyPatch()
    try:
        cuda_emu.install(cuda_emu_mp)
        d = gn.device("cuda")
        ops.softmax_cross_entropy(put(d, np.zeros((2, 3))), put(d, np.array([0, 9])), check_labels="deferred")
        assert ce_mod._err_buffers, "the deferred slot was not created"
    finally:
        cuda_emu_mp.undo()


def test_deferred_error_slot_is_reset_between_tests(dev):
    assert not ce_mod._err_buffers
    ops.raise_deferred_errors(dev)   # nothing pending from the previous test


# ---------------------------------------------------------------- ReLU backward and the 1-bit mask

RELU_SIZES = [1, 2, 3, 31, 32, 33, 63, 65, 1000, 1025, 4099, 65537]
RELU_OFFSETS = [(0, 0, 0), (1, 1, 1), (3, 3, 3), (1, 2, 3), (0, 1, 0), (2, 0, 2)]
RELU_OFFSETS_HALF = [(7, 7, 7), (5, 5, 6)]   # 16-bit types: heads of up to 7 elements


def relu_data(n, dtype, seed):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n).astype(dtype)
    y[rng.random(n) < 0.1] = 0.0
    y[rng.random(n) < 0.02] = np.nan    # NaN > 0 is false: dropped
    dy = rng.standard_normal(n).astype(dtype)
    dy[rng.random(n) < 0.05] = np.nan   # dropped where y <= 0
    if is_half(dtype):   # slope · dy beyond the 16-bit range rounds to inf; tiny ones to subnormals
        dy[rng.random(n) < 0.02] = 6e4 if dtype == np.float16 else 3e38
        dy[rng.random(n) < 0.02] = 3e-6 if dtype == np.float16 else 1e-39
    return dy, y


def exact(tag, got, want):
    """Bit for bit (signed zeros included); NaN only by position (CUDA's 16-bit conversions
    give the canonical NaN, NumPy keeps the payload)."""
    got, want = gn.backend.to_numpy(got), gn.backend.to_numpy(want)
    assert got.dtype == want.dtype and got.shape == want.shape, \
        f"{tag}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
    if got.dtype.kind == "u":
        np.testing.assert_array_equal(got, want, err_msg=tag)
        return
    nan = np.isnan(want.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float64)), nan, err_msg=f"{tag}: NaN positions")
    bits = np.dtype(f"u{got.dtype.itemsize}")
    np.testing.assert_array_equal(got.view(bits)[~nan], want.view(bits)[~nan], err_msg=tag)


@pytest.mark.parametrize("dtype", [np.float32, np.float64] + HALF, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", RELU_SIZES)
def test_relu_kernels_match_twins(dev, n, dtype):
    slope = -3.0 if is_half(dtype) else 0.1   # 16-bit: slope · dy overflows to inf for some
    for k, (o_dy, o_y, o_out) in enumerate(RELU_OFFSETS + (RELU_OFFSETS_HALF if is_half(dtype) else [])):
        mode = "end" if k % 2 == 0 else "start"
        with cuda_emu.allocation_mode(mode):
            dy_h, y_h = relu_data(n, dtype, seed=n + k)
            dy, y, out = put(dev, dy_h, o_dy), put(dev, y_h, o_y), put(dev, np.zeros(n, dtype), o_out)
            tag = f"n={n} {np.dtype(dtype).name} offsets={(o_dy, o_y, o_out)} {mode}"
            exact(f"relu_backward [{tag}]", ops.relu_backward(dy, y, out=out), relu_backward_xp(dy_h, y_h))
            exact(f"leaky_relu_backward [{tag}]", ops.leaky_relu_backward(dy, y, slope),
                  leaky_relu_backward_xp(dy_h, y_h, slope))
            mask = ops.relu_pack_mask(y)
            exact(f"relu_pack_mask [{tag}]", mask, relu_pack_mask_xp(y_h))
            exact(f"relu_backward_mask [{tag}]", ops.relu_backward_mask(dy, mask, out=out),
                  relu_backward_mask_xp(dy_h, relu_pack_mask_xp(y_h)))
            dy2 = put(dev, dy_h, o_dy)
            assert ops.relu_backward(dy2, y, out=dy2) is dy2   # in place
            exact(f"relu_backward in place [{tag}]", dy2, relu_backward_xp(dy_h, y_h))


@pytest.mark.parametrize("dtype", [np.float32, np.float64] + HALF, ids=lambda d: np.dtype(d).name)
def test_relu_forced_multi_block_grid_stride(emu, dev, dtype, monkeypatch):
    """At most 2 blocks of 256: every thread loops over several vectors, and pack_mask's warps
    over several words."""
    monkeypatch.setattr(relu_mod, "MAX_BLOCKS", 2)
    n = 9 * 1024 + 7
    dy_h, y_h = relu_data(n, dtype, seed=1)
    for off in (0, 1, 3):
        dy, y = put(dev, dy_h, off), put(dev, y_h, off)
        exact(f"relu_backward off={off}", ops.relu_backward(dy, y), relu_backward_xp(dy_h, y_h))
        assert emu.launches[-1][1] == (2, 1, 1)
        mask = ops.relu_pack_mask(y)
        assert emu.launches[-1][1] == (2, 1, 1)
        exact(f"relu_pack_mask off={off}", mask, relu_pack_mask_xp(y_h))
        exact(f"relu_backward_mask off={off}", ops.relu_backward_mask(dy, mask), relu_backward_mask_xp(dy_h, mask.get()))
        exact(f"leaky off={off}", ops.leaky_relu_backward(dy, y, -0.5), leaky_relu_backward_xp(dy_h, y_h, -0.5))


def test_relu_non_contiguous_and_shapes(dev):
    dy_h, y_h = relu_data(3 * 37 * 5, np.float32, seed=2)
    dy, y = put(dev, dy_h.reshape(3, 37, 5)), put(dev, y_h.reshape(3, 37, 5))
    exact("transposed", ops.relu_backward(dy.transpose(2, 0, 1), y.transpose(2, 0, 1)),
          relu_backward_xp(dy_h.reshape(3, 37, 5).transpose(2, 0, 1), y_h.reshape(3, 37, 5).transpose(2, 0, 1)))


# ---------------------------------------------------------------- GPU-only defects the emulator shows

def test_relu_backward_mask_refuses_a_mask_on_another_gpu(monkeypatch):
    cuda_emu.install(monkeypatch, n_devices=2)
    d0, d1 = gn.device("cuda:0"), gn.device("cuda:1")
    dy = d0.asarray(np.ones(40, np.float32))
    with d1:
        mask = d1.asarray(np.full(2, 0xFFFFFFFF, np.uint32))
    with pytest.raises(GpunetTypeError, match=r"mask on the same device as dy \(cuda:0\), got cuda:1"):
        ops.relu_backward_mask(dy, mask)


def test_memory_info_reports_its_own_device(monkeypatch):
    cuda_emu.install(monkeypatch, n_devices=2)
    d0, d1 = gn.device("cuda:0"), gn.device("cuda:1")
    with d1:
        keep = d1.asarray(np.zeros(1 << 16, np.float64))   # 512 KiB on cuda:1 only
    assert d1.memory_info()["used_bytes"] >= keep.nbytes
    assert d0.memory_info()["used_bytes"] < keep.nbytes   # cuda:0 is current, but not asked about


@pytest.mark.parametrize("bad", [-1, 4, 100])
def test_one_hot_on_the_gpu_refuses_out_of_range_labels(dev, bad):
    y = put(dev, np.array([0, 1, bad, 2]))
    with pytest.raises(gn.GpunetValueError, match=rf"one_hot: labels expected in \[0, 4\).*{bad}"):
        gn.data.one_hot(y, 4)
    with pytest.raises(gn.GpunetValueError, match=r"one_hot"):
        gn.data.one_hot(np.array([0, 1, bad, 2]), 4)   # and on the CPU, negative labels too
    exact("one_hot in range", gn.data.one_hot(put(dev, np.array([3, 0])), 4), np.eye(4, dtype=np.float32)[[3, 0]])


def test_kernel_folder_and_sources_are_not_touched_per_call(emu, dev, monkeypatch):
    x, y = put(dev, np.zeros((4, 10), np.float32)), put(dev, np.arange(4))
    ops.softmax_cross_entropy(x, y)   # first call: finds the folder, compiles
    ops.relu_backward(x, x)
    calls = []
    for name in ("kernels_dir", "kernel_source"):
        real = getattr(gn.backend, name)
        monkeypatch.setattr(gn.backend, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    for _ in range(3):
        ops.softmax_cross_entropy(x, y, check_labels="deferred")
        ops.softmax_cross_entropy_eval(x, y)
        ops.relu_backward(x, x)
        assert ops.kernels_available(dev)
    assert calls == []


# ---------------------------------------------------------------- the stand-in refuses what CuPy would

def test_stand_in_refuses_bad_launch_arguments(emu, dev):
    fn = gn.ops._kernels.function(dev, "relu", "relu_backward_f32")
    a = put(dev, np.ones(64, np.float32))
    good = (a, a, a, np.int64(64), np.int32(1))
    fn((1,), (64,), good)
    bad = [
        (((1,), (64,), (a, a, a, 64.0, np.int32(1))), "expected a int64 value, got float64"),
        (((1,), (64,), (a, a, a, np.int64(64), 1)), "expected a int32 value, got int64"),
        (((1,), (64,), (a, a, np.ones(64, np.float32), np.int64(64), np.int32(1))), "Unsupported type"),
        (((1,), (64,), (a, a, put(dev, np.ones(64)), np.int64(64), np.int32(1))), "expected a float32 array"),
        (((1,), (64,), good[:4]), "expected 5 arguments"),
        ((1, (64,), good), "expected tuple"),
        (((1,), (2048,), good), r"block.x expected in \[1, 1024\]"),
        (((0,), (64,), good), r"grid.x expected"),
    ]
    for args, needle in bad:
        with pytest.raises((cuda_emu.EmulatorError, TypeError), match=needle):
            fn(*args)
    small = gn.ops._kernels.function(dev, "softmax_cross_entropy", "ce_small_f32_i32")
    with pytest.raises(cuda_emu.EmulatorError, match=r"__launch_bounds__\(256\)"):
        small((1,), (512,), ())
    with pytest.raises(cuda_emu.fake_cupy.CUDADriverError, match="NOT_FOUND"):
        dev.raw_module("relu").get_function("relu_backward_i32")


def test_stand_in_refuses_a_kernel_loaded_on_another_device(monkeypatch):
    cuda_emu.install(monkeypatch, n_devices=2)
    d0, d1 = gn.device("cuda:0"), gn.device("cuda:1")
    fn = gn.ops._kernels.function(d0, "relu", "relu_backward_f32")
    with d1:
        a = d1.asarray(np.ones(8, np.float32))
        with pytest.raises(cuda_emu.fake_cupy.CUDADriverError, match="INVALID_HANDLE"):
            fn((1,), (32,), (a, a, a, np.int64(8), np.int32(0)))
        # through the wrapper: per-device kernels, launched inside the array's device
        exact("relu on cuda:1", ops.relu_backward(a, a), np.ones(8, np.float32))
    exact("relu on cuda:0", ops.relu_backward(d0.asarray(np.ones(8, np.float32)), d0.asarray(np.ones(8, np.float32))),
          np.ones(8, np.float32))


# ---------------------------------------------------------------- the emulator catches broken kernels

EMU_SELFTEST = r"""
extern "C" __global__ void shfl_after_exit(float* out, int n) {
    float v = threadIdx.x;
    if ((int)threadIdx.x >= n) return;
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}
extern "C" __global__ void barrier_after_exit(float* out, int n) {
    if ((int)threadIdx.x < n) __syncthreads();
    out[threadIdx.x] = 1;
}
extern "C" __global__ void divergent(float* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    else __syncthreads();
}
extern "C" __global__ void copy_one_too_many(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = x[i];
}
extern "C" __global__ void read_before_start(const float* x, float* out) {
    out[threadIdx.x] = x[(int)threadIdx.x - 1];
}
extern "C" __global__ void misaligned_float4(const float* x, float* out) {
    const float4 v = reinterpret_cast<const float4*>(x + 1)[threadIdx.x];
    out[threadIdx.x] = v.x;
}
extern "C" __global__ void reduce_ok(const float* x, float* out) {
    __shared__ float s[64];
    const int i = threadIdx.x;
    s[i] = x[i];
    __syncthreads();
    float v = s[63 - i];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[i] = v + (float)__popc(__ballot_sync(0xffffffffu, x[i] > 0.0f));
}
"""


def test_emulator_reports_broken_kernels(emu, dev):
    mod = dev.xp.RawModule(code=EMU_SELFTEST, options=("-std=c++17",))
    x = put(dev, np.arange(64, dtype=np.float32) - 10)
    out = put(dev, np.zeros(64, np.float32))
    mod.get_function("reduce_ok")((1,), (64,), (x, out))
    xs = np.arange(64, dtype=np.float32) - 10
    want = np.concatenate([np.full(32, xs[32:].sum() + 21), np.full(32, xs[:32].sum() + 32)])
    np.testing.assert_array_equal(out.get(), want)
    cases = [
        ("shfl_after_exit", (out, np.int32(5)), (64,), r"thread \(5, 0, 0\): exited while lanes 0x0000001f wait "
                                                       r"at __shfl_xor_sync.*not reached by every lane"),
        ("barrier_after_exit", (out, np.int32(5)), (64,), r"exited while 5 thread\(s\) wait at __syncthreads"),
        ("divergent", (out,), (32,), r"deadlock.*16 thread\(s\) wait at __syncthreads.*lanes 0x0000ffff wait at "
                                     r"__shfl_xor_sync"),
        ("copy_one_too_many", (x, out, np.int32(64)), (65,), r"thread \(64, 0, 0\): invalid access.*0 bytes past the "
                                                             r"end of argument 0"),
        ("read_before_start", (put(dev, np.zeros(8, np.float32)), out), (8,), None),
        ("misaligned_float4", (x, out), (4,), r"misaligned"),
    ]
    for name, args, block, needle in cases:
        if name == "read_before_start":   # needs a start flush against its guard page
            with cuda_emu.allocation_mode("start"):
                a = put(dev, np.zeros(8, np.float32))
            args, needle = (a, out), r"thread \(0, 0, 0\): invalid access.*4 bytes before the start of argument 0"
        with pytest.raises(cuda_emu.EmulatorError, match=needle):
            mod.get_function(name)((1,), block, args)


MUTATIONS = {
    # an off-by-one in ReLU's scalar tail: one element past the end is read and written
    "relu tail off-by-one": ("relu", "for (long long i = head + nvec * VW + tid; i < n; i += nth)",
                             "for (long long i = head + nvec * VW + tid; i <= n; i += nth)",
                             r"invalid (access|write).*past the end of argument", np.float32),
    # inactive lanes of the last row group leave before the shuffles
    "early exit before the shuffles": ("softmax_cross_entropy", "    Acc<A> a = acc_empty<A>();\n    row_stats<T, SOFT>(xr, tr, r.len, vec, r.xref, tid, tpr, a);",
                                       "    if (!active) return;\n    Acc<A> a = acc_empty<A>();\n    row_stats<T, SOFT>(xr, tr, r.len, vec, r.xref, tid, tpr, a);",
                                       r"warp collective not reached by every lane", np.float32),
    # the block merge reads the other warps' partials without waiting for them
    "missing __syncthreads": ("softmax_cross_entropy", "    __syncthreads();   // also orders", "    // also orders",
                              r"mismatch|excess|differ|not finite|non-finite", np.float32),
    # half dlogits truncated instead of rounded to nearest even
    "half store rounds toward zero": ("softmax_cross_entropy", "__half st(float v) { return __float2half_rn(v); }",
                                      "__half st(float v) { return __float2half_rz(v); }",
                                      r"outside the correctly rounded range", np.float16),
    # a bf16 vector taken as 4 elements (the float4 count) instead of 8: the body runs past the end
    "bf16 vector width": ("relu", "static const int VW = 8;\n    static __device__ __forceinline__ float ld(__nv_bfloat16",
                          "static const int VW = 4;\n    static __device__ __forceinline__ float ld(__nv_bfloat16",
                          r"invalid (access|write).*past the end of argument", "bfloat16"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_emulator_catches_a_broken_copy_of_a_shipped_kernel(emu, dev, monkeypatch, mutation):
    module, old, new, needle, dtype = MUTATIONS[mutation]
    dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    src = (ROOT / "kernels" / f"{module}.cu").read_text()
    assert src.count(old) == 1, f"mutation {mutation!r} no longer applies to kernels/{module}.cu"
    broken = src.replace(old, new)
    real = gn.backend.kernel_source
    monkeypatch.setattr(gn.backend, "kernel_source", lambda name: broken if name == module else real(name))
    with pytest.raises((cuda_emu.EmulatorError, AssertionError), match=needle):
        if module == "relu":
            dy_h, y_h = relu_data(37, dtype, seed=0)
            ops.relu_backward(put(dev, dy_h), put(dev, y_h))
        else:
            for C in (10, 3000):
                x, y = make_inputs(3, C, dtype, "i64", None, seed=0)
                run_ce(dev, x, y, dtype, "i64", 0.0, None, "none", False, (0, 0, 0))


# ---------------------------------------------------------------- gpunet bench kernels on the emulator

def test_bench_kernels_times_the_deferred_path_and_the_raw_launch(emu, dev, monkeypatch):
    """kernel ms: what training runs (no label sync); sync ms: one sync per call; launch ms: exactly
    one kernel launch and nothing else."""
    from gpunet.bench import kernels as bench
    syncs = []
    real_sync = ce_mod._raise_sync_error
    monkeypatch.setattr(ce_mod, "_raise_sync_error", lambda *a: syncs.append(1) or real_sync(*a))
    seen = []

    def time_ms(fn):
        s0, l0 = len(syncs), len(emu.launches)
        fn()
        seen.append((len(syncs) - s0, [name for name, *_ in emu.launches[l0:]]))
        return 1.0
    row = bench.bench_ce(dev, time_ms, None, 33, 100)
    assert row["check_ok"], row
    kernel, sync, launch, ev = seen[:4]
    assert kernel == (0, ["ce_small_f32_i64"]) and sync == (1, ["ce_small_f32_i64"])
    assert launch == (0, ["ce_small_f32_i64"]) and ev == (0, ["ce_small_f32_i64"])
    seen.clear()
    row = bench.bench_relu(dev, time_ms, None, 1000)
    assert row["check_ok"] and seen[1] == (0, ["relu_backward_f32"])


# ---------------------------------------------------------------- 16-bit inputs: what is refused

def test_kernels_refuse_other_dtypes_before_launching(emu, dev):
    """Integer and mixed dtypes get gpunet's error naming what the kernels take; nothing launches."""
    xi = put(dev, np.zeros((3, 4), np.int32))
    h = put(dev, np.zeros((3, 4), np.float16))
    y = put(dev, np.zeros(3, np.int64))
    taken = "float32, float64, float16 or bfloat16"
    cases = [
        (lambda: ops.relu_backward(xi, xi), rf"relu_backward: expected dy of dtype {taken}, got int32"),
        (lambda: ops.leaky_relu_backward(put(dev, np.zeros(4, np.complex64)), put(dev, np.zeros(4, np.complex64)), 0.1),
         rf"leaky_relu_backward: expected dy of dtype {taken}, got complex64"),
        (lambda: ops.relu_pack_mask(put(dev, np.zeros(5, np.int8))),
         rf"relu_pack_mask: expected y of dtype {taken}, got int8"),
        (lambda: ops.relu_backward(h, put(dev, np.zeros((3, 4), BFLOAT16))),
         r"expected y of dtype float16 \(the dtype of dy\), got bfloat16"),
        (lambda: ops.relu_backward(h, h, out=put(dev, np.zeros((3, 4), np.float32))),
         r"expected out of dtype float16 \(the dtype of dy\), got float32"),
        (lambda: ops.softmax_cross_entropy(xi, y),
         rf"softmax_cross_entropy: expected logits of dtype {taken}, got int32"),
        (lambda: ops.softmax_cross_entropy_eval(put(dev, np.zeros((3, 4), np.uint16)), y),
         rf"softmax_cross_entropy_eval: expected logits of dtype {taken}, got uint16"),
        (lambda: ops.softmax_cross_entropy(h, put(dev, np.full((3, 4), 0.25, np.float32))),
         r"expected target of dtype float16 \(the dtype of logits\), got float32"),
        (lambda: ops.softmax_cross_entropy(h, y, out=put(dev, np.zeros((3, 4), BFLOAT16))),
         r"expected out of dtype float16 \(the dtype of logits\), got bfloat16"),
    ]
    for call, needle in cases:
        with pytest.raises(GpunetTypeError, match=needle):
            call()
    assert emu.launches == []


@pytest.mark.parametrize("dtype", HALF, ids=lambda d: np.dtype(d).name)
def test_ce_16_bit_launch_types(emu, dev, dtype):
    """A 16-bit launch: the _f16 / _bf16 entry, float32 row losses, eps and grad scale (the
    stand-in checks every argument's type against the kernel's parameters), dlogits in place."""
    x, t = make_inputs(4, 40, dtype, "soft", None, seed=3)
    xd = put(dev, x)
    loss, g, _ = ops.softmax_cross_entropy(xd, put(dev, t), label_smoothing=0.1, out=xd)
    name, _, _, args = emu.launches[-1]
    assert name == f"ce_small_{gn.ops._kernels.dtype_suffix(dtype)}_soft"
    assert args[3].dtype == np.float32 and type(args[-3]) is np.float32 and type(args[-2]) is np.float32
    assert g is xd and g.dtype == dtype and loss.dtype == np.float32
