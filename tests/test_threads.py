"""BLAS threads: gpunet sets the count on purpose (--threads, gn.set_threads) and reports it."""
from __future__ import annotations

import json

import pytest
from threadpoolctl import threadpool_limits

import gpunet as gn
from gpunet import threads
from gpunet.cli import info as info_cli
from gpunet.cli import main


@pytest.fixture
def restore_blas():
    with threadpool_limits(limits=None):  # leaves the count as found when the test ends
        yield


def test_set_threads_sets_the_blas_count(restore_blas):
    # 2 threads: two gpunet workers, BLAS at one thread per call (its GEMMs split over the workers)
    assert gn.set_threads(2) == 2 and threads.blas_info()["threads"] == 1 and threads.workers() == 2
    assert gn.set_threads(1) == 1 and threads.blas_info()["threads"] == 1
    assert gn.set_threads(0) == threads.AUTO_THREADS == threads.blas_info()["threads"]
    assert "blas" in threads.blas_info()["library"].lower() or threads.blas_info()["library"]


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_thread_counts_are_refused(bad, restore_blas):
    with pytest.raises(gn.GpunetValueError, match="threads: threads expected a non-negative int"):
        gn.set_threads(bad)


def test_info_reports_blas_threads(restore_blas, capsys):
    gn.set_threads(1)
    info = info_cli.collect()
    assert info["blas"]["threads"] == 1 and info["train_threads"] == threads.AUTO_THREADS
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["blas"]["threads"] == 1


@pytest.mark.parametrize("flag, used", [([], threads.AUTO_THREADS), (["--threads", "2"], 2)])
def test_train_applies_and_records_threads(tmp_path, flag, used, restore_blas):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-doctor", *flag]) == 0
    cfg = json.loads((tmp_path / "digits-mlp" / "config.json").read_text())
    assert cfg["threads"] == used and threads.workers() == used and threads.blas_info()["threads"] == 1


def test_chunk_bounds_cover_the_range_evenly():
    from gpunet.threads import chunk_bounds
    assert chunk_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert chunk_bounds(2, 5) == [(0, 1), (1, 2)]
    assert chunk_bounds(7, 1) == [(0, 7)]


def test_parallel_chunks_runs_every_chunk_in_order_and_raises_a_chunk_error():
    import numpy as np
    from gpunet import threads
    x = np.arange(1000.0)
    out = np.zeros_like(x)

    def square(lo, hi):
        out[lo:hi] = x[lo:hi] ** 2
        return lo, hi

    assert threads.parallel_chunks(square, 1000, parts=3) == [(0, 334), (334, 667), (667, 1000)]
    np.testing.assert_array_equal(out, x ** 2)
    assert threads.parallel_chunks(square, 1000, min_chunk=600, parts=3) == [(0, 1000)]

    def fail(lo, hi):
        if lo > 0:
            raise ValueError(f"chunk {lo}")
        return lo

    with pytest.raises(ValueError, match="chunk"):
        threads.parallel_chunks(fail, 10, parts=2)


def test_workers_follows_set_threads():
    from gpunet import threads
    try:
        assert threads.set_threads(2) == 2 and threads.workers() == 2
        assert threads.set_threads(0) == threads.AUTO_THREADS == threads.workers()
    finally:
        threads.set_threads(0)


@pytest.fixture
def split_two(monkeypatch, restore_blas):
    """set_threads(2) with every GEMM split (no size floor); back to one thread afterwards."""
    monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(threads, "_blas_awake_until", 0.0)   # no BLAS threads awake: split
    monkeypatch.setattr(threads, "SPIN_S", 0.0)
    try:
        threads.set_threads(2)
        yield
    finally:
        threads.set_threads(0)


