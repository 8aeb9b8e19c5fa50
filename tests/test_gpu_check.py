"""scripts/gpu_check.sh and the GPUNET_REQUIRE_GPU switch, as far as a machine without a GPU can
check them: OUTDIR made absolute, preflight stops the run, every step under a timeout inside
an 8-minute budget, results named <date>-<gpu>-<benchmark>.json, skipped GPU tests fail and are
listed with their reasons. About 10 s (three subprocesses importing gpunet)."""
import os
import re
import subprocess
import sys

import pytest

import gpunet as gn
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"
GPU_TEST = "tests/test_ops_relu.py::test_relu_kernel_in_place_and_shapes"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_") or k == "GPUNET_DATA"}
    env.update(PYTHONPATH=str(ROOT), PYTHON=sys.executable, **extra)
    return env


@pytest.mark.skipif(gn.is_gpu_available(), reason="checks the no-GPU path; scripts/gpu_check.sh runs the GPU one")
@pytest.mark.parametrize("require", ["1", "0"])
def test_require_gpu_turns_a_skipped_gpu_test_into_a_failure(tmp_path, require):
    report = tmp_path / "skipped.txt"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", GPU_TEST], cwd=ROOT,
                       env=_env(GPUNET_REQUIRE_GPU=require, GPUNET_SKIP_REPORT=str(report)),
                       capture_output=True, text=True, timeout=120)
    listed = report.read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(GPU_TEST + "\t") and "no usable GPU" in listed[0]
    if require == "1":
        assert r.returncode == 1, r.stdout
        assert "GPUNET_REQUIRE_GPU=1: a GPU test may not skip" in r.stdout
    else:
        assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout


@pytest.mark.skipif(gn.is_gpu_available(), reason="checks the no-GPU path")
def test_gpu_check_without_a_gpu_stops_at_preflight_with_an_absolute_outdir(tmp_path):
    before = set((ROOT / "benchmarks" / "results").iterdir())
    r = subprocess.run(["bash", str(SCRIPT), "rel/out"], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=180)
    out = tmp_path / "rel" / "out"
    log = (out / "gpu_check.log").read_text()
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"results in {out.resolve()}" in log and "no usable GPU, stopping" in log
    assert "== gpu-tests" not in log and "== bench-" not in log        # the window is not wasted
    assert (out / "preflight-device.log").is_file()
    assert set((ROOT / "benchmarks" / "results").iterdir()) == before


def test_gpu_check_plan_fits_the_window(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "o")], cwd=tmp_path,
                       env=_env(GPUNET_GPU_CHECK_DRY="1"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = re.findall(r"^== (\S+) \(timeout (\d+)s\): (.*)$", r.stdout, re.M)
    names = [s[0] for s in steps]
    assert names[:2] == ["preflight-device", "preflight-kernel"]
    assert {"gpu-tests", "bench-kernels", "bench-train"} <= set(names)
    budget = int(re.search(r"budget=\$\{GPUNET_GPU_CHECK_BUDGET:-(\d+)\}", SCRIPT.read_text()).group(1))
    assert budget < 8 * 60
    day = r"\d{4}-\d{2}-\d{2}"
    for name, _, cmd in steps:
        if name.startswith("bench-"):
            m = re.search(r"--json-out (\S+)", cmd)
            assert m and re.fullmatch(rf".*/benchmarks/results/{day}-dry-run-{name[6:]}\.json", m.group(1)), cmd
    code = [line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "pip install" in line] and any("PYTHONPATH=" in line for line in code)
    assert "--quick" in dict((s[0], s[2]) for s in steps)["bench-kernels"]
    assert "-m gpu" in dict((s[0], s[2]) for s in steps)["gpu-tests"]
