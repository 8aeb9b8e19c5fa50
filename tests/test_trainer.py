"""Trainer: History, callbacks, early stopping, evaluation, exact resume, divergence."""
import json
import math

import numpy as np
import pytest

import gpunet as gn
from gpunet.callbacks import Callback, EarlyStopping, JSONLLogger, ModelCheckpoint


@pytest.fixture(scope="module")
def digits():
    train = gn.data.load("digits", "train")
    test = gn.data.load("digits", "test")
    return train, test


def make_trainer(callbacks=(), lr=0.05, seed=0, dtype="float64", dropout=0.0, **kw):
    gn.manual_seed(seed)
    model = gn.models.mlp([64, 32, 10], dropout=dropout)
    model.to("cpu", dtype=dtype)
    opt = gn.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), opt, device="cpu", seed=seed,
                      callbacks=callbacks, **kw)


def weights(trainer):
    return {k: v.copy() for k, v in trainer.model.state_dict().items()}


def test_history_contents(digits):
    train, test = digits
    h = make_trainer().fit(train, epochs=3, batch_size=64, val=test)
    assert len(h) == 3
    for field in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s"):
        values = getattr(h, field)
        assert len(values) == 3 and all(v is not None and math.isfinite(v) for v in values), field
    assert h.loss[2] < h.loss[0] and h.val_accuracy[2] > 0.85
    assert h.lr == [0.05] * 3 and [e["epoch"] for e in h.epochs] == [0, 1, 2]
    assert h.history["accuracy"] == h.accuracy


def test_reported_loss_matches_a_separate_evaluation(digits):
    """The epoch loss is the mean over the epoch's samples; evaluate() is the mean over the data."""
    train, _ = digits
    t = make_trainer(lr=1e-9)  # weights barely move, so both see the same function
    h = t.fit(train, epochs=1, batch_size=100)
    ev = t.evaluate(train)
    assert abs(h.loss[0] - ev["loss"]) < 1e-6 and abs(h.accuracy[0] - ev["accuracy"]) < 1e-9


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_batch_end(self, step, logs=None):
        self.events.append(f"batch {step}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch}")

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def test_callbacks_fire_in_order(digits):
    train, _ = digits
    small = gn.data.Dataset(train.x[:40], train.y[:40], train.classes)
    rec = Recorder()
    make_trainer([rec]).fit(small, epochs=2, batch_size=16)  # 3 batches an epoch
    assert rec.events == ["train_begin", "epoch_begin 0", "batch 0", "batch 1", "batch 2", "epoch_end 0",
                          "epoch_begin 1", "batch 3", "batch 4", "batch 5", "epoch_end 1", "train_end"]


def test_early_stopping_stops(digits):
    train, test = digits
    stop = EarlyStopping(monitor="val_accuracy", min_delta=1.0, patience=1)  # can never improve by 1.0
    h = make_trainer([stop]).fit(train, epochs=10, batch_size=64, val=test)
    assert len(h) == 3 and stop.stopped_epoch == 2


def test_early_stopping_needs_its_metric(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="val_loss"):
        make_trainer([EarlyStopping()]).fit(train, epochs=2, batch_size=256)


def test_resume_is_bit_identical(digits, tmp_path):
    """2 epochs, a checkpoint, a new process-like trainer resuming for 2 more == 4 straight."""
    train, test = digits
    straight = make_trainer(dropout=0.2)
    straight.fit(train, epochs=4, batch_size=64, val=test)
    first = make_trainer([ModelCheckpoint(tmp_path)], dropout=0.2)
    first.fit(train, epochs=2, batch_size=64, val=test)
    second = make_trainer(seed=99, dropout=0.2)  # different init: everything must come from the file
    second.resume(tmp_path / "checkpoint-last.npz")
    h = second.fit(train, epochs=4, batch_size=64, val=test)
    a, b = weights(straight), weights(second)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [e["loss"] for e in h.epochs] == straight.history.loss


class InterruptAt(Callback):
    """Simulates a crash right after global step `step` (its step checkpoint is written first)."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, step, logs=None):
        if step == self.step:
            raise KeyboardInterrupt


def test_mid_epoch_resume_is_bit_identical(digits, tmp_path):
    train, _ = digits
    straight = make_trainer()
    straight.fit(train, epochs=2, batch_size=64)  # 23 steps an epoch
    cut = make_trainer([ModelCheckpoint(tmp_path, every_n_steps=7), InterruptAt(13)])
    with pytest.raises(KeyboardInterrupt):
        cut.fit(train, epochs=2, batch_size=64)
    resumed = make_trainer(seed=7)
    meta = resumed.resume(tmp_path / "checkpoint-last.npz")
    assert meta["epoch"] == 0 and meta["batch_in_epoch"] == 14 and meta["global_step"] == 14
    h = resumed.fit(train, epochs=2, batch_size=64)
    a, b = weights(straight), weights(resumed)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert h.loss == straight.history.loss and h.accuracy == straight.history.accuracy


def test_divergence_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
    train, _ = digits
    t = make_trainer([ModelCheckpoint(tmp_path, monitor="loss")], lr=1e-3, dtype="float32")
    t.fit(train, epochs=1, batch_size=64)
    good = (tmp_path / "checkpoint-last.npz").read_bytes()
    t.optimizer.lr = 1e30  # float32 weights overflow: inf - inf gives NaN within the epoch
    with pytest.raises(gn.NonFiniteError, match="diverged") as e, np.errstate(all="ignore"):
        t.fit(train, epochs=3, batch_size=64)
    assert "epoch 1" in str(e.value)
    assert (tmp_path / "checkpoint-last.npz").read_bytes() == good
    resumed = make_trainer(lr=1e-3, dtype="float32")
    assert resumed.resume(tmp_path / "checkpoint-last.npz")["epoch"] == 1


def test_metrics_file_parses(digits, tmp_path):
    train, test = digits
    make_trainer([JSONLLogger(tmp_path / "m.jsonl")]).fit(train, epochs=2, batch_size=32, val=test)
    lines = [json.loads(l) for l in (tmp_path / "m.jsonl").read_text().splitlines()]
    epochs = [l for l in lines if l["kind"] == "epoch"]
    steps = [l for l in lines if l["kind"] == "step"]
    assert len(epochs) == 2 and {"loss", "val_accuracy", "lr", "seconds"} <= set(epochs[0])
    assert 10 <= len(steps) <= 40 and all("loss" in s for s in steps)


def test_regularization_penalty_is_in_the_reported_loss(digits):
    train, _ = digits
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Flatten(), gn.nn.Linear(64, 10, kernel_regularizer=gn.regularizers.L2(0.5)))
    model.to("cpu", dtype="float64")
    t = gn.Trainer(model, gn.losses.SoftmaxCrossEntropy(), gn.optim.SGD(model.parameters(), lr=1e-12),
                   device="cpu")
    plain = gn.losses.SoftmaxCrossEntropy()
    x = gn.data.DataLoader(train, len(train), shuffle=False, dtype=np.float64)
    xb, yb = next(iter(x))
    expected = float(plain.forward(model.forward(xb), yb)) + 0.5 * float((model[1].weight.data ** 2).sum())
    assert abs(t.evaluate(train)["loss"] - expected) < 1e-9


def test_bad_arguments():
    with pytest.raises(ValueError, match="metrics"):
        make_trainer(metrics=("f1",))
    t = make_trainer()
    with pytest.raises(ValueError, match="epochs"):
        t.fit(gn.data.load("digits"), epochs=0)
    with pytest.raises(TypeError, match="Dataset"):
        t.fit(np.zeros((3, 3)), epochs=1)