def test_set_threads_keeps_blas_at_one_thread_and_splits_gemms(restore_blas):
    try:
        assert threads.set_threads(2) == 2 and threads.workers() == 2 and threads.split_gemms()
        assert threads.blas_info()["threads"] == 1
        assert threads.set_threads(1) == 1 and not threads.split_gemms()
    finally:
        threads.set_threads(0)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((37, 13), (13, 5)),             # rows (m >= n), odd sizes
    ((3, 11), (11, 41)),             # columns (m < n)
    ((7, 5, 9), (7, 9, 6)),          # batched over the first axis
    ((1, 5, 9), (7, 9, 6)),          # a broadcast over the batch
    ((4, 9), (5, 2, 9, 3)),          # a 2-d operand against a 4-d one
    ((1, 6, 8), (1, 8, 30)),         # a batch of one: columns
])
@pytest.mark.parametrize("with_out", [False, True])
def test_split_matmul_equals_one_call(split_two, a_shape, b_shape, with_out):
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    want = np.matmul(a, b)
    out = np.full(want.shape, np.nan) if with_out else None
    got = threads.matmul(a, b, out=out)
    assert got.shape == want.shape and got.dtype == want.dtype
    if with_out:
        assert got is out
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    # a transposed (strided) operand and float32 alike
    a32, b32 = a.astype(np.float32), np.ascontiguousarray(np.swapaxes(b, -1, -2)).astype(np.float32)
    np.testing.assert_allclose(threads.matmul(a32, np.swapaxes(b32, -1, -2)),
                               np.matmul(a32, np.swapaxes(b32, -1, -2)), rtol=2e-5, atol=2e-5)


def test_split_matmul_is_one_call_with_one_worker(restore_blas, monkeypatch):
    import numpy as np
    monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
    calls = []
    monkeypatch.setattr(threads, "parallel_chunks", lambda *a, **k: calls.append(a))
    a, b = np.ones((40, 30)), np.ones((30, 20))
    try:
        threads.set_threads(1)
        np.testing.assert_array_equal(threads.matmul(a, b), a @ b)
        assert calls == []
    finally:
        threads.set_threads(0)


def test_linear_with_split_gemms_equals_one_thread(monkeypatch, restore_blas):
    """Linear's three GEMMs (y, dW, dx) split over 2 workers give the one-thread results (float64)."""
    import numpy as np
    for name, value in (("LINEAR_SPLIT_MIN_FLOPS", 0), ("_blas_awake_until", 0.0), ("SPIN_S", 0.0)):
        monkeypatch.setattr(threads, name, value)
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((13, 7)), rng.standard_normal((13, 29))
    got = []
    try:
        for n in (1, 2):
            threads.set_threads(n)
            layer = gn.nn.Linear(7, 29).to(dtype="float64")
            layer.weight.data[...] = np.random.default_rng(4).standard_normal(layer.weight.shape)
            got.append((layer(x), layer.backward(dy), layer.weight.grad.copy(), layer.bias.grad.copy()))
    finally:
        threads.set_threads(0)
    for a, b in zip(*got):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13)


def test_linear_sized_gemms_run_on_blas_threads_and_a_split_waits_for_them(monkeypatch, restore_blas):
    """A Linear's product under LINEAR_SPLIT_MIN_FLOPS: one call on 2 BLAS threads, BLAS back at
    one after; within SPIN_S of it a product big enough to split runs on BLAS's threads too."""
    import numpy as np
    monkeypatch.setattr(threads, "_blas_awake_until", 0.0)
    counts, split = [], []
    real_matmul, real_chunks = np.matmul, threads.parallel_chunks
    monkeypatch.setattr(threads, "parallel_chunks", lambda *a, **k: split.append(1) or real_chunks(*a, **k))
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((64, 256)), rng.standard_normal((256, 128))   # 4.2 MFLOP
    try:
        threads.set_threads(2)
        ctl = threads._blas_controller()
        monkeypatch.setattr(ctl, "set_num_threads", lambda n, f=ctl.set_num_threads: counts.append(n) or f(n))
        np.testing.assert_allclose(threads.matmul(a, b, linear=True), real_matmul(a, b), rtol=1e-13)
        assert counts == [2, 1] and threads.blas_info()["threads"] == 1 and split == []
        monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
        threads.matmul(a, b)                          # BLAS's threads still awake: not split
        assert split == [] and counts == [2, 1, 2, 1]
        monkeypatch.setattr(threads, "_blas_awake_until", 0.0)
        np.testing.assert_allclose(threads.matmul(a, b), real_matmul(a, b), rtol=1e-13)
        assert split == [1] and counts == [2, 1, 2, 1]
        np.testing.assert_array_equal(threads.matmul(a[:4], b[:, :4], linear=True), a[:4] @ b[:, :4])
        assert counts == [2, 1, 2, 1]                # tiny: one single-threaded call
    finally:
        threads.set_threads(0)
