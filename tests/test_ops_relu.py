"""gpunet.ops.relu: the twins against plain NumPy (CPU), the kernels against the twins (GPU),
the 1-bit mask round trip, and input checks. Selects and one multiply: results are exact."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import ops
from gpunet.ops._kernels import BFLOAT16
from gpunet.ops.relu import (leaky_relu_backward_xp, relu_backward_mask_xp, relu_backward_xp,
                             relu_pack_mask_xp, unpack_mask_xp)
from gpunet.testing import assert_close

SIZES = [1, 31, 32, 33, 1000003]


def data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n).astype(dtype)
    y[rng.random(n) < 0.1] = 0.0  # exact zeros: y > 0 is strict
    return rng.standard_normal(n).astype(dtype), y


def exact(name, got, want):
    assert_close(name, gn.backend.to_numpy(got), gn.backend.to_numpy(want), atol=0.0, rtol=0.0)


# ---------------------------------------------------------------- CPU

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_matches_numpy(dtype):
    dy, y = data(1001, dtype)
    dy[:5] = np.nan  # NaN where y <= 0 is dropped, as in PyTorch's threshold_backward
    y[:5] = [-1, 0, 1, -2, 3]
    dx = ops.relu_backward(dy.reshape(7, 11, 13), y.reshape(7, 11, 13))
    assert dx.shape == (7, 11, 13) and dx.dtype == dtype
    want = np.where(y > 0, dy, 0).reshape(7, 11, 13)
    np.testing.assert_array_equal(dx, want)


@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5, 2.0])
def test_leaky_relu_backward_matches_numpy(slope):
    dy, x = data(500, np.float64)
    dx = ops.leaky_relu_backward(dy, x, slope)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * slope))


HALF = [np.dtype(np.float16)] + ([BFLOAT16] if BFLOAT16 is not None else [])   # ml_dtypes: a test dependency


@pytest.mark.parametrize("dtype", HALF, ids=lambda d: d.name)
def test_16_bit_twins_are_the_float32_ones_rounded_once(dtype):
    """float16 / bfloat16: compare and multiply in float32, one rounding to the type; the
    selected dy passes bit for bit. Leaky's slope · dy equals PyTorch's leaky_relu_backward."""
    torch = pytest.importorskip("torch")
    dy, y = data(1001, dtype, seed=3)
    big = 6e4 if dtype == np.float16 else 3e38
    dy[:6] = [np.nan, np.inf, -np.inf, big, 1e-7, -0.0]   # NaN dropped, slope · big overflows, tiny: subnormal
    y[:6] = [-1, -1, 1, -1, -1, -1]
    y[6] = np.nan   # NaN > 0 is false
    dy32, y32 = dy.astype(np.float32), y.astype(np.float32)
    for slope in (0.1, -3.0, 2.5):
        got = ops.leaky_relu_backward(dy, y, slope)
        with np.errstate(over="ignore"):
            want = leaky_relu_backward_xp(dy32, y32, slope).astype(dtype)
        exact_bits(f"leaky {slope}", got, want)
        t = torch.ops.aten.leaky_relu_backward(torch.from_numpy(dy.view(np.int16)).view(torch_dtype(torch, dtype)),
                                               torch.from_numpy(y.view(np.int16)).view(torch_dtype(torch, dtype)),
                                               slope, False)
        exact_bits(f"leaky {slope} vs torch", got, t.view(torch.int16).numpy().view(dtype))
    exact_bits("relu_backward", ops.relu_backward(dy, y), relu_backward_xp(dy32, y32).astype(dtype))
    mask = ops.relu_pack_mask(y)
    np.testing.assert_array_equal(mask, relu_pack_mask_xp(y32))
    exact_bits("relu_backward_mask", ops.relu_backward_mask(dy, mask), relu_backward_xp(dy32, y32).astype(dtype))
    out = dy.copy()
    assert ops.relu_backward(out, y, out=out) is out and out.dtype == dtype


def torch_dtype(torch, dtype):
    return torch.float16 if dtype == np.float16 else torch.bfloat16


def exact_bits(name, got, want):
    """Bit for bit, NaN by position (payloads may differ)."""
    got, want = gn.backend.to_numpy(got), gn.backend.to_numpy(want)
    assert got.dtype == want.dtype, f"{name}: {got.dtype} != {want.dtype}"
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan, err_msg=name)
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan], err_msg=name)


@pytest.mark.parametrize("n", [0, 1, 5, 31, 32, 33, 64, 95, 1000])
def test_mask_pack_unpack_round_trip(n):
    _, y = data(n, np.float32, seed=n)
    mask = ops.relu_pack_mask(y)
    assert mask.dtype == np.uint32 and mask.shape == (-(-n // 32),)
    np.testing.assert_array_equal(unpack_mask_xp(mask, (n,)), y > 0)
    for i in range(n):  # the documented bit layout, element by element
        assert bool((int(mask[i // 32]) >> (i % 32)) & 1) == bool(y[i] > 0)
    if n % 32:  # padding bits are zero
        assert int(mask[-1]) >> (n % 32) == 0
    dy = np.arange(n, dtype=np.float32) + 1
    np.testing.assert_array_equal(ops.relu_backward_mask(dy, mask), np.where(y > 0, dy, 0))


def test_out_and_in_place():
    dy, y = data(100, np.float32)
    want = np.where(y > 0, dy, 0)
    out = np.empty_like(dy)
    assert ops.relu_backward(dy, y, out=out) is out
    np.testing.assert_array_equal(out, want)
    d2 = dy.copy()
    assert ops.relu_backward(d2, y, out=d2) is d2
    np.testing.assert_array_equal(d2, want)
    y2 = y.copy()
    np.testing.assert_array_equal(ops.relu_backward(dy, y2, out=y2), want)  # out may even be y


def test_non_contiguous_inputs():
    dy, y = data(200, np.float64)
    dx = ops.relu_backward(dy.reshape(10, 20).T, y.reshape(10, 20).T)
    np.testing.assert_array_equal(dx, np.where(y > 0, dy, 0).reshape(10, 20).T)


@pytest.mark.parametrize("call,err,needle", [
    (lambda: ops.relu_backward(np.zeros(3, np.int32), np.zeros(3, np.int32)), gn.GpunetTypeError,
     "expected dy of dtype float32, float64, float16 or bfloat16, got int32"),
    (lambda: ops.relu_backward(np.zeros(3, np.float16), np.zeros(3, BFLOAT16)), gn.GpunetTypeError,
     r"expected y of dtype float16 \(the dtype of dy\), got bfloat16"),
    (lambda: ops.relu_backward(np.zeros(3), np.zeros(4)), gn.ShapeError, r"\(3,\).*got \(4,\)"),
    (lambda: ops.relu_backward(np.zeros(3), np.zeros(3, np.float32)), gn.GpunetTypeError, "float64"),
    (lambda: ops.relu_backward(np.zeros(3), np.zeros(3), out=np.zeros(4)), gn.ShapeError, "out"),
    (lambda: ops.relu_backward(np.zeros(4), np.zeros(4), out=np.zeros(8)[::2]), gn.GpunetValueError,
     "C-contiguous"),
    (lambda: ops.leaky_relu_backward(np.zeros(3), np.zeros(2), 0.1), gn.ShapeError, "x"),
    (lambda: ops.relu_backward_mask(np.zeros(40), np.zeros(1, np.uint32)), gn.ShapeError, r"\(2,\)"),
    (lambda: ops.relu_backward_mask(np.zeros(40), np.zeros(2, np.int32)), gn.GpunetTypeError, "uint32"),
    (lambda: ops.relu_pack_mask(np.zeros(3, np.int64)), gn.GpunetTypeError, "float32"),
])
def test_input_checks(call, err, needle):
    with pytest.raises(err, match=needle):
        call()


# ---------------------------------------------------------------- GPU: kernels vs twins

def _slices(dev, n, dtype, offsets):
    """Contiguous views at element offsets into larger buffers (misaligned data pointers)."""
    dy, y = data(n, dtype, seed=n)
    views = []
    for host, off in zip((dy, y, np.zeros(n, dtype)), offsets):
        buf = dev.xp.zeros(n + 4, dtype=dtype)
        v = buf[off:off + n]
        v[...] = dev.asarray(host)
        views.append(v)
    return views


OFFSETS = [(0, 0, 0), (1, 1, 1), (3, 3, 3), (1, 2, 3), (0, 1, 0)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64] + HALF, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("offsets", OFFSETS)
def test_relu_kernels_match_twins(n, dtype, offsets):
    """float32 / float64: the twins run on the device too; float16 / bfloat16: on the host
    (NumPy, ml_dtypes), the reference the emulator tests use."""
    dev = gn.device("cuda")
    dy, y, out = _slices(dev, n, dtype, offsets)
    half = np.dtype(dtype).itemsize == 2
    dy_r, y_r = (dy.get(), y.get()) if half else (dy, y)
    tag = f"n={n} {np.dtype(dtype).name} offsets={offsets}"
    same = exact_bits if half else exact
    same(f"relu_backward [{tag}]", ops.relu_backward(dy, y, out=out), relu_backward_xp(dy_r, y_r))
    same(f"leaky_relu_backward [{tag}]", ops.leaky_relu_backward(dy, y, 0.1),
         leaky_relu_backward_xp(dy_r, y_r, 0.1))
    mask = ops.relu_pack_mask(y)
    exact(f"relu_pack_mask [{tag}]", mask, relu_pack_mask_xp(y_r))
    same(f"relu_backward_mask [{tag}]", ops.relu_backward_mask(dy, mask, out=out),
         relu_backward_mask_xp(dy_r, mask.get() if half else mask))


@pytest.mark.gpu
def test_relu_kernel_in_place_and_shapes():
    dev = gn.device("cuda")
    dy, y = (dev.asarray(a.reshape(3, 37, 5)) for a in data(555, np.float32))
    want = relu_backward_xp(dy, y)
    assert ops.relu_backward(dy, y, out=dy) is dy
    exact("relu_backward in place", dy, want)
    exact("relu_backward non-contiguous", ops.relu_backward(y.transpose(2, 0, 1), y.transpose(2, 0, 1)),
          relu_backward_xp(y.transpose(2, 0, 1), y.transpose(2, 0, 1)))
