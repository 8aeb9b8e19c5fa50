"""gpunet bench optim: runs on the CPU with tiny settings and writes its JSON (no speed is asserted).
About 2 s."""
import json

import pytest

from gpunet.cli import bench as cli_bench


def test_bench_optim_writes_both_sides_and_their_ratio(tmp_path, capsys):
    out = tmp_path / "optim.json"
    bench = cli_bench.load("optim")
    assert bench.main(["--device", "cpu", "--optimizers", "sgd,adamw", "--steps", "1", "--repeats", "1",
                       "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["model"] == "tf_cifar10_cnn" and res["device"] == "cpu" and len(res["load_average_before"]) == 3
    assert [r["optimizer"] for r in res["results"]] == ["sgd", "adamw"]
    for r in res["results"]:
        assert r["elements"] == 1068298 and r["parameters"] == 10 and r["agree_max_abs"] <= 1e-5
        assert set(r["step_us"]) == {"per_parameter", "fused"} and set(r["clip_grad_norm_us"]) == {"per_parameter",
                                                                                                   "fused"}
    err = capsys.readouterr().err
    assert "bench optim: 1/2: sgd ..." in err and "bench optim: 2/2: adamw ..." in err


def test_bench_optim_refuses_an_unknown_optimizer():
    with pytest.raises(SystemExit, match=r"--optimizers expected names from \['adam', 'adamw', 'sgd', 'sgd-nesterov'\], "
                                         r"got 'rmsprop'"):
        cli_bench.load("optim").main(["--device", "cpu", "--optimizers", "rmsprop"])
