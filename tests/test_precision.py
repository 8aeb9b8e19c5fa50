"""Mixed precision (gpunet.precision) and fp16 loss scaling (gpunet.loss_scale): the emulated
casts against ml_dtypes/NumPy, the GEMM layers against hand-made references and against real
low-precision arrays, the loss scaler's state machine, skipped steps, exact resume, data
parallel, the CLI flag and the doctor's mixed-precision checks."""
from __future__ import annotations

import copy

import ml_dtypes
import numpy as np
import pytest

import gpunet as gn
from gpunet import precision as P
from gpunet.cli import recipe
from gpunet.doctor import LiveDoctor
from gpunet.errors import CheckpointError, GpunetValueError, NonFiniteError
from gpunet.loss_scale import LossScaler


def _specials():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(4000) * 10.0 ** rng.integers(-8, 8, 4000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.0, 65520.0, 1e-8, 3.4e38, -3.4e38,
                         1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11]])
    return x.astype(np.float32)


def _bits_equal(a, b):
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b)), "NaN positions differ"
    bad = np.flatnonzero(a[~nan].view(np.uint32) != b[~nan].view(np.uint32))
    assert bad.size == 0, f"{bad.size} values differ, first {a[~nan][bad[0]]!r} vs {b[~nan][bad[0]]!r}"


def test_emulated_rounding_matches_the_real_types():
    x = _specials()
    _bits_equal(P.round_bf16(x), x.astype(ml_dtypes.bfloat16).astype(np.float32))
    _bits_equal(P.round_fp16(x), x.astype(np.float16).astype(np.float32))
    m, e = np.frexp(x[np.isfinite(x)].astype(np.float64))  # TF32: 11 significant bits, ties to even
    _bits_equal(P.round_tf32(x[np.isfinite(x)]), np.ldexp(np.round(m * 2 ** 11) / 2 ** 11, e).astype(np.float32))
    assert np.isnan(P.round_tf32(np.array([np.nan], np.float32)))[0]


def _linear(precision, seed=0):
    gn.manual_seed(seed)
    layer = gn.nn.Linear(48, 24, init="he_normal", bias_init="ones")
    P.apply(gn.nn.Sequential(layer), precision)
    return layer


@pytest.mark.parametrize("name", ["bf16", "fp16", "tf32"])
def test_linear_gemms_round_operands_and_results(name):
    rnd = {"bf16": P.round_bf16, "fp16": P.round_fp16, "tf32": P.round_tf32}[name]
    out = rnd if name != "tf32" else (lambda a: a)  # tf32: float32 results
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((16, 48)).astype(np.float32), rng.standard_normal((16, 24)).astype(np.float32)
    layer = _linear(name)
    w, b = layer.weight.data.copy(), layer.bias.data.copy()
    y = layer.forward(x)
    dx = layer.backward(dy)
    _bits_equal(y, out(rnd(x) @ rnd(w).T) + b)
    _bits_equal(dx, out(rnd(dy) @ rnd(w)))
    _bits_equal(layer.weight.grad, out(rnd(dy).T @ rnd(x)))
    _bits_equal(layer.bias.grad, dy.sum(axis=0))  # reductions stay float32
    assert layer.weight.data.dtype == np.float32 and np.array_equal(layer.weight.data, w)


