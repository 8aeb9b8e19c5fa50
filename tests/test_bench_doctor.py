"""gpunet bench doctor (gpunet/bench/doctor.py) compares a run with one LiveDoctor against a run with none.

The Trainer adds a LiveDoctor by default, so a baseline built without `doctor=False`
carries one too and the measured overhead is about 0 by construction. No speed is
asserted here: the figures live in benchmarks/results/.
"""
import json
import statistics
from pathlib import Path

import numpy as np

from gpunet import doctor
from gpunet.cli import bench as cli_bench

from conftest import data_root


def bench(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    return cli_bench.load("doctor")


class Tiny:
    x = np.zeros((4, 8), np.float32)


def test_baseline_has_no_doctor_and_the_other_side_exactly_one(monkeypatch):
    bd = bench(monkeypatch)
    trainer, live, _ = bd.make_trainer(Tiny(), "cpu", with_doctor=False)
    assert live is None
    assert not any(isinstance(cb, doctor.LiveDoctor) for cb in trainer.callbacks.callbacks)
    trainer, live, _ = bd.make_trainer(Tiny(), "cpu", with_doctor=True)
    assert [cb for cb in trainer.callbacks.callbacks if isinstance(cb, doctor.LiveDoctor)] == [live]
    assert isinstance(live, bd.TimedLiveDoctor)


def test_result_names_baseline_load_and_spread(monkeypatch, tmp_path):
    data_root("digits")
    bd = bench(monkeypatch)
    out = tmp_path / "doctor.json"
    assert bd.main(["--dataset", "digits", "--repeats", "2", "--json-out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["baseline"].startswith("Trainer(doctor=False)")
    assert len(r["load_average_before"]) == 3 and r["device_name"] and r["cpu_count"] >= 1
    assert len(r["epochs"]["without"]) == len(r["epochs"]["with"]) == 2
    assert "doctor" not in r["epochs"]["without"][0] and r["epochs"]["with"][0]["doctor"] > 0
    ratios = [w["wall"] / wo["wall"] - 1 for w, wo in zip(r["epochs"]["with"], r["epochs"]["without"])]
    assert r["overhead_wall_per_round"] == ratios
    assert r["overhead_wall_per_round_min"] == min(ratios) and r["overhead_wall_per_round_max"] == max(ratios)
    assert r["overhead_wall_per_round_median"] == statistics.median(ratios)
