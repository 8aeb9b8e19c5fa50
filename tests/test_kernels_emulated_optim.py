"""kernels/fused_optim.cu, as shipped, through gpunet's real wrappers on the CUDA emulator
(tests/cuda_emu; what it can and cannot show: tests/test_kernels_emulated.py).

Every launch is compared with the NumPy twin bit for bit: the kernel performs the twin's
operations in the twin's order, and the emulator's host build does not contract a*b+c
(on a GPU, FMA contraction makes float64 differ from the twin by ~1 ulp per step). The
low-precision copy (fp16 and bf16 bits through a short* parameter) is compared with
NumPy's and ml_dtypes' round-to-nearest-even casts, special values included.

Cost: 28 tests, about 3 s on a shared 2-core machine under load 6, plus one emulator build of the .cu
(about 7 s, cached by content hash).
"""
import itertools

import numpy as np
import pytest

import cuda_emu
import gpunet as gn
from gpunet.ops import optim_step
from gpunet.ops.optim_step import adam_step, adam_step_xp, sgd_step, sgd_step_xp
from gpunet.optim import SGD, Adam, AdamW

pytestmark = pytest.mark.skipif(not cuda_emu.build.compiler_available() or not cuda_emu.build.host_supported(),
                                reason="the CUDA emulator needs g++ (or $CXX) on an x86-64 Linux host")
SIZES = [1, 7, 256, 257, 1100]


@pytest.fixture
def emu(monkeypatch):
    return cuda_emu.install(monkeypatch).emulator


@pytest.fixture
def dev(emu):
    return gn.device("cuda")


def put(dev, host, offset=0):
    """`host` on the device, `offset` elements into a buffer that ends with it (a guard page after)."""
    host = np.ascontiguousarray(host)
    buf = dev.xp.empty(host.size + offset, dtype=host.dtype)
    view = buf[offset:].reshape(host.shape)
    view[...] = host
    return view


def exact(tag, got, want):
    np.testing.assert_array_equal(gn.backend.to_numpy(got), want, err_msg=tag)


def data(n, dtype, seed, k=4):
    r = np.random.default_rng(seed)
    return [r.standard_normal(n).astype(dtype) for _ in range(k)]


SGD_FLAGS = [dict(momentum=0.0), dict(momentum=0.0, weight_decay=1e-2),
             dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
             dict(momentum=0.8, dampening=0.25, weight_decay=1e-2), dict(momentum=0.9, v_from_grad=True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_sgd_kernel_matches_twin(emu, dev, n, dtype):
    for k, kw in enumerate(SGD_FLAGS):
        w, g, v, _ = data(n, dtype, seed=n + k)
        mode = "end" if k % 2 == 0 else "start"
        with cuda_emu.allocation_mode(mode):
            wd, gd, vd = put(dev, w, k % 3), put(dev, g, 1), put(dev, v, 2 * (k % 2))
            vd = vd if kw["momentum"] else None
            sgd_step(wd, gd, vd, lr=0.05, **kw)
            assert emu.launches[-1][0] == f"sgd_step_{'f32' if dtype == np.float32 else 'f64'}"
        sgd_step_xp(w, g, v if kw["momentum"] else None, lr=0.05, **kw)
        tag = f"n={n} {np.dtype(dtype).name} {kw} {mode}"
        exact(f"w [{tag}]", wd, w)
        if vd is not None:
            exact(f"v [{tag}]", vd, v)
        exact(f"g untouched [{tag}]", gd, g)


ADAM_FLAGS = list(itertools.product([False, True], [0.0, 1e-2], [False, True]))   # decoupled, wd, amsgrad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_adam_kernel_matches_twin_over_three_steps(emu, dev, n, dtype):
    for k, (decoupled, wd, ams) in enumerate(ADAM_FLAGS):
        w, g, m, v = data(n, dtype, seed=7 * n + k)
        m, v = m * 0, np.abs(v) * 0.1
        vmax = v * 1.5 if ams else None
        host = [w, m, v] + ([vmax] if ams else [])
        devs = [put(dev, a, (k + j) % 3) for j, a in enumerate(host)]
        gd = put(dev, g)
        for t in (1, 2, 3):
            kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd, decoupled=decoupled, step=t)
            adam_step(devs[0], gd, devs[1], devs[2], devs[3] if ams else None, **kw)
            adam_step_xp(w, g, m, v, vmax, **kw)
        tag = f"n={n} {np.dtype(dtype).name} decoupled={decoupled} wd={wd} amsgrad={ams}"
        for name, got, want in zip(("w", "m", "v", "vmax"), devs, host):
            exact(f"{name} [{tag}]", got, want)


def _lowp_dtype(name):
    return np.dtype(np.float16) if name == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


def special_values():
    f16 = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 65519.99, 65520.0, 65536.0, 1e9, -1e9, np.inf, -np.inf,
                    6.1e-5, 6.0e-5, 5.96e-8, 2.98e-8, 2.9802322e-08, 2.9802326e-08, 4.47e-8, 1e-10, -3e-6,
                    1.0009765625, 1.00048828125, 1.00146484375, 3.0000001, 1.7e38, 3.4e38, 1e-45, -1e-40],
                   dtype=np.float32)
    ties = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x7F7FFFFF, 0x00800000], dtype=np.uint32).view(np.float32)
    r = np.random.default_rng(0)
    rand = (r.standard_normal(400) * np.logspace(-30, 30, 400)).astype(np.float32)
    return np.concatenate([f16, ties, rand, np.array([np.nan, -np.nan], np.float32)])