@pytest.mark.parametrize("name, ulp", [("bf16", 2.0 ** -8), ("fp16", 2.0 ** -11)])
def test_emulation_matches_real_low_precision_arrays(name, ulp):
    """The CPU's emulation against real float16/bfloat16 arrays (the GPU's code path, run by
    NumPy): equal up to summation order, i.e. within 2 units in the last place of the result."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 2, 7, 7)).astype(np.float32)
    runs = []
    for emulate in (True, False):
        gn.manual_seed(3)
        model = gn.nn.Sequential(gn.nn.Conv2d(2, 4, 3, padding=1), gn.nn.ReLU(), gn.nn.Flatten(),
                                 gn.nn.Linear(4 * 49, 5))
        P.apply(model, P.Precision(name, emulate=emulate))
        y = model.forward(x)
        dx = model.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == np.float32
        runs.append([y, dx] + [p.grad.copy() for p in model.parameters()])
    for a, b in zip(*runs):  # NumPy's own bfloat16 matmul also rounds its partial sums: 4 ulps of the largest
        tol = 2 * ulp * np.maximum(np.abs(a), np.abs(b)) + 4 * ulp * np.abs(a).max()
        worst = np.argmax(np.abs(a - b) - tol)
        assert np.all(np.abs(a - b) <= tol), f"worst at {worst}: {a.ravel()[worst]} vs {b.ravel()[worst]}"


def test_precision_refusals(monkeypatch):
    m = gn.nn.Sequential(gn.nn.Linear(4, 2)).to(dtype="float64")
    with pytest.raises(GpunetValueError, match="float32 model"):
        P.apply(m, "bf16")
    assert P.apply(m, "fp32") is None  # float64 runs stay float64
    with pytest.raises(GpunetValueError, match="expected one of"):
        P.resolve("fp8")
    m32 = gn.nn.Sequential(gn.nn.Linear(4, 2, kernel_regularizer=gn.regularizers.L2(1e-3)))
    for bad, match in (("static", "loss_scale expected"), ("dynamic", "layer regularizers")):
        with pytest.raises(GpunetValueError, match=match):
            gn.Trainer(m32, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(m32.parameters(), lr=0.1), device="cpu",
                       precision="fp16", loss_scale=bad)
        assert m32[0].precision is None  # refused before anything changed
    monkeypatch.setattr(P, "_ml_dtypes", lambda: None)
    with pytest.raises(GpunetValueError, match=r"gpunet\[bf16\]"):
        gn.Trainer(m, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(m.parameters(), lr=0.1), device="cpu",
                   precision="bf16")


def test_cli_precision_flag_is_validated():
    assert recipe.resolve({"precision": "fp16"}).precision == "fp16"
    with pytest.raises(GpunetValueError, match="precision"):
        recipe.resolve({"precision": "half"})
    with pytest.raises(GpunetValueError, match="expected dtype float32"):
        recipe.resolve({"precision": "bf16", "dtype": "float64"})


# ---------------------------------------------------------------- the loss scaler

def test_loss_scaler_state_machine():
    s = LossScaler(init_scale=8.0, growth_interval=3, min_scale=1.0, max_scale=32.0)
    trace = []
    for ok in [True, True, True, False, True, True, True, True, True, True, True, True, True,
               False, False, False, False, False]:
        s.update(ok)
        trace.append(s.scale)
    assert trace == [8, 8, 16, 8, 8, 8, 16, 16, 16, 32, 32, 32, 32, 16, 8, 4, 2, 1]
    assert (s.steps, s.skipped, s.skipped_in_a_row, s.at_floor) == (18, 6, 5, True)
    s.update(False)
    assert s.scale == 1.0  # the floor holds
    g = [np.array([2.0, np.inf], np.float32)]
    assert not s.check(g) and s.found_inf
    for bad in (dict(init_scale=0), dict(growth_factor=1.0), dict(backoff_factor=1.5), dict(growth_interval=0),
                dict(init_scale=2.0 ** 30)):
        with pytest.raises(GpunetValueError):
            LossScaler(**bad)
    with pytest.raises(CheckpointError, match="scale"):
        LossScaler().load_state_dict({**s.state_dict(), "scale": -1.0})


def _mlp(seed=0):
    gn.manual_seed(seed)
    return gn.nn.Sequential(gn.nn.Linear(12, 16, init="he_normal"), gn.nn.ReLU(), gn.nn.Linear(16, 3))


def _data(n=48, scale=1.0):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((n, 12)) * (255 * scale)).astype(np.float32)  # the DataLoader divides by 255
    return gn.data.Dataset(x, rng.integers(0, 3, n), [0, 1, 2])


def test_skipped_step_leaves_weights_and_optimizer_state_unchanged():
    model = _mlp()
    opt = gn.optim.Adam(model.parameters(), lr=0.01)
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", precision="fp16", doctor=False,
                   loss_scale=LossScaler(init_scale=1.0))
    x, y = _data().x[:16] / 255, _data().y[:16]
    t.engine.train_step(x, y)  # a good step first: Adam then has moments to keep
    assert t.loss_scaler.skipped == 0 and opt.state_dict()["step"] == 1
    weights, state = [p.data.copy() for p in model.parameters()], copy.deepcopy(opt.state_dict())
    t.loss_scaler.scale = 2.0 ** 24  # 2^24 × dlogits is beyond fp16's 65504: this step overflows
    t.engine.train_step(x, y)
    assert (t.loss_scaler.skipped, t.loss_scaler.scale) == (1, 2.0 ** 23)
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))
    after = opt.state_dict()
    assert after["step"] == state["step"] == 1 and after["buffers"].keys() == state["buffers"].keys()
    for k, v in state["buffers"].items():
        assert np.array_equal(v, after["buffers"][k]), k
    assert all(not p.grad.any() for p in model.parameters())  # zeroed for the next step
    t.engine.train_step(x, y)  # 2^23 still overflows; the scale keeps halving until a step fits
    assert t.loss_scaler.skipped == 2


def test_resume_with_a_loss_scaler_is_exact(tmp_path):
    def trainer():
        model = _mlp()
        return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(model.parameters(), lr=0.1,
                                                                                momentum=0.9),
                          device="cpu", precision="fp16", doctor=False,
                          loss_scale=LossScaler(init_scale=2.0 ** 20, growth_interval=2))
    a = trainer()
    a.fit(_data(), epochs=2, batch_size=8)
    b = trainer()
    b.fit(_data(), epochs=1, batch_size=8)
    b.save(tmp_path / "c.npz")
    c = trainer()
    c.resume(tmp_path / "c.npz")
    assert c.loss_scaler.state_dict() == b.loss_scaler.state_dict()
    c.fit(_data(), epochs=2, batch_size=8)
    assert a.loss_scaler.skipped > 0 and c.loss_scaler.state_dict() == a.loss_scaler.state_dict()
    for p, q in zip(a.model.parameters(), c.model.parameters()):
        assert np.array_equal(p.data, q.data)
    bf = gn.Trainer(_mlp(), gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(_mlp().parameters(), lr=0.1),
                    device="cpu", precision="bf16", doctor=False)
    w = [p.data.copy() for p in bf.model.parameters()]
    with pytest.raises(CheckpointError, match="precision='fp16'"):
        bf.resume(tmp_path / "c.npz")
    assert all(np.array_equal(v, p.data) for v, p in zip(w, bf.model.parameters()))


# ---------------------------------------------------------------- overflow: with and without scaling

def _overflowing(loss_scale, doctor=False):
    """Unnormalized inputs (×1e4) and a summed loss: fp16 weight gradients reach ~9e4 > 65504
    at scale 1, while the forward pass stays in range (logits ~3e4)."""
    model = _mlp()
    opt = gn.optim.SGD(model.parameters(), lr=1e-7)
    callbacks = [LiveDoctor(verbose=False)] if doctor else []
    return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(reduction="sum"), opt, device="cpu", precision="fp16",
                      loss_scale=loss_scale, doctor=False, callbacks=callbacks, log_every=1)


def test_fp16_with_loss_scaling_survives_a_run_that_overflows_without_it():
    data = _data(96, scale=1e4)
    plain = _overflowing(None, doctor=True)
    with pytest.raises(NonFiniteError):
        plain.fit(data, epochs=2, batch_size=32)
    assert "GN207-fp16-overflow" in [f.code for f in plain.callbacks.callbacks[1].findings]
    scaled = _overflowing(LossScaler(init_scale=4.0))  # from 2^16 it would take 17 skips to get below 1
    h = scaled.fit(data, epochs=3, batch_size=16)
    s = scaled.loss_scaler
    assert s.skipped > 0 and s.scale < 1.0, s  # backed off below 1: the gradients needed it
    assert all(np.isfinite(p.data).all() for p in scaled.model.parameters())
    assert h.epochs[-1]["loss"] < h.epochs[0]["loss"]


def test_doctor_reports_a_loss_scale_stuck_at_its_floor():
    t = _overflowing(LossScaler(init_scale=1.0, min_scale=1.0), doctor=True)
    w = [p.data.copy() for p in t.model.parameters()]
    t.fit(_data(96, scale=1e4), epochs=1, batch_size=32)
    doctor = t.callbacks.callbacks[1]
    assert [f.code for f in doctor.findings] == ["GN208-loss-scale-floor"]
    assert t.loss_scaler.skipped == 3 and all(np.array_equal(v, p.data) for v, p in zip(w, t.model.parameters()))


def test_data_parallel_replicas_decide_skips_alike():
    model = _mlp()
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                   devices=["cpu", "cpu"], precision="fp16", doctor=False,
                   loss_scale=LossScaler(init_scale=2.0 ** 22, growth_interval=2))
    t.fit(_data(), epochs=2, batch_size=16)
    s = t.loss_scaler
    assert s.steps == 6 and s.skipped > 0
    t.engine.check_replicas()
    assert all(r.model[0].precision is t.model[0].precision is not None for r in t.engine.replicas)


@pytest.mark.parametrize("prec", ["bf16", "fp16"])
def test_bench_gpunet_at_low_precision_matches_torch_autocast(prec):
    """`gpunet bench train --precision`: gpunet's emulated bf16/fp16 against PyTorch's
    torch.autocast (fp16: with GradScaler) on the CPU, same weights and batches: the loss
    curves agree to 1e-2 relative over 6 steps (float32 runs agree to 1e-3, float64 to 1e-9)."""
    import argparse

    from gpunet.bench import torch_twin
    from gpunet.bench import train as bt
    if not torch_twin.available():
        pytest.skip("PyTorch is not installed: no autocast reference")
    w = bt.Workload("tiny-cnn", lambda: gn.models.small_cnn(1, 10, image_size=8, width=4, hidden=8),
                    bt.random_images((1, 8, 8)), 8, lr=0.05)
    args = argparse.Namespace(warmup=1, seconds=0.01, rounds=2, pool=3, seed=0, check_steps=6, check_rtol=1e-2,
                              precision=prec)
    row = bt.run_workload(w, gn.device("cpu"), args, with_torch=True)
    assert row["check"]["ok"], row["check"]
    assert row["precision"] == prec and row["torch_precision"].startswith("torch.autocast")


# ---------------------------------------------------------------- on a GPU (real low-precision arrays)

@pytest.mark.gpu
@pytest.mark.parametrize("name, ulp", [("bf16", 2.0 ** -8), ("fp16", 2.0 ** -11), ("tf32", 2.0 ** -11)])
def test_gpu_gemm_layers_match_the_cpu_emulation(name, ulp):
    """CuPy's real float16/bfloat16 operands (tensor cores, float32 accumulation) and TF32 mode
    give the CPU emulation's numbers up to summation order: within 2 ulps plus 2 ulps of the
    largest value (results of K-term sums)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 2, 7, 7)).astype(np.float32)
    runs = []
    for device in ("cpu", "cuda"):
        gn.manual_seed(3)
        model = gn.nn.Sequential(gn.nn.Conv2d(2, 4, 3, padding=1), gn.nn.ReLU(), gn.nn.Flatten(),
                                 gn.nn.Linear(4 * 49, 5)).to(device)
        P.apply(model, name)
        dev = gn.device(device)
        y = model.forward(dev.asarray(x))
        dx = model.backward(dev.xp.ones_like(y))
        assert y.dtype == dx.dtype == np.float32 and model[0].weight.data.dtype == np.float32
        runs.append([gn.backend.to_numpy(a) for a in [y, dx] + [p.grad for p in model.parameters()]])
    for a, b in zip(*runs):
        tol = 2 * ulp * np.maximum(np.abs(a), np.abs(b)) + 2 * ulp * np.abs(a).max()
        assert np.all(np.abs(a - b) <= tol), float(np.max(np.abs(a - b) - tol))


