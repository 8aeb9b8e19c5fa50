"""`gpunet doctor` (run through its module's main): exit codes, the report and the JSON output."""
import json

from gpunet.cli import doctor as cli


def test_healthy_config_exits_0(tmp_path, capsys):
    out = tmp_path / "f.json"
    assert cli.main(["--device", "cpu", "--probe-steps", "20", "--json-out", str(out)]) == 0
    assert "healthy" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["findings"] == [] and report["steps"] >= 20


def test_zero_init_exits_1_with_codes(tmp_path):
    out = tmp_path / "f.json"
    assert cli.main(["--device", "cpu", "--init", "zeros", "--probe-steps", "45", "--json-out", str(out)]) == 1
    found = {f["code"] for f in json.loads(out.read_text())["findings"]}
    assert {"GN101-symmetric-init", "GN203-priors-plateau"} <= found


def test_divergence_and_ignore(tmp_path):
    out = tmp_path / "f.json"
    assert cli.main(["--device", "cpu", "--lr", "1e4", "--probe-steps", "30", "--json-out", str(out)]) == 1
    report = json.loads(out.read_text())
    found = {f["code"] for f in report["findings"]}
    assert report["stopped"] and found & {"GN201-non-finite", "GN202-divergence"}
    assert report["steps"] < 30  # stopped at once
    assert cli.main(["--device", "cpu", "--init", "zeros", "--probe-steps", "0",
                     "--ignore", "GN101", "dead-relu"]) == 0


def test_bad_argument_exits_2(capsys):
    assert cli.main(["--device", "cpu", "--ignore", "GN999"]) == 2
    assert "GN999" in capsys.readouterr().out