@pytest.mark.parametrize("lp", ["float16", "bfloat16"])
def test_low_precision_copy_rounds_as_numpy_and_ml_dtypes(emu, dev, lp):
    dt = _lowp_dtype(lp)
    w = special_values()
    g = np.ones_like(w)
    wd, gd = put(dev, w), put(dev, g)
    out = dev.xp.zeros(w.size, dtype=dt)
    with np.errstate(invalid="ignore"):
        sgd_step(wd, gd, None, lr=0.0, lowp=out)   # w − 0·g = w: the copy is cast(w)
    got = gn.backend.to_numpy(out)
    with np.errstate(over="ignore"):
        want = w.astype(dt)
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    bad = np.flatnonzero(got.view(np.uint16)[~nan] != want.view(np.uint16)[~nan])
    gb, wb = got.view(np.uint16)[~nan], want.view(np.uint16)[~nan]
    assert bad.size == 0, (f"{lp}: {bad.size} values round differently, first w={w[~nan][bad[0]]!r}: "
                           f"got 0x{gb[bad[0]]:04x}, want 0x{wb[bad[0]]:04x}")


@pytest.mark.parametrize("lp", ["float16", "bfloat16"])
def test_adam_with_low_precision_copy_matches_twin(emu, dev, lp):
    dt = _lowp_dtype(lp)
    w, g, m, v = data(1025, np.float32, seed=3)
    v = np.abs(v)
    devs = [put(dev, a, 1) for a in (w, g, m, v)]
    out, host_out = dev.xp.zeros(w.size, dtype=dt), np.zeros(w.size, dt)
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, decoupled=True, step=4)
    adam_step(devs[0], devs[1], devs[2], devs[3], None, lowp=out, **kw)
    adam_step_xp(w, g, m, v, None, lowp=host_out, **kw)
    exact("w", devs[0], w)
    exact("lowp bits", out.view(np.uint16), host_out.view(np.uint16))


def test_forced_multi_block_grid_stride(emu, dev, monkeypatch):
    monkeypatch.setattr(optim_step, "MAX_BLOCKS", 2)
    w, g, v, _ = data(5 * 512 + 3, np.float64, seed=5)
    wd, gd, vd = put(dev, w), put(dev, g), put(dev, v)
    sgd_step(wd, gd, vd, lr=0.1, momentum=0.9, nesterov=True)
    assert emu.launches[-1][1] == (2, 1, 1)
    sgd_step_xp(w, g, v, lr=0.1, momentum=0.9, nesterov=True)
    exact("w", wd, w)
    exact("v", vd, v)


@pytest.mark.parametrize("cls,kw", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
                                    (AdamW, dict(lr=1e-2, amsgrad=True)), (Adam, dict(lr=1e-2, weight_decay=0.01))])
def test_fused_optimizer_on_the_emulated_gpu_launches_one_kernel_per_group(emu, dev, cls, kw):
    """A model on the (emulated) GPU with fused=True against the per-parameter optimizer on the
    CPU in float64: equal to 1e-12 (bitwise, as the emulator does not contract FMAs)."""
    def build():
        gn.manual_seed(0)
        return gn.nn.Sequential(gn.nn.Linear(6, 9), gn.nn.ReLU(), gn.nn.Linear(9, 4)).to(dtype="float64")
    cpu, gpu = build(), build().to(dev)
    groups = lambda m: [{"params": m.parameters()[:2]}, {"params": m.parameters()[2:], "lr": 0.02}]  # noqa: E731
    ocpu, ogpu = cls(groups(cpu), **kw), cls(groups(gpu), fused=True, **kw)
    r = np.random.default_rng(1)
    for t in range(4):
        x, y = r.standard_normal((5, 6)), r.integers(0, 4, 5)
        for m, o, d in ((cpu, ocpu, gn.device("cpu")), (gpu, ogpu, dev)):
            loss = gn.losses.SoftmaxCrossEntropy()
            loss.forward(m(d.asarray(x)), d.asarray(y))
            m.backward(loss.backward())
            before = len(emu.launches)
            o.step()
            o.zero_grad()
        steps = [name for name, *_ in emu.launches[before:]]
        assert steps == [f"{cls.__name__.lower().rstrip('w')}_step_f64"] * 2, steps
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        np.testing.assert_allclose(gn.backend.to_numpy(q.data), p.data, rtol=1e-12, atol=0)
    flat = ogpu.flat_parameters()
    assert gn.backend.is_cupy_array(flat.groups[0].data) and flat.intact()
