"""The emulator's half and bfloat16 (tests/cuda_emu/cuda_shim.h, reached through
`#include <cuda_fp16.h>` / `<cuda_bf16.h>` in a kernel) round bit for bit as the GPU does:
against NumPy's float16 and ml_dtypes' bfloat16 (round to nearest even), over every 16-bit
pattern, every tie between neighbours and its two float32 neighbours, and random float32
bits. NaN becomes CUDA's canonical 0x7fff (NumPy keeps sign and payload): compared by isnan.

Cost: 5 tests, under 1 s plus one emulator build (about 3 s, cached).
"""
import numpy as np
import pytest

import cuda_emu
import gpunet as gn

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (pip install ml_dtypes)")
BF16 = np.dtype(ml_dtypes.bfloat16)
pytestmark = pytest.mark.skipif(not cuda_emu.build.compiler_available() or not cuda_emu.build.host_supported(),
                                reason="the CUDA emulator needs g++ (or $CXX) on an x86-64 Linux host")

SRC = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void convert(const float* x, __half* h, __half* hz, __nv_bfloat16* b, __nv_bfloat16* bz,
                                   float* hf, float* bf, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        h[i] = __float2half_rn(x[i]);
        hz[i] = __float2half_rz(x[i]);
        b[i] = __float2bfloat16_rn(x[i]);
        bz[i] = __float2bfloat16_rz(x[i]);
        hf[i] = __half2float(__ushort_as_half(__half_as_ushort(h[i])));
        bf[i] = __bfloat162float(b[i]);
    }
}
extern "C" __global__ void convert_double(const double* x, __half* h, __nv_bfloat16* b, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        h[i] = __double2half(x[i]);
        b[i] = x[i];   // the constructor from double rounds once too
    }
}
extern "C" __global__ void scalars(__half a, __nv_bfloat16 b, float* out) {
    out[0] = __half2float(a);
    out[1] = __bfloat162float(b);
}
extern "C" __global__ void arith(const __half* a, const __nv_bfloat16* b, __half* h, __nv_bfloat16* c,
                                 float* f, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const __half2 p = __floats2half2_rn(__low2float(__halves2half2(a[i], a[i])), 0.5f);
        h[i] = __hmul(p.x, __float2half(3.0f)) + __half(1.0f);
        c[i] = __hmul(b[i], b[i]);
        f[i] = (float)a[i] + __bfloat162float(b[i]) + (__hisnan(a[i]) ? 1000.0f : 0.0f);
    }
}
"""


@pytest.fixture
def mod(monkeypatch):
    cuda_emu.install(monkeypatch)
    dev = gn.device("cuda")
    return dev, dev.xp.RawModule(code=SRC, options=("-std=c++17",))


def float_cases(rng):
    """Every half and bf16 pattern as float32, the ties between neighbours, one float32 ulp
    either side of each tie, random float32 bit patterns, and specials."""
    u16 = np.arange(1 << 16, dtype=np.uint32)
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    h_ties = (halves[:-1].astype(np.uint64) + halves[1:]) // 2   # neighbouring positive magnitudes
    bf = u16 << 16
    bf_ties = bf | 0x8000
    ties = np.concatenate([h_ties.astype(np.uint32), bf_ties]).astype(np.uint32)
    near = np.concatenate([ties - 1, ties + 1])
    rand = rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f7fffff, 0x00000001, 0x80000001,
                        0x477fefff, 0x477ff000, 0x477ff001, 0x33000000, 0x33000001, 0x387fc000], np.uint32)
    bits = np.concatenate([halves, halves | 0x80000000, bf, ties, ties | 0x80000000, near, rand, special])
    return bits.view(np.float32)


def rz_bits(x, rn, dtype):
    """Round toward zero from round-to-nearest: one step toward zero where |rn| > |x|."""
    mag = rn.view(np.uint16) & 0x7FFF
    with np.errstate(invalid="ignore"):   # NaN compares False: those are checked apart
        over = np.abs(rn.astype(np.float64)) > np.abs(x.astype(np.float64))
    out = rn.view(np.uint16).copy()
    out[over] = (rn.view(np.uint16)[over] & 0x8000) | (mag[over] - 1)
    return out


def same16(tag, got, want):
    g, w = got.view(np.uint16), np.asarray(want).view(np.uint16)
    nan_w = (w & 0x7FFF) > {np.dtype(np.float16): 0x7C00, BF16: 0x7F80}[want.dtype]
    assert (g[nan_w] == 0x7FFF).all(), f"{tag}: NaN is not CUDA's canonical 0x7fff"
    bad = np.flatnonzero(g[~nan_w] != w[~nan_w])
    assert bad.size == 0, f"{tag}: {bad.size} mismatches, first input {got.size and bad[:3]}"


def test_float_to_half_and_bf16_round_as_cuda(mod):
    dev, m = mod
    x = float_cases(np.random.default_rng(0))
    n = x.size
    xd = dev.asarray(x)
    outs = [dev.xp.empty(n, dt) for dt in (np.float16, np.float16, BF16, BF16, np.float32, np.float32)]
    m.get_function("convert")((8,), (256,), (xd, *outs, np.int64(n)))
    h, hz, b, bz, hf, bf = (o.get() for o in outs)
    with np.errstate(over="ignore", invalid="ignore"):
        want_h, want_b = x.astype(np.float16), x.astype(BF16)
    same16("__float2half_rn", h, want_h)
    same16("__float2bfloat16_rn", b, want_b)
    fin = ~np.isnan(x)
    np.testing.assert_array_equal(hz.view(np.uint16)[fin], rz_bits(x, want_h, np.float16)[fin], "__float2half_rz")
    np.testing.assert_array_equal(bz.view(np.uint16)[fin], rz_bits(x, want_b, BF16)[fin], "__float2bfloat16_rz")
    # back to float: exact (checked on non-NaN values; NaN stays NaN)
    np.testing.assert_array_equal(hf.view(np.uint32)[fin], want_h.astype(np.float32).view(np.uint32)[fin])
    np.testing.assert_array_equal(bf.view(np.uint32)[fin], want_b.astype(np.float32).view(np.uint32)[fin])
    assert np.isnan(hf[~fin]).all() and np.isnan(bf[~fin]).all()


def test_every_16_bit_pattern_converts_back_exactly(mod):
    dev, m = mod
    pats = np.arange(1 << 16, dtype=np.uint16)
    x = np.zeros(1 << 16, np.float32)
    a = dev.asarray(pats.view(np.float16))
    b = dev.asarray(pats.view(BF16))
    h, c, f = dev.xp.empty(x.size, np.float16), dev.xp.empty(x.size, BF16), dev.xp.empty(x.size, np.float32)
    m.get_function("arith")((8,), (256,), (a, b, h, c, f, np.int64(x.size)))
    fa, fb = pats.view(np.float16).astype(np.float32), pats.view(BF16).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want_f = fa + fb + np.where(np.isnan(fa), np.float32(1000), np.float32(0))
        want_h = (fa.astype(np.float16) * np.float16(3)).astype(np.float32) + np.float32(1)   # product exact in float
        want_h = want_h.astype(np.float16)
        want_c = (fb * fb).astype(BF16)
    np.testing.assert_array_equal(f.get(), want_f)
    same16("__hmul + 1", h.get(), want_h)
    same16("__hmul bf16", c.get(), want_c)


def test_double_rounds_once(mod):
    """A double just off a tie between two halves (or bf16s) rounds away from the tie: going
    through float first would land on the tie and round to even."""
    dev, m = mod
    rng = np.random.default_rng(1)
    hv = rng.integers(0x0400, 0x7BFF, 20_000).astype(np.uint16).view(np.float16).astype(np.float64)
    ulp_h = np.spacing(hv.astype(np.float16)).astype(np.float64)
    bv = rng.integers(0x0080, 0x7F7F, 20_000).astype(np.uint16).view(BF16).astype(np.float64)
    ulp_b = 2.0 ** (np.floor(np.log2(bv)) - 7)
    sign = rng.choice([-1e-9, 1e-9], 20_000)
    xh = hv + ulp_h * (0.5 + sign)
    xb = bv + ulp_b * (0.5 + sign)
    x = np.concatenate([xh, xb, [1e300, -1e300, np.inf, 2.0 ** -30]])
    h, b = dev.xp.empty(x.size, np.float16), dev.xp.empty(x.size, BF16)
    m.get_function("convert_double")((4,), (256,), (dev.asarray(x), h, b, np.int64(x.size)))
    with np.errstate(over="ignore"):
        same16("__double2half", h.get(), x.astype(np.float16))   # NumPy rounds double -> half once
    # bf16 reference: exact arithmetic on the double (x / ulp is exact, rint rounds to even)
    ulp = 2.0 ** (np.floor(np.log2(np.abs(xb))) - 7)
    want_b = (np.rint(xb / ulp) * ulp).astype(BF16)   # exactly representable: no further rounding
    same16("double -> bf16", b.get()[20_000:40_000], want_b)
    assert b.get()[40_000:40_003].view(np.uint16).tolist() == [0x7F80, 0xFF80, 0x7F80]


def test_wrong_dtype_for_a_half_pointer_is_refused(mod):
    dev, m = mod
    x = dev.asarray(np.zeros(4, np.float32))
    f32 = dev.xp.empty(4, np.float32)
    with pytest.raises(cuda_emu.EmulatorError, match=r"argument 1 \(__half\*\): expected a float16 array, got float32"):
        m.get_function("convert")((1,), (32,), (x, f32, f32, f32, f32, f32, f32, np.int64(4)))
    h = dev.xp.empty(4, np.float16)
    with pytest.raises(cuda_emu.EmulatorError, match=r"argument 3 \(__nv_bfloat16\*\): expected a bfloat16 array"):
        m.get_function("convert")((1,), (32,), (x, h, h, h, h, f32, f32, np.int64(4)))


def test_16_bit_scalar_parameters(mod):
    """A __half / __nv_bfloat16 parameter takes a float16 / bfloat16 NumPy scalar (its bits), as
    CuPy passes them; a float32 value is refused (the kernel would read the wrong bytes)."""
    dev, m = mod
    out = dev.xp.zeros(2, np.float32)
    fn = m.get_function("scalars")
    fn((1,), (1,), (np.float16(-1.5), BF16.type(3.25), out))
    np.testing.assert_array_equal(out.get(), [-1.5, 3.25])
    with pytest.raises(cuda_emu.EmulatorError, match=r"argument 0 \(__half\): expected a float16 value, got float32"):
        fn((1,), (1,), (np.float32(1), BF16.type(1), out))
    with pytest.raises(cuda_emu.EmulatorError, match=r"argument 1 \(__nv_bfloat16\): expected a bfloat16 value"):
        fn((1,), (1,), (np.float16(1), np.float16(1), out))
