"""bench train's measuring instrument: the --threads sweep, the paired ratios and their spread,
the per-layer split, the peak-RSS children and the README table generator.

Tiny workloads and rounds; no speed is asserted. The per-layer attribution is checked with a
fake clock that only layers advance, so each expected millisecond is exact.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import gpunet as gn
from gpunet import threads
from gpunet.bench import perf_table, torch_twin, train_layers, train_rss
from gpunet.bench import train as bt
from gpunet.errors import GpunetError, GpunetValueError

HAVE_TORCH = torch_twin.available()
ROOT = Path(__file__).resolve().parents[1]
TINY = {"tiny-mlp": bt.Workload("tiny-mlp", lambda: gn.models.mlp([12, 16, 10]),
                                bt.random_images((1, 3, 4)), 8, lr=0.05),
        "tiny-cnn": bt.Workload("tiny-cnn",
                                lambda: gn.models.small_cnn(1, 10, image_size=8, width=4, hidden=8),
                                bt.random_images((1, 8, 8)), 8, lr=0.05)}


@pytest.fixture
def restore_threads():
    """The sweep sets both libraries' thread counts: put them back as found."""
    saved_workers = threads._workers
    torch_threads = None
    if HAVE_TORCH:
        import torch
        torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=None):
        yield
    threads._workers = saved_workers
    if torch_threads is not None:
        import torch
        torch.set_num_threads(torch_threads)


# ---------------------------------------------------------------- --threads

@pytest.mark.parametrize("text, counts", [("1,2", [1, 2]), ("2", [2]), (" 2 , 1 ", [2, 1]),
                                          ("0", [threads.AUTO_THREADS]), (None, [None]), (3, [3])])
def test_threads_list_parses(text, counts):
    assert bt.parse_threads(text) == counts


@pytest.mark.parametrize("text, bad", [("1,,2", "''"), ("-1", "'-1'"), ("two", "'two'"), ("1.5", "'1.5'"), ("2²", "'2²'"),
                                       ("", "''"), ("1,1", "[1] repeated"),
                                       (f"0,{threads.AUTO_THREADS}", f"[{threads.AUTO_THREADS}] repeated")])
def test_bad_threads_are_refused_naming_the_entry(text, bad):
    with pytest.raises(GpunetValueError) as e:
        bt.parse_threads(text)
    assert "--threads: expected" in str(e.value) and bad in str(e.value) and repr(text) in str(e.value)


