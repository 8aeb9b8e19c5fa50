"""gpunet train's conveniences: --schedule, --early-stopping, --clip-grad-norm, --augment, --log;
plain progress lines in pipes; Ctrl-C says how to resume; --resume of a finished run."""
from __future__ import annotations

import csv
import io
import json
import struct

import numpy as np
import pytest

import gpunet as gn
from gpunet.callbacks import ClipGradNorm, EarlyStopping, PlainProgress, epoch_line
from gpunet.cli import main, recipe
from gpunet.cli import train as train_cli


def _events(folder):
    """(tag, step, value) of every scalar in the TensorBoard event files under `folder`."""
    from tensorboardX.proto import event_pb2
    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw = path.read_bytes()
        i = 0
        while i < len(raw):
            (n,) = struct.unpack("<Q", raw[i:i + 8])
            ev = event_pb2.Event.FromString(raw[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.append((v.tag, ev.step, v.simple_value))
    return out


def test_conveniences_end_to_end(tmp_path, capsys):
    args = ["train", "--epochs", "4", "--out", str(tmp_path), "--no-doctor", "--schedule", "cosine",
            "--clip-grad-norm", "1.0", "--augment", "--log", "csv,tensorboard", "--early-stopping", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "digits-mlp"
    hist = json.loads((run / "history.json").read_text())
    lrs = [e["lr"] for e in hist]
    cos = gn.optim.Cosine(total=4)
    assert lrs == pytest.approx([cos.lr_at(t, 0.05) for t in range(4)])  # the schedule took effect
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["loss"]) for r in rows] == pytest.approx([e["loss"] for e in hist])
    scalars = _events(run / "tensorboard")
    val = sorted((s, v) for t, s, v in scalars if t == "epoch/val_accuracy")
    assert val == [(i + 1, pytest.approx(e["val_accuracy"], rel=1e-6)) for i, e in enumerate(hist)]
    # stdout is not a terminal here: one plain line per epoch, each within 80 columns
    epoch_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ") and "/4 " in ln]
    assert len(epoch_lines) == 4 and max(map(len, out.splitlines())) <= 80
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["schedule"] == "cosine" and cfg["augment"] is True and cfg["log"] == "csv,tensorboard"


def test_early_stopping_stops_and_clip_limits_the_norm():
    cfg = recipe.resolve({"early_stopping": 2, "clip_grad_norm": 0.5})
    cbs = train_cli.extra_callbacks(cfg, None)
    es = next(c for c in cbs if isinstance(c, EarlyStopping))
    assert es.patience == 2 and es.monitor == "val_loss"
    clip = next(c for c in cbs if isinstance(c, ClipGradNorm))
    model = gn.models.mlp([4, 3, 2])
    for p in model.parameters():
        p.grad[...] = 10.0
    clip.trainer = type("T", (), {"model": model})()
    clip.on_before_optimizer_step(0)
    norm = np.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in model.parameters()))
    assert norm == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(gn.GpunetValueError, match="early_stopping expected a validation split"):
        recipe.resolve({"early_stopping": 2, "val_fraction": 0.0})


def test_augment_crops_and_flips_only_where_it_should():
    assert recipe.augmentation(recipe.resolve({}), (1, 8, 8)) is None
    digits = recipe.augmentation(recipe.resolve({"augment": True}), (1, 8, 8))
    assert type(digits).__name__ == "RandomCrop" and digits.size == (8, 8) and digits.padding == 1
    fashion = recipe.augmentation(recipe.resolve({"augment": True, "dataset": "fashion-mnist"}), (1, 28, 28))
    assert [type(t).__name__ for t in fashion.transforms] == ["RandomCrop", "RandomFlip"]
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    y = digits(x)
    assert y.shape == x.shape and not np.array_equal(y, x)


def test_schedules_and_the_extension_point():
    assert recipe.schedule(recipe.resolve({})) is None
    step = recipe.schedule(recipe.resolve({"schedule": "step", "epochs": 9}))
    assert [step.lr_at(t, 1.0) for t in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])
    with pytest.raises(gn.GpunetValueError, match="schedule expected one of"):
        recipe.resolve({"schedule": "cyclic"})
    with pytest.raises(gn.GpunetValueError, match="log expected one of"):
        recipe.resolve({"log": "wandb"})


