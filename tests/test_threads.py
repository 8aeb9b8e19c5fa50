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
    assert gn.set_threads(2) == 2 and threads.blas_info()["threads"] == 2
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
    assert cfg["threads"] == used and threads.blas_info()["threads"] == used


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
