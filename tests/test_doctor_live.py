"""LiveDoctor: divergence stops the run (checkpoint intact), plateaus and gradient trouble are named."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import data, doctor, losses, models, nn, optim
from gpunet.callbacks import Callback, ModelCheckpoint
from gpunet.checkpoint import read_checkpoint

CE = losses.SoftmaxCrossEntropy


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def fit(ds, model, loss=None, opt=None, epochs=2, callbacks=(), **kw):
    """Train with a LiveDoctor first in the callbacks (as the Trainer wiring places it)."""
    loss = loss or CE()
    opt = opt or optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    live = doctor.LiveDoctor(verbose=False)
    trainer = gn.Trainer(model, loss, opt, device="cpu", callbacks=[live, *callbacks], **kw)
    doctor.preflight(model, ds, loss, opt, trainer)
    error = None
    try:
        trainer.fit(ds, epochs, 64)
    except gn.NonFiniteError as e:
        error = e
    return live, trainer, error


def codes(live):
    return {f.code.split("-")[0] for f in live.findings if f.level >= 1}


def test_healthy_run_raises_nothing(digits):
    live, trainer, error = fit(digits, models.mlp([64, 128, 10]), epochs=3)
    assert error is None and codes(live) == set()
    assert trainer.history.accuracy[-1] > 0.9
    assert "step" not in vars(trainer.optimizer)  # the gradient sampler is removed after fit


def test_healthy_cnn_raises_nothing(digits):
    live, _, error = fit(digits, models.small_cnn(1, 10, image_size=8, width=8, hidden=32), epochs=1)
    assert error is None and codes(live) == set()


def test_lr_1e4_stops_with_step_and_keeps_last_good_checkpoint(digits, tmp_path):
    model = models.mlp([64, 128, 10])
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ckpt = ModelCheckpoint(tmp_path, monitor="loss", every_n_steps=4)
    live, trainer, error = fit(digits, model, opt=opt, epochs=1, callbacks=[ckpt])
    assert error is None
    good_step = read_checkpoint(ckpt.last_path)[0]["meta"]["global_step"]
    opt.lr = 1e4  # the second epoch diverges: ReLU logits explode to ~1e13, still finite
    with pytest.raises(doctor.DivergenceError, match="diverged") as e:
        trainer.fit(digits, 2, 64)
    f = e.value.finding
    assert f.code in ("GN202-divergence", "GN201-non-finite") and f.step > good_step
    assert str(ckpt.last_path) in f.message
    header, arrays = read_checkpoint(ckpt.last_path)
    assert header["meta"]["global_step"] <= f.evidence["last_good_step"] + 4
    assert all(np.isfinite(a).all() and np.abs(a).max() < 100 for k, a in arrays.items() if k.startswith("model/"))
    assert trainer.stop_training


def test_lr_1e4_from_the_start(digits):
    live, trainer, error = fit(digits, models.mlp([64, 128, 10]),
                               opt=None, epochs=3, callbacks=())
    assert error is None  # control: lr 0.05
    model = models.mlp([64, 128, 10])
    live, trainer, error = fit(digits, model, opt=optim.SGD(model.parameters(), lr=1e4), epochs=3)
    assert isinstance(error, doctor.DivergenceError) and "GN202" in codes(live)
    assert trainer.global_step < 10  # stopped at once, not after three epochs


class PoisonAt(Callback):
    """Writes a NaN into one weight at a given step (a stand-in for an overflow)."""

    def __init__(self, step, layer):
        self.step, self.layer = step, layer

    def on_batch_end(self, step, logs=None):
        if step == self.step:
            self.trainer.model[self.layer].weight.data[0, 0] = np.nan


def test_nan_names_step_layer_and_checkpoint(digits, tmp_path):
    ckpt = ModelCheckpoint(tmp_path, monitor="loss")
    model = models.mlp([64, 128, 10])
    live, trainer, error = fit(digits, model, epochs=1, callbacks=[ckpt])
    poison = PoisonAt(trainer.global_step + 3, layer=3)
    poison.set_trainer(trainer)
    trainer.callbacks.callbacks.append(poison)
    with pytest.raises(gn.NonFiniteError) as e:
        trainer.fit(digits, 2, 64)
    f = next(f for f in live.findings if f.code == "GN201-non-finite")
    assert "3.weight" in f.message and f.evidence["non_finite_params"] >= 1
    assert f.step is not None and str(ckpt.last_path) in f.message
    assert "gpunet doctor" in "".join(getattr(e.value, "__notes__", [])) or not hasattr(e.value, "add_note")
    assert read_checkpoint(ckpt.last_path)[0]["meta"]["epoch"] == 1  # epoch 1's checkpoint is intact


def test_zero_init_plateaus_at_ln_c(digits):
    live, _, _ = fit(digits, models.mlp([64, 64, 32, 10], init="zeros"), epochs=2)
    f = next(f for f in live.findings if f.code == "GN203-priors-plateau")
    assert f.evidence["priors_loss"] == pytest.approx(doctor.entropy(np.bincount(digits.y) / len(digits.y)),
                                                      rel=0.01)


def test_sigmoid_bce_plateaus_at_priors(digits):
    """The 3.24 question: per-class sigmoids + BCE, zero init, learn only the priors H(0.1) per class."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64, init="zeros"), nn.LeakyReLU(),
                          nn.Linear(64, 10, init="zeros"))
    loss = doctor.OneHotLoss(losses.BCEWithLogits(), 10)
    live, _, _ = fit(digits, model, loss=loss, opt=optim.SGD(model.parameters(), lr=1.0, momentum=0.9), epochs=3)
    f = next(f for f in live.findings if f.code == "GN203-priors-plateau")
    assert f.evidence["priors_loss"] == pytest.approx(doctor.binary_entropy(0.1), rel=0.02)