def _history(run):
    return json.loads((run / "history.json").read_text())


def test_onecycle_steps_the_lr_every_optimizer_step(tmp_path, capsys):
    args = ["train", "--epochs", "3", "--batch-size", "256", "--out", str(tmp_path), "--no-doctor",
            "--schedule", "onecycle"]
    assert main(args) == 0
    capsys.readouterr()
    train_set = recipe.datasets(recipe.resolve({}))[0]
    steps = -(-len(train_set) // 256)
    cycle = gn.optim.OneCycle(3 * steps)
    hist = _history(tmp_path / "digits-mlp")
    # each epoch's lr is the schedule at its first step: stepped per optimizer step, not per epoch
    assert [e["lr"] for e in hist] == pytest.approx([cycle.lr_at(e * steps, 0.05) for e in range(3)])
    assert hist[1]["lr"] > hist[2]["lr"] > hist[0]["lr"] == pytest.approx(0.05 / 25)
    sched = recipe.schedule(recipe.resolve({"schedule": "onecycle", "epochs": 3}),
                            gn.optim.SGD(gn.models.mlp([4, 2]).parameters(), lr=0.05), steps)
    assert sched.unit == "step" and sched.schedule.total_steps == 3 * steps and sched.momentum == 0.95
    opt = gn.optim.Adagrad(gn.models.mlp([4, 2]).parameters(), lr=0.05)
    adagrad = recipe.schedule(recipe.resolve({"schedule": "onecycle", "optimizer": "adagrad"}), opt, steps)
    assert adagrad.momentum is None and adagrad.lr == pytest.approx(0.05 / 25)  # no momentum to cycle
    gn.optim.StepScheduler([opt], scale=2, schedule=adagrad)  # the Trainer's: linear scaling, applied once
    assert opt.lr == pytest.approx(0.1 / 25)
    with pytest.raises(gn.GpunetValueError, match="--momentum does not apply with --schedule onecycle"):
        recipe.check_applicable(recipe.resolve({"schedule": "onecycle", "momentum": 0.5}), {"momentum"})


def test_multistep_and_plateau_schedules(tmp_path, capsys):
    assert main(["train", "--epochs", "4", "--batch-size", "256", "--out", str(tmp_path), "--no-doctor",
                 "--schedule", "multistep", "--name", "m"]) == 0
    assert [e["lr"] for e in _history(tmp_path / "m")] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert recipe.multistep_milestones(1) == [1] and recipe.multistep_milestones(20) == [10, 15]
    # plateau: a high lr that leaves val_loss worse for more than 2 epochs, then ×0.1
    assert main(["train", "--epochs", "6", "--batch-size", "128", "--lr", "0.5", "--out", str(tmp_path),
                 "--no-doctor", "--schedule", "plateau", "--name", "p"]) == 0
    capsys.readouterr()
    hist = _history(tmp_path / "p")
    replay = gn.optim.ReduceLROnPlateau(gn.optim.SGD(gn.models.mlp([4, 2]).parameters(), lr=0.5), **recipe.PLATEAU)
    expected = []
    for e in hist:
        expected.append(replay.lr)
        replay.step(e["val_loss"])
    assert [e["lr"] for e in hist] == pytest.approx(expected)
    assert min(expected) == pytest.approx(0.05)  # the plateau was reached and the lr lowered
    with pytest.raises(gn.GpunetValueError, match="schedule plateau expected a validation split"):
        recipe.resolve({"schedule": "plateau", "val_fraction": 0.0})


def test_one_replica_settings_refused_under_data_parallel():
    for flag, value in (("clip_grad_norm", 1.0), ("augment", True), ("early_stopping", 2)):
        with pytest.raises(gn.GpunetValueError, match="applies to single-device runs"):
            recipe.check_applicable(recipe.resolve({flag: value}), {flag}, replicas=2)


def test_plain_progress_prints_every_interval_with_the_run_eta():
    t = [0.0]
    buf = io.StringIO()
    p = PlainProgress(epochs=2, steps_per_epoch=100, stream=buf, every_s=10.0, clock=lambda: t[0])
    p.on_train_begin()
    p.on_epoch_begin(0)
    for b in range(100):
        t[0] += 0.5  # 0.5 s a step: a line every 20 steps
        p.on_batch_end(b, {"epoch": 0, "batch": b, **({"loss": 1.5} if b == 9 else {})})
    p.on_epoch_end(0, {"loss": 1.25, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.625})
    lines = buf.getvalue().splitlines()
    assert lines[0] == "epoch 1/2 step 20/100 loss 1.5000 2.0 steps/s eta 0:01:30"
    assert len(lines) == 6
    assert lines[-1] == "epoch 1/2 loss 1.2500 acc 0.5000 val_loss 1.0000 val_acc 0.6250 eta 0:00:50"
    assert len(epoch_line(998, 999, {"loss": 1, "accuracy": 1, "val_loss": 1, "val_accuracy": 1}, 3600)) <= 80


def test_resume_of_a_finished_run_says_so(tmp_path, capsys):
    base = ["train", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-doctor"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the run is finished (1 of 1 epochs done); nothing to do. To train longer, give --epochs N with N > 1" in out


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(gn.Trainer, "fit", interrupted)
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--name", "r", "--quiet", "--no-doctor"]) == 130
    out = " ".join(capsys.readouterr().out.split())  # rich may wrap a long path
    assert "interrupted at epoch 1, step 0." in out
    assert f"gpunet train --out {tmp_path} --name r --resume" in out


def test_rich_progress_fits_80_columns_and_leaves_epoch_lines():
    from rich.console import Console
    from gpunet.callbacks import RichProgress
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system=None)
    bar = RichProgress(epochs=2, steps_per_epoch=5, console=console)
    bar.trainer = type("T", (), {"optimizer": type("O", (), {"lr": 0.1})()})()
    bar.on_train_begin()
    for e in range(2):
        bar.on_epoch_begin(e)
        for b in range(5):
            bar.on_batch_end(b, {"epoch": e, "batch": b, **({"loss": 0.5, "accuracy": 0.75} if b == 2 else {})})
        bar.on_epoch_end(e, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.25, "val_accuracy": 0.875})
    bar.on_train_end()
    text = buf.getvalue()
    assert "epoch 1/2 loss 0.5000 acc 0.7500 val_loss 0.2500 val_acc 0.8750 eta " in text
    assert "epoch 2/2 loss 0.5000 acc 0.7500 val_loss 0.2500 val_acc 0.8750\n" in text
    import re
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert max(len(ln) for ln in plain.replace("\r", "\n").splitlines()) <= 80


