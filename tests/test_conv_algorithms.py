"""Conv2d's algorithms against each other and PyTorch: the frequency-domain path ("dft") must
give im2col's results (float64: 1e-12 relative, float32: 1e-5) for every option it accepts,
the gradients must match central differences, the automatic choice must follow the rule in
gpunet/nn/conv.py's docstring, and inapplicable or unknown choices are refused."""

import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import GpunetValueError
from gpunet.testing import gradcheck_module

nn = gn.nn

DFT_CASES = [  # (in, out, kwargs, input shape)
    (3, 4, dict(kernel_size=5, padding=2), (2, 3, 7, 6)),                            # the CIFAR shape
    (2, 3, dict(kernel_size=3, padding=1, bias=False), (1, 2, 5, 5)),                # N = 1, no bias
    (2, 3, dict(kernel_size=(2, 4), padding="same"), (2, 2, 4, 5)),                  # even kernel: asymmetric
    (2, 2, dict(kernel_size=3), (3, 2, 3, 3)),                                       # 1×1 output
    (2, 2, dict(kernel_size=3, padding=4), (1, 2, 2, 2)),                            # padding beyond the input
    (1, 1, dict(kernel_size=(1, 3), padding=(0, 1)), (2, 1, 1, 7)),                  # a row, O = 1
    (2, 2, dict(kernel_size=3, padding=(2, 1), padding_mode="reflect"), (2, 2, 3, 4)),
    (2, 3, dict(kernel_size=(3, 4), padding="same", padding_mode="circular"), (1, 2, 4, 5)),
    (2, 2, dict(kernel_size=3, padding=1, padding_mode="replicate"), (2, 2, 6, 3)),
    (5, 7, dict(kernel_size=(5, 3), padding=(1, 2)), (3, 5, 9, 8)),                  # odd sizes
]


def _pair(cin, cout, kwargs, dtype, training=True):
    a = nn.Conv2d(cin, cout, **kwargs, algorithm="im2col", bias_init="normal").to(dtype=dtype)
    b = nn.Conv2d(cin, cout, **kwargs, algorithm="dft").to(dtype=dtype)
    b.load_state_dict(a.state_dict())
    return a.train(training), b.train(training)


def _step(layer, x, dy, need_input_grad=True):
    y = layer(x).copy()
    dx = layer.backward(dy, need_input_grad=need_input_grad)
    return [y, dx] + [p.grad.copy() for _, p in layer.named_parameters()]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("cin,cout,kwargs,shape", DFT_CASES, ids=[str(i) for i in range(len(DFT_CASES))])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dft_matches_im2col(cin, cout, kwargs, shape, dtype, rtol, training):
    a, b = _pair(cin, cout, kwargs, dtype, training)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(a(x).shape).astype(dtype)
    for step in range(2):  # the second step reuses the layer's buffers and accumulates the grads
        ref, got = _step(a, x, dy), _step(b, x, dy)
        for what, r, g in zip(["y", "dx", "dW", "db"], ref, got):
            assert g.dtype == r.dtype and g.shape == r.shape, what
            np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * np.abs(r).max(), err_msg=f"{what} step {step}")


def test_dft_without_input_grad_and_conv1d():
    a, b = _pair(4, 6, dict(kernel_size=5, padding=2), "float64")
    x = np.random.default_rng(1).standard_normal((3, 4, 8, 8))
    dy = np.random.default_rng(2).standard_normal((3, 6, 8, 8))
    ref, got = _step(a, x, dy, need_input_grad=False), _step(b, x, dy, need_input_grad=False)
    assert ref[1] is None and got[1] is None
    for r, g in zip(ref[2:], got[2:]):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())
    c1, c2 = nn.Conv1d(3, 4, 5, padding="same", algorithm="im2col"), nn.Conv1d(3, 4, 5, padding="same", algorithm="dft")
    c2.load_state_dict(c1.state_dict())
    x = np.random.default_rng(3).standard_normal((2, 3, 11)).astype("float32")
    dy = np.random.default_rng(4).standard_normal((2, 4, 11)).astype("float32")
    for r, g in zip(_step(c1, x, dy), _step(c2, x, dy)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())


