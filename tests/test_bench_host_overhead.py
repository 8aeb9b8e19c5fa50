"""scripts/bench_host_overhead.py runs the real wrappers against a null CuPy and writes its JSON
(the figure itself is a benchmark, not asserted here). About 2 s."""
import importlib.util
import json

import gpunet as gn
from conftest import ROOT


def test_bench_host_overhead_writes_json_and_restores_the_backend(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_host_overhead", ROOT / "scripts" / "bench_host_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = gn.backend._import_cupy, gn.backend._status_cache
    out = tmp_path / "r.json"
    bench.main(["--calls", "20", "--repeats", "3", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["benchmark"] == "host-overhead" and r["device"].startswith("CPU: ") and r["limit_us"] == 30.0
    assert [row["call"].split()[0] for row in r["rows"]] == ["softmax_cross_entropy", "softmax_cross_entropy_eval",
                                                             "relu_backward"]
    assert all(row["host_us_per_call"] > 0 for row in r["rows"])
    assert (gn.backend._import_cupy, gn.backend._status_cache) == before   # the null GPU is gone
