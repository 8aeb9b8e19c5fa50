"""Every kernels/*.cu compiles with nvcc for sm_80 and sm_90 (NVRTC's options included), and
every kernel name the Python wrappers launch is an entry point of its cubin."""
import importlib
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

# gpunet.ops re-exports the function under the module's name: fetch the module itself.
ce_mod = importlib.import_module("gpunet.ops.softmax_cross_entropy")
KERNELS = sorted((ROOT / "kernels").glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]
ENTRIES = {
    "softmax_cross_entropy": [f"ce_{size}_{dt}_{lab}" for size in ("small", "large")
                              for dt in ("f32", "f64", "f16", "bf16") for lab in ("i32", "i64", "soft")],
    "relu": [f"{op}_{dt}" for op in ("relu_backward", "leaky_relu_backward", "relu_pack_mask",
                                      "relu_backward_mask") for dt in ("f32", "f64", "f16", "bf16")],
    "fused_optim": [f"{op}_{dt}" for op in ("sgd_step", "adam_step") for dt in ("f32", "f64")],
}
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc not on PATH (CI's .ci/run compiles the kernels where it is)")


def test_kernel_sources_present():
    assert {p.stem for p in KERNELS} >= set(ENTRIES)


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cu", KERNELS, ids=lambda p: p.name)
def test_compiles(cu, arch, tmp_path):
    cubin = tmp_path / f"{cu.stem}.{arch}.cubin"
    cmd = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-ftz=true", "-o", str(cubin), str(cu)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
    data = cubin.read_bytes()
    for name in ENTRIES.get(cu.stem, []):
        assert name.encode() + b"\0" in data, f"{cu.name}: entry point {name} missing from the {arch} cubin"


def test_softmax_ce_flags_match_the_kernel():
    src = (ROOT / "kernels" / "softmax_cross_entropy.cu").read_text()
    defined = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define (CE_\w+) (\d+)", src)}
    assert defined == {name: getattr(ce_mod, name) for name in defined}
    assert set(defined) == {"CE_WANT_GRAD", "CE_HAS_IGNORE", "CE_MEAN", "CE_WANT_CORRECT", "CE_VEC"}


def test_fused_optim_flags_match_the_kernel():
    from gpunet.ops import optim_step
    src = (ROOT / "kernels" / "fused_optim.cu").read_text()
    defined = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define ((?:SGD|ADAM|LP)_\w+) (\d+)", src)}
    assert defined == {name: getattr(optim_step, name) for name in defined}
    assert len(defined) == 8