def test_dft_output_and_dx_are_fresh_arrays():
    """The frequency path works in reused buffers; what it returns must never be one of them."""
    layer = nn.Conv2d(2, 3, 3, padding=1, algorithm="dft")
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype("float32")
    y1 = layer(x)
    dx1 = layer.backward(np.ones_like(y1))
    keep_y, keep_dx = y1.copy(), dx1.copy()
    y2 = layer(2 * x)
    layer.backward(2 * np.ones_like(y2))
    np.testing.assert_array_equal(y1, keep_y)
    np.testing.assert_array_equal(dx1, keep_dx)


@pytest.mark.parametrize("kwargs,shape", [
    (dict(kernel_size=3, padding=1, bias_init="normal"), (2, 2, 4, 5)),
    (dict(kernel_size=(2, 3), padding="same", padding_mode="reflect"), (1, 2, 4, 4)),
])
def test_dft_gradcheck(kwargs, shape):
    layer = nn.Conv2d(2, 3, **kwargs, algorithm="dft").to(dtype="float64")
    x = np.random.default_rng(0).standard_normal(shape)
    assert set(gradcheck_module(layer, x)) == {"x"} | {n for n, _ in layer.named_parameters()}


def _against_torch(layer, tlayer, x):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[test]' brings it")
    with torch.no_grad():
        tlayer.weight.copy_(torch.from_numpy(layer.weight.data))
        tlayer.bias.copy_(torch.from_numpy(layer.bias.data))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    y, ty = layer(x), tlayer(tx)
    dy = np.random.default_rng(5).standard_normal(y.shape)
    dx = layer.backward(dy)
    ty.backward(torch.from_numpy(dy))
    for what, ours, ref in [("y", y, ty.detach().numpy()), ("dx", dx, tx.grad.numpy()),
                            ("dW", layer.weight.grad, tlayer.weight.grad.numpy()),
                            ("db", layer.bias.grad, tlayer.bias.grad.numpy())]:
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max(), err_msg=what)


def test_dft_matches_torch_float64():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[test]' brings it")
    layer = nn.Conv2d(6, 5, 5, padding=2, algorithm="dft", bias_init="normal").to(dtype="float64")
    _against_torch(layer, torch.nn.Conv2d(6, 5, 5, padding=2).double(),
                   np.random.default_rng(0).standard_normal((3, 6, 9, 7)))


@pytest.mark.parametrize("make,shape,expected", [
    (lambda: nn.Conv2d(64, 64, 5, padding=2), (2, 64, 12, 12), "dft"),              # CIFAR CNN's second conv
    (lambda: nn.Conv2d(32, 64, 3, padding=1), (2, 32, 14, 14), "dft"),              # small_cnn's second conv
    (lambda: nn.Conv2d(32, 64, 3, padding=1).to(dtype="float64"), (2, 32, 14, 14), "dft"),
    (lambda: nn.Conv2d(3, 64, 5, padding=2), (2, 3, 24, 24), "im2col"),              # few input channels
    (lambda: nn.Conv2d(64, 64, 3, stride=2, padding=1), (2, 64, 12, 12), "im2col"),  # strided
    (lambda: nn.Conv2d(64, 64, 3, dilation=2, padding=2), (2, 64, 12, 12), "im2col"),
    (lambda: nn.Conv2d(64, 64, 3, groups=2, padding=1), (2, 64, 12, 12), "im2col"),
    (lambda: nn.Conv2d(64, 64, 1), (2, 64, 12, 12), "im2col"),                       # 1×1
    (lambda: nn.Conv2d(64, 64, 3, padding=1), (2, 64, 3, 3), "im2col"),              # tiny image: little to save
    (lambda: nn.Conv2d(16, 32, 3, padding=1), (2, 16, 64, 64), "im2col"),            # large DFT, few channels
    (lambda: nn.Conv2d(16, 16, 3, padding=1), (2, 16, 32, 32), "dft"),               # P = 33 <= 3·16
    (lambda: nn.Conv2d(64, 64, 5, padding=2, algorithm="im2col"), (2, 64, 12, 12), "im2col"),
    (lambda: nn.Conv2d(3, 4, 3, algorithm="dft"), (2, 3, 6, 6), "dft"),
])
def test_automatic_choice(make, shape, expected):
    layer = make()
    assert layer.algorithm_for(shape) == expected
    layer.forward(np.zeros(shape, dtype=layer.weight.dtype))
    assert isinstance(layer._cache[0], tuple) == (expected == "dft")  # what forward ran


