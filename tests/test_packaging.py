"""The installed package finds its kernels, and a built wheel carries them."""
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_kernels_are_found_from_outside_the_checkout(tmp_path):
    """Import gpunet from an unrelated directory: kernels_dir() must point at real .cu files."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import json, gpunet.backend as b; d = b.kernels_dir(); " \
           "print(json.dumps([str(d), sorted(p.name for p in d.glob('*.cu'))] if d else None))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    expected = sorted(p.name for p in (ROOT / "kernels").glob("*.cu"))
    assert expected, "the checkout has no kernels/*.cu"
    assert found is not None and found[1] == expected


def test_wheel_ships_kernels(tmp_path):
    """A non-editable install gets gpunet/kernels/*.cu from the wheel."""
    pytest.importorskip("hatchling", reason="hatchling is in the test extra: pip install '.[test]'")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, text=True)
    wheel = next(tmp_path.glob("gpunet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for cu in (ROOT / "kernels").glob("*.cu"):
        assert f"gpunet/kernels/{cu.name}" in names, f"{cu.name} missing from {wheel.name}"
    assert "gpunet/backend.py" in names


def test_cli_info_runs():
    out = subprocess.run([sys.executable, "-m", "gpunet", "info", "--json"],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["versions"]["numpy"]
    assert isinstance(info["gpu_available"], bool)
    if not info["gpu_available"]:
        assert info["default_device"] == "cpu" and info["gpu_reason"]
    assert info["kernels"], "gpunet info found no kernels"


def test_the_test_and_mpi_extras_bring_an_mpi_launcher():
    """`pip install ".[test]"` must give the MPI tests a real mpiexec (CI runs them)."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("test", "mpi"):
        names = {d.split(">")[0].split("=")[0].strip() for d in extras[extra]}
        assert {"mpi4py", "mpich"} <= names, (extra, names)
    for cuda in ("cuda12", "cuda13"):
        assert any(d.startswith(f"nvidia-nccl-cu{cuda[4:]}") for d in extras[cuda]), extras[cuda]
