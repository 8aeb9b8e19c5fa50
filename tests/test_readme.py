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