def test_algorithm_refusals():
    with pytest.raises(GpunetValueError, match=r"algorithm expected one of \('auto', 'im2col', 'dft'\), got 'fft'"):
        nn.Conv2d(2, 2, 3, algorithm="fft")
    with pytest.raises(GpunetValueError, match=r"algorithm='dft' expected stride 1.*got stride=\(2, 2\)"):
        nn.Conv2d(2, 2, 3, stride=2, algorithm="dft")
    with pytest.raises(GpunetValueError, match=r"dilation=\(2, 2\)"):
        nn.Conv2d(2, 2, 3, dilation=2, algorithm="dft")
    with pytest.raises(GpunetValueError, match=r"groups=2"):
        nn.Conv1d(2, 2, 3, groups=2, algorithm="dft")
    layer = nn.Conv2d(2, 2, 3, stride=2)
    with pytest.raises(GpunetValueError, match=r"algorithm='dft' expected stride 1"):
        layer.algorithm = "dft"
    with pytest.raises(GpunetValueError, match=r"got None"):
        layer.algorithm = None
    assert layer.algorithm == "auto"  # unchanged by the refused assignments


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def workers(request, monkeypatch):
    """gpunet's thread count for the test (chunked paths and every GEMM split at 2), restored afterwards."""
    from threadpoolctl import threadpool_limits
    from gpunet import threads
    saved = threads._workers, threads._split
    monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(threads, "_blas_awake_until", 0.0)   # no BLAS threads awake: split
    monkeypatch.setattr(threads, "SPIN_S", 0.0)
    with threadpool_limits(limits=None):
        gn.set_threads(request.param)
        yield request.param
        threads._workers, threads._split = saved


PER_IMAGE_CASES = [  # (in, out, kwargs, input shape)
    (1, 4, dict(kernel_size=3, padding=1, bias=False), (5, 1, 6, 7)),                 # small_cnn's first conv
    (3, 4, dict(kernel_size=5, padding=2), (3, 3, 7, 6)),                             # the CIFAR CNN's first
    (4, 6, dict(kernel_size=3, stride=2, padding=1, groups=2), (4, 4, 9, 8)),
    (2, 1, dict(kernel_size=(2, 3), padding="same", padding_mode="reflect", dilation=(2, 1)), (1, 2, 7, 6)),
]


@pytest.mark.parametrize("cin,cout,kwargs,shape", PER_IMAGE_CASES, ids=[str(i) for i in range(len(PER_IMAGE_CASES))])
@pytest.mark.parametrize("need_input_grad", [True, False])
def test_im2col_per_image_matches_one_gemm(monkeypatch, workers, cin, cout, kwargs, shape, need_input_grad):
    """im2col's per-image GEMMs (chunked over threads) give the one-GEMM results, training and eval."""
    from gpunet.nn import conv
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    for training in (True, False):
        results = []
        for threshold in (10 ** 9, 1):          # one GEMM, then per image
            monkeypatch.setattr(conv, "PER_IMAGE_MIN_PIXELS", threshold)
            layer = nn.Conv2d(cin, cout, **kwargs, algorithm="im2col", bias_init="normal").to(dtype="float64")
            layer.weight.data[...] = rng.standard_normal(layer.weight.shape) if not results else results[0][-1]
            if layer.bias is not None:
                layer.bias.data[...] = 0.5
            layer.train(training)
            dy = np.random.default_rng(1).standard_normal(layer(x).shape)
            got = _step(layer, x, dy, need_input_grad) + _step(layer, x, dy, need_input_grad)
            results.append(got + [layer.weight.data.copy()])
        for r, g in zip(*results):
            if r is None:
                assert g is None
            else:
                np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())