def test_cli_refuses_bad_threads_before_measuring(capsys):
    with pytest.raises(SystemExit) as e:
        bt.parser().parse_args(["--threads", "1,x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threads" in err and "'x'" in err and "comma-separated" in err


@pytest.mark.parametrize("flag, value", [("--rounds", "0"), ("--seconds", "0"), ("--pool", "0"),
                                         ("--warmup", "-1"), ("--rss-samples", "0"),
                                         ("--layer-steps", "0")])
def test_bad_settings_are_refused(flag, value, capsys, monkeypatch):
    monkeypatch.setattr(bt, "WORKLOADS", {"tiny-mlp": TINY["tiny-mlp"]})
    assert bt.main(["--device", "cpu", "--no-torch", "--layers", "--rss", flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and value in err


# ---------------------------------------------------------------- ratios and spread

def test_paired_ratios_and_their_spread_from_given_numbers():
    r = bt.paired_ratios([100, 200, 300, 400, 500], [200, 200, 200, 200, 250])
    assert r["rounds"] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert (r["median"], r["min"], r["max"], r["q1"], r["q3"], r["n"]) == (1.5, 0.5, 2.0, 1.0, 2.0, 5)
    s = bt.spread([4.0, 1.0, 2.0, 3.0])  # even count: quartiles interpolate, as numpy's default
    assert (s["median"], s["q1"], s["q3"]) == (2.5, 1.75, 3.25)


def test_paired_ratios_refuse_unpaired_rounds():
    with pytest.raises(GpunetValueError, match="as many gpunet as PyTorch rounds.*got 2 and 3"):
        bt.paired_ratios([1, 2], [1, 2, 3])
    with pytest.raises(GpunetValueError, match="finite"):
        bt.spread([1.0, float("nan")])


# ---------------------------------------------------------------- the sweep

def test_sweep_writes_one_row_per_workload_and_thread_count(tmp_path, monkeypatch, restore_threads, capsys):
    monkeypatch.setattr(bt, "WORKLOADS", {"tiny-mlp": TINY["tiny-mlp"], "tiny-cnn": TINY["tiny-cnn"]})
    out = tmp_path / "r.json"
    rc = bt.main(["--device", "cpu", "--threads", "1,2", "--json-out", str(out), "--seconds", "0.005",
                  "--rounds", "3", "--warmup", "1", "--check-steps", "2", "--pool", "2"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["threads"] == [1, 2]
    rows = report["results"]
    assert [(r["workload"], r["threads"]) for r in rows] == [
        ("tiny-mlp", 1), ("tiny-mlp", 2), ("tiny-cnn", 1), ("tiny-cnn", 2)]
    for r in rows:
        info = r["thread_info"]
        # BLAS at one thread; at 2 the GEMMs split over gpunet's two workers
        assert info["requested"] == info["gpunet_workers"] == r["threads"] and info["gpunet_blas"] == 1
        assert info["gpunet_split_gemms"] == (r["threads"] > 1)
        assert len(r["gpunet"]["segments"]) == 3
        assert isinstance(r["load_average_before"], list) and isinstance(r["load_average_after"], list)
        if HAVE_TORCH:
            assert info["torch"] == r["threads"]
            s = r["ratio_spread"]
            for ratio, g, t in zip(s["rounds"], r["gpunet"]["segments"], r["torch"]["segments"]):
                # round r's ratio is its two segments' (recorded rounded to 0.1 samples/s, 4 digits)
                assert abs(ratio - g / t) <= g / t * (0.051 / g + 0.051 / t) + 5e-5
            assert s["n"] == 3 and s["min"] <= s["median"] == r["ratio"] <= s["max"]
        else:
            assert "ratio" not in r and "torch" not in info
    table = capsys.readouterr().out
    assert "tiny-cnn" in table and "(min–max)" in table


def test_default_threads_leave_the_library_count_and_give_it_to_pytorch(tmp_path, monkeypatch,
                                                                         restore_threads):
    monkeypatch.setattr(bt, "WORKLOADS", {"tiny-mlp": TINY["tiny-mlp"]})
    out = tmp_path / "r.json"
    assert bt.main(["--device", "cpu", "--json-out", str(out), "--seconds", "0.005", "--rounds", "1",
                    "--warmup", "1", "--check-steps", "2", "--layers", "--layer-steps", "1"]) == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert report["threads"] == [None] and row["thread_info"]["requested"] is None
    assert row["threads"] == threads.workers()
    if HAVE_TORCH:
        assert row["thread_info"]["torch"] == report["environment"]["torch_threads"]
    assert report["settings"]["layers"] is True and report["settings"]["layer_steps"] == 1
    md = perf_table.markdown(report).splitlines()  # the written JSON renders, layer rows included
    n_layers = len(TINY["tiny-mlp"].model())
    assert sum(line.startswith(f"| tiny-mlp | {row['threads']} | ") for line in md) == n_layers + 1  # + whole step


# ---------------------------------------------------------------- per-layer split

class Clock:
    """A fake perf_counter: time moves only when a layer says so."""
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Tick(gn.nn.Module):
    """Identity whose forward takes `fwd` and backward `bwd` seconds of fake time."""
    def __init__(self, clock, fwd, bwd):
        super().__init__()
        self.clock, self.fwd, self.bwd = clock, fwd, bwd

    def forward(self, x):
        self.clock.now += self.fwd
        return x

    def backward(self, dy, need_input_grad=True):
        self.clock.now += self.bwd
        return dy


class FusesWithPrevious(Tick):
    """Fuses with the Tick before it; its fused backward calls both backwards, as
    Module.backward_fused does: the pair's time must be counted once, on this layer."""
    def fuses_backward_with(self, prev):
        return isinstance(prev, Tick)

    def backward_fused(self, prev, dy):
        self.clock.now += 7.0 - self.bwd - prev.bwd
        return prev.backward(self.backward(dy))


def test_gpunet_layer_times_land_on_their_layer_and_fused_pairs_are_marked():
    clock = Clock()
    model = gn.nn.Sequential(gn.nn.Linear(4, 3), Tick(clock, 3.0, 5.0), Tick(clock, 0.0, 100.0),
                             FusesWithPrevious(clock, 1.0, 100.0), gn.nn.Linear(3, 2))

    def step(x, y):
        model.backward(np.ones((len(x), 2), np.float32) * model.forward(x)[:, :1], need_input_grad=False)
        clock.now += 2.0  # the optimizer's time: not in any layer

    x = np.ones((2, 4), np.float32)
    p = train_layers.profile_gpunet(model, step, [(x, None)], lambda: None, steps=3, clock=clock)
    got = [(r["forward_ms"], r["backward_ms"], r.get("backward_in")) for r in p["layers"]]
    assert got == [(0, 0, None), (3000, 5000, None), (0, 0, 3), (1000, 7000, None), (0, 0, None)]
    assert (p["step_ms"], p["layers_ms"], p["rest_ms"], p["steps"]) == (18000, 16000, 2000, 3)
    assert all("forward" not in m.__dict__ and "backward_fused" not in m.__dict__ for m in model)


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed: nothing to profile")
def test_torch_module_times_land_on_their_module():
    import torch
    clock = Clock()

    class TickFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            clock.now += 3.0
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            clock.now += 5.0
            return g

    class TickModule(torch.nn.Module):
        def forward(self, x):
            return TickFn.apply(x)

    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 3), TickModule(), torch.nn.Linear(3, 2))

    def step(x, y):
        tmodel(x).sum().backward()
        clock.now += 2.0

    p = train_layers.profile_torch(tmodel, step, [(torch.ones(2, 4), None)], lambda: None, steps=3,
                                   clock=clock)
    assert [(r["forward_ms"], r["backward_ms"]) for r in p["layers"]] == [(0, 0), (3000, 5000), (0, 0)]
    assert (p["step_ms"], p["layers_ms"], p["rest_ms"]) == (10000, 8000, 2000)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_pre_hooks
               for m in tmodel)


def test_layers_flag_profiles_every_layer_on_both_sides(restore_threads):
    args = argparse.Namespace(warmup=1, seconds=0.005, rounds=1, pool=2, seed=0, check_steps=2,
                              check_rtol=1e-3, layers=True, layer_steps=2)
    row = bt.run_workload(TINY["tiny-cnn"], gn.device("cpu"), args, with_torch=HAVE_TORCH)
    n = len(TINY["tiny-cnn"].model())
    g = row["layers"]["gpunet"]
    assert [r["index"] for r in g["layers"]] == list(range(n)) and g["steps"] == 2
    assert g["layers"][0]["layer"].startswith("Conv2d(1→4")
    assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in g["layers"])
    if HAVE_TORCH:
        t = row["layers"]["torch"]
        assert [r["index"] for r in t["layers"]] == list(range(n)) and t["layers"][0]["layer"] == "Conv2d"
        assert t["step_ms"] > 0


# ---------------------------------------------------------------- peak RSS

def test_rss_children_report_each_side_alone():
    args = argparse.Namespace(seed=0, rss_samples=256)
    m = train_rss.measure("mlp-b128", gn.device("cpu"), 1, args, with_torch=HAVE_TORCH)
    g = m["gpunet"]
    assert (m["samples"], g["samples"], g["steps"], g["threads"]) == (256, 256, 2, 1)
    assert g["torch_imported"] is False and g["data"].startswith(("random", "mnist train[:256]"))
    assert g["peak_rss_mb"] >= g["rss_before_training_mb"] > 0
    if HAVE_TORCH:
        t = m["torch"]
        assert t["torch_imported"] is True and (t["samples"], t["data"]) == (256, g["data"])
        assert m["gpunet_over_torch"] == round(g["peak_rss_mb"] / t["peak_rss_mb"], 3)


def test_rss_child_failure_is_reported_with_its_error():
    args = argparse.Namespace(seed=0, rss_samples=16)
    with pytest.raises(GpunetError, match="(?s)the gpunet child for no-such-workload exited 1: .*KeyError"):
        train_rss.measure("no-such-workload", gn.device("cpu"), None, args, with_torch=False)


@pytest.mark.parametrize("flags, named", [(["--layer-steps", "3"], "--layer-steps: only has an effect with --layers"),
                                          (["--rss-samples", "512"], "--rss-samples: only has an effect with --rss")])
def test_a_setting_without_its_measurement_is_refused(flags, named, capsys):
    assert bt.main(["--device", "cpu", "--no-torch", *flags]) == 2
    assert named in capsys.readouterr().err


def test_an_rss_epoch_shorter_than_a_batch_is_refused(capsys):
    assert bt.main(["--device", "cpu", "--no-torch", "--workloads", "small-cnn", "--rss",
                    "--rss-samples", "100"]) == 2
    assert "--rss-samples: expected at least one batch of each workload (small-cnn: 256), got 100" \
        in capsys.readouterr().err


def test_epoch_size_defaults_to_the_training_set():
    assert train_rss.epoch_samples("small-cnn", None) == 60000
    assert train_rss.epoch_samples("tf-cifar10-cnn", None) == 50000
    assert train_rss.epoch_samples("small-cnn", 512) == 512


# ---------------------------------------------------------------- README tables

def synthetic_report():
    row = {"workload": "small-cnn", "threads": 2, "batch_size": 256,
           "gpunet": {"samples_per_s": 1000.0, "segments": [900.0, 1000.0, 1100.0]},
           "torch": {"samples_per_s": 2000.0, "segments": [2250.0, 2000.0, 1833.3]},
           "ratio_spread": {"rounds": [0.4, 0.5, 0.6], "median": 0.5, "min": 0.4, "max": 0.6,
                            "q1": 0.45, "q3": 0.55, "n": 3},
           "load_average_before": [1.5, 1.0, 1.0], "load_average_after": [1.7, 1.1, 1.0],
           "layers": {"gpunet": {"step_ms": 10.0, "rest_ms": 1.0, "layers": [
               {"index": 0, "layer": "ReLU()", "forward_ms": 1.0, "backward_ms": 0.0, "backward_in": 1},
               {"index": 1, "layer": "MaxPool2d(kernel_size=(2, 2))", "forward_ms": 2.0,
                "backward_ms": 6.0}]},
               "torch": {"step_ms": 8.0, "rest_ms": 0.5, "layers": [
                   {"index": 0, "layer": "ReLU", "forward_ms": 1.5, "backward_ms": 1.25},
                   {"index": 1, "layer": "MaxPool2d", "forward_ms": 3.0, "backward_ms": 1.75}]}},
           "peak_rss": {"samples": 60000, "gpunet": {"samples": 59904, "peak_rss_mb": 281.4},
                        "torch": {"samples": 59904, "peak_rss_mb": 510.0}, "gpunet_over_torch": 0.552}}
    old = {"workload": "mlp-b128", "batch_size": 128,  # written before the paired ratios existed
           "gpunet": {"samples_per_s": 300.0, "segments": [100.0, 300.0]},
           "torch": {"samples_per_s": 200.0, "segments": [200.0, 200.0]}}
    alone = {"workload": "mlp-b1024", "threads": 1, "batch_size": 1024,
             "gpunet": {"samples_per_s": 5000.0, "segments": [5000.0]}}
    return {"benchmark": "bench_train", "date": "2026-11-30T10:00:00", "device": "cpu",
            "environment": {"device_name": "Test CPU", "cpu_count": 2, "blas": "openblas 0.3",
                            "blas_threads": 2, "torch_version": "2.13"},
            "load_average_before": [1.2], "load_average_after": [1.9], "results": [row, old, alone]}


def test_perf_table_renders_a_synthetic_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(synthetic_report()))
    assert perf_table.main([str(path)]) == 0
    md = capsys.readouterr().out
    lines = md.splitlines()
    assert lines[0] == ("2026-11-30, Test CPU (2 cores), openblas 0.3, PyTorch 2.13; 1-min load 1.5–1.7; "
                        "ratio: median of per-round paired ratios (min–max).")
    assert "| small-cnn | 256 | 2 | 1,000 | 2,000 | 0.50× (0.40–0.60) | 3 | 1.5→1.7 |" in lines
    assert "| mlp-b128 | 128 | 2 | 300 | 200 | 1.00× (0.50–1.50) | 2 | 1.2→1.9 |" in lines
    assert "| mlp-b1024 | 1024 | 1 | 5,000 | — | — | 1 | 1.2→1.9 |" in lines
    assert "| small-cnn | 2 | 0 | ReLU() | 1.00 | 1.50 | 0.00 (in 1) | 1.25 |" in lines
    assert "| small-cnn | 2 | 1 | MaxPool2d(kernel_size=(2, 2)) | 2.00 | 3.00 | 6.00 | 1.75 |" in lines
    assert ("| small-cnn | 2 |  | whole step (rest: loss, optimizer) | 10.00 (rest 1.00) "
            "| 8.00 (rest 0.50) |  |  |") in lines
    assert "| small-cnn | 2 | 59,904 | 281 | 510 | 0.55× |" in lines


def test_perf_table_reads_the_committed_results_and_refuses_other_json(tmp_path, capsys):
    paths = sorted((ROOT / "benchmarks/results").glob("train-*.json"))
    assert paths
    for path in paths:
        assert perf_table.main([str(path)]) == 0
        out = capsys.readouterr().out
        for row in json.loads(path.read_text())["results"]:
            assert f"| {row['workload']} |" in out, (path.name, row["workload"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "bench_loader", "results": []}))
    assert perf_table.main([str(other)]) == 2
    assert "expected a `gpunet bench train` JSON" in capsys.readouterr().err