class ShiftedLabels(losses.SoftmaxCrossEntropy):
    """A target bug: the loss sees label y+1, the accuracy sees y."""

    def forward(self, logits, target):
        return super().forward(logits, (target + 1) % logits.shape[1])


def test_loss_falls_while_accuracy_stays_at_chance(digits):
    live, trainer, _ = fit(digits, models.mlp([64, 128, 10]), loss=ShiftedLabels(), epochs=2)
    assert "GN204" in codes(live)
    assert trainer.history.loss[-1] < 1.0 and trainer.history.accuracy[-1] < 0.15


class ScaledGrad(losses.SoftmaxCrossEntropy):
    """Same loss values; the gradient is multiplied by `factor` after `after` backward calls."""

    def __init__(self, after, factor):
        super().__init__()
        self.after, self.factor, self.calls = after, factor, 0

    def backward(self, grad=1.0):
        self.calls += 1
        return super().backward(grad) * (self.factor if self.calls > self.after else 1.0)


def test_exploding_gradient(digits):
    model = models.mlp([64, 64, 10])
    opt = optim.Adam(model.parameters(), lr=1e-3)  # Adam's step ignores the gradient's scale
    live, _, error = fit(digits, model, loss=ScaledGrad(after=10, factor=1e5), opt=opt, epochs=2)
    assert error is None and "GN205" in codes(live)


def test_vanishing_gradient_behind_saturated_sigmoid(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32, init="he_normal"), nn.Sigmoid(), nn.Linear(32, 10))
    model[1].weight.data *= 1e4
    live, _, _ = fit(digits, model, epochs=1)
    f = next(f for f in live.findings if f.code == "GN206-vanishing-gradient")
    assert f.evidence["param"] == "1.weight"


def test_data_parallel_sum_is_reported_live(digits):
    model = models.mlp([64, 32, 10])
    opt = optim.SGD(model.parameters(), lr=0.05)
    live = doctor.LiveDoctor(verbose=False)
    trainer = gn.Trainer(model, CE(), opt, devices=["cpu", "cpu"], reduce="sum", callbacks=[live])
    trainer.fit(digits[:256], 1, 64)
    assert "GN110" in codes(live)


def test_ignored_divergence_does_not_stop(digits):
    model = models.mlp([64, 32, 10])
    live = doctor.LiveDoctor(ignore=("divergence",), verbose=False)
    trainer = gn.Trainer(model, CE(), optim.SGD(model.parameters(), lr=3.0), device="cpu", callbacks=[live])
    try:
        trainer.fit(digits, 1, 64)
    except gn.NonFiniteError as e:
        assert not isinstance(e, doctor.DivergenceError)  # only the Trainer's own NaN stop
    assert "GN202" not in codes(live)
