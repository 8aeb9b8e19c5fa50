"""Every benchmark shows progress: a line per case or round on stderr ("bench NAME: i/n: what
..."), while stdout keeps the table. Tiny settings; no speed is asserted. About 3 s."""
from __future__ import annotations

import re

import numpy as np

import gpunet as gn
from gpunet.cli import bench as cli_bench


def _lines(capsys, name):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"bench {name}: ")]
    assert all(re.fullmatch(rf"bench {name}: \d+/\d+: .+ \.\.\.", ln) for ln in lines), err
    return lines


def _mnist_like(n=256):
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28), dtype=np.float32)
    return gn.data.Dataset(x, rng.integers(0, 10, n), [str(i) for i in range(10)])


def test_loader_and_parallel_print_a_line_per_case_and_round(monkeypatch, capsys):
    fake = _mnist_like()
    monkeypatch.setattr(gn.data, "load", lambda *a, **k: fake)
    loader = cli_bench.load("loader")
    monkeypatch.setattr(loader, "BATCH_SIZES", [32, 64])
    assert loader.main(["--device", "cpu", "--repeats", "1"]) in (0, None)
    assert _lines(capsys, "loader") == ["bench loader: 1/2: batch size 32 ...", "bench loader: 2/2: batch size 64 ..."]
    parallel = cli_bench.load("parallel")
    assert parallel.main(["--device", "cpu", "--repeats", "2", "--replicas", "2", "--samples", "128"]) in (0, None)
    assert _lines(capsys, "parallel") == ["bench parallel: 1/3: warm-up round ...", "bench parallel: 2/3: round 1 ...",
                                          "bench parallel: 3/3: round 2 ..."]


def test_doctor_and_host_overhead_print_a_line_per_round_and_call(monkeypatch, tmp_path, capsys):
    digits = gn.data.load("digits")
    monkeypatch.setattr(gn.data, "load", lambda *a, **k: digits.subset(range(256)))
    assert cli_bench.load("doctor").main(["--dataset", "digits", "--repeats", "2"]) == 0
    assert _lines(capsys, "doctor") == ["bench doctor: 0/2: warm-up epoch ...",
                                        "bench doctor: 1/2: an epoch without and one with the doctor ...",
                                        "bench doctor: 2/2: an epoch without and one with the doctor ..."]
    cli_bench.load("host_overhead").main(["--calls", "8", "--repeats", "1"])
    lines = _lines(capsys, "host_overhead")
    assert [ln.split(": ")[1] for ln in lines] == ["1/3", "2/3", "3/3"] and "relu_backward" in lines[2]


def test_kernels_prints_a_line_per_case(monkeypatch, capsys):
    kernels = cli_bench.load("kernels")

    class Dev:  # the device and the timed cases are stand-ins: only the loop is exercised
        index, xp = 0, np

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(kernels, "resolve_device", lambda spec: Dev())
    monkeypatch.setattr(kernels, "timer", lambda xp, repeats: None)
    monkeypatch.setattr(kernels, "load_torch", lambda: None)
    monkeypatch.setattr(kernels, "print_tables", lambda results: None)
    status = type("S", (), {"devices": [{"name": "stand-in", "compute_capability": "0.0"}]})()
    monkeypatch.setattr(gn, "gpu_status", lambda: status)
    monkeypatch.setattr(kernels, "bench_ce", lambda dev, t, torch, n, c: {"check_ok": True})
    monkeypatch.setattr(kernels, "bench_relu", lambda dev, t, torch, n: {"check_ok": True})
    assert kernels.main(["--quick", "--repeats", "20"]) == 0
    lines = _lines(capsys, "kernels")
    ce, relu = kernels.CE_SHAPES[:4], kernels.RELU_SIZES[:2]
    n = len(ce) + len(relu)
    want = [f"bench kernels: {i + 1}/{n}: softmax_cross_entropy N={a} C={b} ..." for i, (a, b) in enumerate(ce)]
    want += [f"bench kernels: {len(ce) + i + 1}/{n}: relu n={s} ..." for i, s in enumerate(relu)]
    assert lines == want