def test_accumulate_gives_the_same_step_as_the_whole_batch():
    from gpunet.step import LocalEngine
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 1, 4, 4))
    y = rng.integers(0, 3, 10)
    params = []
    for k in (1, 3, 10):  # 3 micro-batches of 3, 3, 4 rows; 10 of one row
        gn.manual_seed(0)
        model = gn.models.mlp([16, 8, 3]).to("cpu", dtype="float64")
        opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        engine = LocalEngine(model, gn.losses.SoftmaxCrossEntropy(), opt, "cpu", accumulate=k)
        loss, correct = engine.train_step(x, y)
        params.append(([p.data.copy() for p in model.parameters()], float(loss), int(correct)))
    for other in params[1:]:
        assert other[1] == pytest.approx(params[0][1], rel=1e-12) and other[2] == params[0][2]
        for a, b in zip(params[0][0], other[0]):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
    with pytest.raises(gn.GpunetValueError, match="accumulate expected an int >= 1"):
        LocalEngine(gn.models.mlp([4, 2]), gn.losses.SoftmaxCrossEntropy(),
                    gn.optim.SGD(gn.models.mlp([4, 2]).parameters(), lr=0.1), "cpu", accumulate=0)


def test_accumulate_from_the_cli(tmp_path):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-doctor", "--accumulate", "4",
                 "--dtype", "float64", "--name", "acc"]) == 0
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-doctor",
                 "--dtype", "float64", "--name", "one"]) == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text())[0] for n in ("acc", "one"))
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-9)
    with pytest.raises(gn.GpunetValueError, match="accumulate expected a value in"):
        recipe.resolve({"accumulate": 65})


def test_tensorboard_without_tensorboardx_is_refused_before_any_file(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    assert main(["train", "--log", "tensorboard", "--out", str(tmp_path)]) == 2
    assert "pip install tensorboardX" in " ".join(capsys.readouterr().out.split())
    assert list(tmp_path.iterdir()) == []