@pytest.mark.gpu
def test_gpu_tf32_switch_is_local_to_the_product():
    import cupy
    from cupy._core import _routines_linalg as linalg
    before = linalg.get_compute_type(np.float32)
    a = cupy.ones((4, 4), np.float32)
    assert float(gn.backend.matmul_tf32(a, a)[0, 0]) == 4.0
    assert linalg.get_compute_type(np.float32) == before


@pytest.mark.gpu
def test_gpu_fp16_training_with_loss_scaling():
    model = _mlp()
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(model.parameters(), lr=0.1),
                   device="cuda", precision="fp16", doctor=False, loss_scale=LossScaler(init_scale=2.0 ** 24))
    h = t.fit(_data(), epochs=3, batch_size=8)
    assert t.loss_scaler.skipped > 0 and h.epochs[-1]["loss"] < h.epochs[0]["loss"]


def test_cli_fp16_run_resumes_and_refuses_another_precision(tmp_path):
    import json
    import os
    import subprocess
    import sys

    def gpunet(*args):
        env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="160")
        return subprocess.run([sys.executable, "-m", "gpunet", "train", "--quiet", "--name", "p", "--hidden", "32",
                               *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    r = gpunet("--epochs", "1", "--precision", "fp16")
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "runs" / "p"
    assert json.loads((run / "config.json").read_text())["precision"] == "fp16"
    meta = gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]
    assert meta["precision"] == "fp16" and meta["loss_scaler"]["steps"] == meta["global_step"] > 0
    r = gpunet("--epochs", "2", "--resume", "--precision", "bf16")
    assert r.returncode != 0 and "resume with precision='fp16'" in " ".join((r.stdout + r.stderr).split())
    r = gpunet("--epochs", "2", "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    meta = gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]
    assert meta["epoch"] == 2 and meta["loss_scaler"]["steps"] == meta["global_step"]
    env = dict(os.environ, GPUNET_FORCE_CPU="1")
    ev = subprocess.run([sys.executable, "-m", "gpunet", "evaluate", str(run / "checkpoint-last.npz"), "--json"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    test = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(ln).get("kind") == "test"][-1]
    result = json.loads(ev.stdout)  # evaluated at the run's precision: the run's own test numbers
    assert result["precision"] == "fp16" and result["accuracy"] == test["accuracy"]


@pytest.mark.skipif(not gn.parallel.mpi.mpi_available(), reason='mpi4py is not installed (pip install "gpunet[mpi]")')
def test_two_mpi_ranks_train_fp16_with_one_loss_scale(tmp_path):
    """`gpunet launch --nproc 2 -- gpunet train --precision fp16`: every rank scales, checks the
    all-reduced gradients and skips alike (the job's checksum comparison at each checkpoint
    would stop it otherwise); the scaler's state is in rank 0's checkpoint."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GPUNET_FORCE_CPU="1", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GPUNET_JOB_DIR", "GPUNET_TIMEOUT"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "gpunet", "launch", "--nproc", "2", "--timeout", "10", "--", "gpunet",
                        "train", "--quiet", "--name", "mp", "--hidden", "32", "--epochs", "1", "--precision", "fp16",
                        "--checkpoint-every", "5", "--out", str(tmp_path / "runs")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    meta = gn.checkpoint.read_checkpoint(tmp_path / "runs" / "mp" / "checkpoint-last.npz")[0]["meta"]
    assert meta["precision"] == "fp16" and meta["loss_scaler"]["steps"] == meta["global_step"] > 5
