"""docs/experiments.md is a rendering of the committed results, and `--check` can fail.

The committed results live in docs/results/<name>.json (full runs, figures in
docs/results/figures/<name>/) and docs/results/quick/<name>.json (quick runs).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from gpunet import experiments


ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gpunet", "experiment", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_doc_is_the_rendering_of_the_committed_results():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import experiments_doc
    finally:
        sys.path.pop(0)
    doc = (ROOT / "docs" / "experiments.md").read_text()
    assert doc == experiments_doc.render(), "docs/experiments.md is stale: run python scripts/experiments_doc.py"
    for name in experiments.REGISTRY:
        result = json.loads(experiments.committed_path(name, quick=False).read_text())
        assert result["quick"] is False and result["name"] == name
        env = result["environment"]
        assert env["blas_threads"] == [1], (name, env)       # the thread setting the numbers rest on
        assert env["python"] and env["numpy"] and env["gpunet"] and env["blas"], (name, env)
        assert result["figures"], f"{name} draws no figure"
        for fig in result["figures"]:
            assert (ROOT / "docs" / "results" / "figures" / name / fig).is_file(), (name, fig)
            assert f"](results/figures/{name}/{fig})" in doc, (name, fig)
        assert result["conclusion"] in doc
        quick = json.loads(experiments.committed_path(name, quick=True).read_text())
        assert quick["quick"] is True and quick["environment"]["blas_threads"] == [1]


def test_seeds_are_recorded_where_claims_rest_on_several():
    for name in ("batchnorm-placement", "relu-last-layer", "multi-gpu-averaging"):
        seeds = json.loads(experiments.committed_path(name, quick=False).read_text())["environment"]["seeds"]
        assert len(seeds) >= 10, (name, seeds)


def test_check_passes_on_a_rerun_of_the_committed_quick_result(tmp_path):
    proc = cli("mse-vs-threshold", "--quick", "--check", "--rtol", "1e-6", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "check passed" in proc.stdout


def test_check_fails_and_names_each_difference(tmp_path):
    committed = json.loads(experiments.committed_path("mse-vs-threshold", quick=True).read_text())
    committed["rows"][0]["w"] += 1e-3
    committed["findings"]["threshold_correct"] = 5
    committed["conclusion"] = committed["conclusion"].replace("gets 3/5", "gets 2/5", 1)
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "mse-vs-threshold.json").write_text(json.dumps(committed))
    proc = cli("mse-vs-threshold", "--quick", "--check", "--results", str(tmp_path), "--out", str(tmp_path / "run"))
    assert proc.returncode == 1, proc.stdout[-3000:]
    out = " ".join(proc.stdout.split())
    assert "check failed: 3 difference(s)" in out, out[-2000:]
    assert "rows[0].w: committed" in out and "findings.threshold_correct: committed 5, rerun 4" in out
    assert "conclusion differs from character" in out


def test_compare_skips_volatile_entries_and_notes_the_environment():
    a = {"quick": True, "columns": ["x", "s/epoch"], "rows": [{"x": 1.0, "s/epoch": 2.0}],
         "findings": {"t": {"seconds_per_epoch": 3.0}, "acc": 0.5}, "conclusion": "c",
         "volatile": ["s/epoch", "seconds_per_epoch"], "environment": {"numpy": "2.4"}}
    b = json.loads(json.dumps(a))
    b["rows"][0]["s/epoch"], b["findings"]["t"]["seconds_per_epoch"], b["environment"]["numpy"] = 9.0, 9.0, "2.3"
    diffs, notes = experiments.compare(a, b)
    assert diffs == [] and notes == ["environment.numpy: committed '2.4', rerun '2.3'"]
    b["rows"][0]["x"] = 1.0 + 1e-12
    assert experiments.compare(a, b, rtol=1e-9)[0] == []
    b["rows"][0]["x"] = 1.0 + 1e-6
    assert experiments.compare(a, b, rtol=1e-9)[0] == ["rows[0].x: committed 1.0, rerun 1.000001"]
    b["quick"] = False
    assert "mode: committed quick, rerun full" in experiments.compare(a, b)[0]


def test_check_options_are_refused_without_check(tmp_path):
    proc = cli("mse-vs-threshold", "--quick", "--results", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "expected --check" in proc.stdout
    proc = cli("mse-vs-threshold", "--quick", "--check", "--results", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "expected a committed result" in proc.stdout
