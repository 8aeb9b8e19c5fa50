"""gpunet bench host_overhead runs the real wrappers against a null CuPy and writes its JSON
(the figure itself is a benchmark, not asserted here). About 2 s."""
import json

import gpunet as gn


def test_bench_host_overhead_writes_json_and_restores_the_backend(tmp_path):
    from gpunet.bench import host_overhead as bench
    before = gn.backend._import_cupy, gn.backend._status_cache
    out = tmp_path / "r.json"
    bench.main(["--calls", "20", "--repeats", "3", "--json-out", str(out)])
    r = json.loads(out.read_text())
    assert r["benchmark"] == "host-overhead" and r["device"].startswith("CPU: ") and r["limit_us"] == 30.0
    assert [row["call"].split()[0] for row in r["rows"]] == ["softmax_cross_entropy", "softmax_cross_entropy_eval",
                                                             "relu_backward"]
    assert all(row["host_us_per_call"] > 0 for row in r["rows"])
    assert (gn.backend._import_cupy, gn.backend._status_cache) == before   # the null GPU is gone
