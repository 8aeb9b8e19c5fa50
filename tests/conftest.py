"""Shared fixtures: one test body runs on every backend.

`dev` is parametrized over "cpu" and "cuda"; the cuda case carries the `gpu` mark
and is skipped, with the probe's reason, where no GPU is usable.
"""
import importlib
import os
import pathlib

import pytest

import gpunet as gn

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "datasets"
if "GPUNET_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["GPUNET_DATA"] = str(SHARED_DATA)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# scripts/gpu_check.sh sets GPUNET_REQUIRE_GPU=1: there, a GPU test that skips (for any
# reason) fails, and GPUNET_SKIP_REPORT names a file listing every skipped test and why.
REQUIRE_GPU = os.environ.get("GPUNET_REQUIRE_GPU", "") not in ("", "0")
_skipped = []


def pytest_collection_modifyitems(config, items):
    if gn.is_gpu_available():
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {gn.gpu_status().reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    _skipped.append((item.nodeid, reason))
    if REQUIRE_GPU and "gpu" in item.keywords:
        rep.outcome = "failed"
        rep.longrepr = f"GPUNET_REQUIRE_GPU=1: a GPU test may not skip, and this one did: {reason}"


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("GPUNET_SKIP_REPORT")
    if path:
        lines = [f"{nodeid}\t{reason}" for nodeid, reason in _skipped]
        pathlib.Path(path).write_text("".join(line + "\n" for line in lines))


@pytest.fixture(params=DEVICES)
def dev(request):
    return gn.device(request.param)


_ce = importlib.import_module("gpunet.ops.softmax_cross_entropy")  # the module, not the function


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from seed 0 with checks off and no pending deferred bad label (the
    kernels' error slots are process-global)."""
    gn.manual_seed(0)
    gn.set_checks(False)
    _ce.reset_error_slots()
    yield
    gn.set_checks(False)
    _ce.reset_error_slots()


def data_root(name):
    """The folder holding dataset `name`, or skip with where to put it."""
    base = os.environ.get("GPUNET_DATA")
    path = pathlib.Path(base) / name if base else None
    if path is None or not path.is_dir():
        pytest.skip(f"dataset {name!r} not found: set GPUNET_DATA to a folder holding {name}/ "
                    f"(the checkout's ../shared/datasets has it)")
    return path
