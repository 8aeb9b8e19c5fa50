"""The README stays true: its commands are the ones CI runs, and its API example runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _marked(name):
    m = re.search(rf"<!-- {name} -->\s*```bash\n(.*?)```\s*<!-- /{name} -->", README, re.S)
    assert m, f"README.md has no {name} block"
    return m.group(1).strip()


def test_commands_are_marked_and_ci_runs_the_test_command():
    assert _marked("main-command") == "pip install . && gpunet train"
    assert _marked("test-command") == 'pip install ".[test]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci and "python3 -m venv" in ci


def test_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["history"].val_accuracy[-1] > 0.9
    assert (tmp_path / "model.npz").is_file()


def _example_commands():
    """Every `gpunet ...` line of a bash block in README.md and docs/*.md, without comments
    and environment prefixes."""
    root = Path(__file__).resolve().parents[1]
    out = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip().removeprefix("$ ")
                words = [w for w in line.split() if not re.fullmatch(r"[A-Z_]+=\S*", w)]
                if words[:1] == ["gpunet"] and "|" not in words and "&&" not in words:
                    out.append((path.name, words[1:]))
    return out


def test_every_gpunet_example_in_the_docs_parses():
    """Flags and choices of every example command exist as written (a renamed flag, such as
    a benchmark's --out, or a missing --schedule choice fails here)."""
    import shlex
    from gpunet.cli import bench, build_parser
    examples = _example_commands()
    assert any(w[:1] == ["bench"] for _, w in examples) and any("onecycle" in w for _, w in examples)
    for where, words in examples:
        words = shlex.split(" ".join(words))
        if words[:1] == ["bench"]:
            bench.load(words[1]).build_parser().parse_args(words[2:])
        elif words[:1] == ["launch"] or "--" in words:
            continue  # launch passes its command through; checked in test_mpi.py
        else:
            try:
                build_parser(words[0]).parse_args(words)
            except SystemExit as e:
                raise AssertionError(f"{where}: gpunet {' '.join(words)} does not parse") from e


def test_readme_quotes_the_committed_onecycle_seed_range():
    import json
    root = Path(__file__).resolve().parents[1]
    r = json.loads((root / "benchmarks/results/mnist-mlp-onecycle-seeds-2026-11-29.json").read_text())
    v = r["variants"]["onecycle"]
    assert sorted(v["per_seed"]) == ["0", "1", "2", "3", "4"]
    assert f"{100 * v['min']:.2f}-{100 * v['max']:.2f}%" in (root / "README.md").read_text()