def test_dft_chunked_transposes_match(workers):
    """Enough images for the blocked transposes to split over threads (B = N·C > 512)."""
    a, b = _pair(17, 16, dict(kernel_size=3, padding=1), "float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 17, 5, 6))
    dy = rng.standard_normal((37, 16, 5, 6))
    for r, g in zip(_step(a, x, dy), _step(b, x, dy)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())


@pytest.mark.parametrize("algorithm", ["im2col", "dft"])
def test_chunked_paths_match_torch(workers, algorithm):
    """im2col and col2im over batch chunks (strided, grouped), the dft path's chunked transposes."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[test]' brings it")
    kw = dict(stride=2, groups=2) if algorithm == "im2col" else {}
    layer = nn.Conv2d(4, 6, 3, padding=1, algorithm=algorithm, bias_init="normal", **kw).to(dtype="float64")
    _against_torch(layer, torch.nn.Conv2d(4, 6, 3, padding=1, **kw).double(),
                   np.random.default_rng(0).standard_normal((7, 4, 9, 8)))


def test_bench_conv_script_writes_its_json(tmp_path, monkeypatch, capsys):
    """scripts/bench_conv.py on tiny layers: every variant timed per layer and thread count."""
    import importlib.util
    import json
    from pathlib import Path
    from threadpoolctl import threadpool_limits
    from gpunet import threads
    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_conv.py"
    spec = importlib.util.spec_from_file_location("bench_conv", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "LAYERS", {"tiny.first": (2, 1, 3, 6, 3, 1, False, False),
                                          "tiny.second": (2, 16, 16, 6, 3, 1, True, True)})
    out = tmp_path / "conv.json"
    saved = threads._workers
    with threadpool_limits(limits=None):
        assert bench.main(["--threads", "1,2", "--repeats", "1", "--no-torch", "--json-out", str(out)]) == 0
        threads._workers = saved
    report = json.loads(out.read_text())
    assert [(r["layer"], r["threads"]) for r in report["results"]] == [
        ("tiny.first", 1), ("tiny.second", 1), ("tiny.first", 2), ("tiny.second", 2)]
    for row in report["results"]:
        for v in ("auto", "im2col"):
            assert row[v]["forward_ms"] > 0 and row[v]["backward_ms"] > 0
        assert len(row["load_before"]) in (0, 3)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.gpu
def test_gpu_runs_im2col_and_refuses_dft():
    """On CuPy "auto" keeps the GPU path (im2col + GEMM); a forced "dft" is refused, naming the device."""
    from gpunet.errors import DeviceError
    dev = gn.device("cuda")
    layer = nn.Conv2d(64, 64, 5, padding=2).to(dev)
    assert layer.algorithm_for((2, 64, 12, 12)) == "im2col"
    layer.algorithm = "dft"
    with pytest.raises(DeviceError, match=r"algorithm='dft' runs on the CPU \(NumPy\) only"):
        layer(dev.asarray(np.zeros((2, 64, 12, 12), dtype="float32")))


def test_reduced_precision_keeps_the_one_gemm_path():
    """A compute precision set on the layer (mixed precision) is emulated by im2col's one GEMM:
    auto picks it, per-image GEMMs stay off, and a forced "dft" is refused."""
    layer = nn.Conv2d(64, 64, 5, padding=2)
    assert layer.algorithm_for((2, 64, 12, 12)) == "dft" and layer._per_image(np, 16, 16)
    object.__setattr__(layer, "precision", "bf16")
    assert layer.algorithm_for((2, 64, 12, 12)) == "im2col" and not layer._per_image(np, 16, 16)
    layer.algorithm = "dft"
    with pytest.raises(GpunetValueError, match=r"algorithm='dft' computes in the weights' dtype, got precision='bf16'"):
        layer.algorithm_for((2, 64, 12, 12))
