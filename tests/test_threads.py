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
