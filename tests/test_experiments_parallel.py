"""The multi-gpu-averaging experiment (quick mode): averaging over a split batch is exact."""
import json

import gpunet as gn


def test_multi_gpu_averaging_quick(tmp_path):
    result = gn.experiments.run("multi-gpu-averaging", quick=True, out=tmp_path)
    f = result.findings
    assert f["dtype"] == "float64" and f["mean_split_max_weight_diff"] < 1e-12
    assert f["probe_float64_diff"] < 1e-12 and "is exact" in result.conclusion
    rows = {r["configuration"]: r for r in result.rows}
    assert rows["2 replicas × B, mean, lr×2 + warmup"]["lr"] == 2 * rows["1 device, batch B"]["lr"]
    assert rows["2 replicas × B, mean, same lr"]["steps/epoch"] < rows["1 device, batch B"]["steps/epoch"]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["conclusion"] == result.conclusion and f"{f['probe_float64_diff']:.2g}" in result.conclusion
