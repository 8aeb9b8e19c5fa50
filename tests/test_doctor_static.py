"""Static doctor checks: each classic mistake is named by its code; correct setups raise nothing."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import data, doctor, losses, models, nn, optim


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def batch(ds, n=128, scale=1 / 255, shape=None):
    """A (x, y) batch of digits as the DataLoader yields it (x scaled by `scale`)."""
    x = ds.x[:n].astype(np.float32)[:, None] * (1.0 if scale is None else scale)
    return (x if shape is None else x.reshape(shape)), ds.y[:n]


def codes(findings, at_least="warning"):
    return {f.code.split("-")[0] for f in findings if f.level >= doctor.SEVERITIES.index(at_least)}


def sgd(model, lr=0.05, **kw):
    return optim.SGD(model.parameters(), lr=lr, momentum=0.9, **kw)


CE = losses.SoftmaxCrossEntropy


@pytest.mark.parametrize("build", [
    lambda: models.softmax_regression(64, 10),                    # zero init, no hidden layer: fine
    lambda: models.mlp([64, 256, 128, 10]),
    lambda: models.mlp([64, 32, 10], dropout=0.5),
    lambda: models.small_cnn(1, 10, image_size=8),
], ids=["softmax_regression", "mlp", "mlp_dropout", "small_cnn"])
def test_zoo_defaults_raise_nothing(digits, build):
    model = build()
    assert codes(doctor.check_model(model, batch(digits), CE(), sgd(model))) == set()


def test_tf_cifar10_cnn_on_scaled_pixels_raises_nothing():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 3, 24, 24)).astype(np.float32) / 255
    model = models.tf_cifar10_cnn()
    found = doctor.check_model(model, (x, rng.integers(0, 10, 32)), CE(), sgd(model, lr=0.01))
    assert codes(found) == set()


def test_symmetric_init_zeros_and_constant(digits):
    for init in ("zeros", "ones"):
        model = models.mlp([64, 32, 16, 10], init=init)
        found = [f for f in doctor.check_model(model, batch(digits), CE()) if f.code == "GN101-symmetric-init"]
        assert [f.evidence["layer"] for f in found] == ["1", "3"], init  # the output layer is exempt
        assert found[0].severity == "error"


@pytest.mark.parametrize("act", [nn.ReLU, nn.Softmax, nn.Sigmoid])
def test_activation_on_logits(digits, act):
    model = models.mlp([64, 32, 10]).append(act())
    assert "GN102" in codes(doctor.check_model(model, batch(digits), CE()))


def test_sigmoid_before_bce_with_logits(digits):
    model = models.mlp([64, 32, 10]).append(nn.Sigmoid())
    assert "GN102" in codes(doctor.check_model(model, batch(digits), doctor.OneHotLoss(losses.BCEWithLogits(), 10)))


def test_unscaled_pixels(digits):
    model = models.mlp([64, 32, 10])
    found = doctor.check_model(model, batch(digits, scale=None), CE())
    f = next(f for f in found if f.code == "GN103-input-scale")
    assert f.evidence["max"] > 10 and "GN107" in codes(found)  # and the initial loss explodes


def test_preflight_unscaled_loader(digits):
    model = models.mlp([64, 32, 10])
    loader = data.DataLoader(digits, 128, scale=None)
    assert "GN103" in codes(doctor.preflight(model, loader, CE(), sgd(model)))
    assert "GN103" not in codes(doctor.preflight(model, data.DataLoader(digits, 128), CE(), sgd(model)))


def test_mse_on_labels(digits):
    model = models.mlp([64, 32, 10])
    x, y = batch(digits)
    assert "GN104" in codes(doctor.check_model(model, (x, y), doctor.OneHotLoss(losses.MSE(), 10)))
    onehot = np.eye(10, dtype=np.float32)[y]
    assert "GN104" in codes(doctor.check_model(model, (x, onehot), losses.MSE()))
    soft = np.random.default_rng(0).random((len(y), 10)).astype(np.float32)  # a real regression target
    assert "GN104" not in codes(doctor.check_model(model, (x, soft), losses.MSE()))


def test_bce_on_one_of_many(digits):
    model = models.mlp([64, 32, 10])
    x, y = batch(digits)
    assert "GN105" in codes(doctor.check_model(model, (x, y), doctor.OneHotLoss(losses.BCEWithLogits(), 10)))
    multi = (np.random.default_rng(0).random((len(y), 10)) < 0.3).astype(np.float32)  # multi-label: fine
    assert "GN105" not in codes(doctor.check_model(model, (x, multi), losses.BCEWithLogits()))


def test_dead_relu(digits):
    model = models.mlp([64, 32, 10])
    model[1].bias.data[...] = -100.0
    f = next(f for f in doctor.check_model(model, batch(digits), CE()) if f.code == "GN106-dead-relu")
    assert f.evidence["dead_fraction"] == 1.0


def test_initial_loss_far_from_ln_c(digits):
    model = models.mlp([64, 32, 10])
    model[3].weight.data *= 100
    f = next(f for f in doctor.check_model(model, batch(digits), CE()) if f.code == "GN107-init-loss")
    assert f.evidence["expected"] == pytest.approx(np.log(10))


def test_velocity_starting_at_ones(digits):
    model = models.mlp([64, 32, 10])
    assert "GN108" in codes(doctor.check_model(model, batch(digits), CE(), sgd(model, velocity_init="ones")))
    assert "GN108" not in codes(doctor.check_model(model, batch(digits), CE(), sgd(model, velocity_init="grad")))


def test_step_larger_than_weights(digits):
    model = models.mlp([64, 32, 10])
    f = next(f for f in doctor.check_model(model, batch(digits), CE(), sgd(model, lr=1e4))
             if f.code == "GN109-step-too-large")
    assert f.evidence["update_to_weight"] > 1


def test_data_parallel_sum_without_lr_correction(digits):
    model = models.mlp([64, 32, 10])
    opt = sgd(model)
    summed = gn.Trainer(model, CE(), opt, devices=["cpu", "cpu"], reduce="sum")
    f = next(f for f in doctor.preflight(model, digits, CE(), opt, summed) if f.code == "GN110-dp-sum-lr")
    assert f.evidence["replicas"] == 2 and f.evidence["effective_lr"] == pytest.approx(0.1)
    model2 = models.mlp([64, 32, 10])
    opt2 = sgd(model2)
    mean = gn.Trainer(model2, CE(), opt2, devices=["cpu", "cpu"], reduce="mean")
    assert codes(doctor.preflight(model2, digits, CE(), opt2, mean)) == set()


def test_check_model_leaves_no_trace(digits):
    model = models.small_cnn(1, 10, image_size=8, hidden=16)
    opt = sgd(model)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rng_before = gn.device("cpu").rng_state()
    doctor.check_model(model, batch(digits), CE(), opt)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert all(not p.grad.any() for p in model.parameters())
    assert model.training and gn.device("cpu").rng_state() == rng_before and opt.step_count == 0


def test_ignore_and_code_aliases(digits):
    model = models.mlp([64, 32, 10], init="zeros")
    found = doctor.preflight(model, digits, CE(), sgd(model), ignore=("GN101", "dead-relu"))
    assert codes(found) == set()
    assert doctor.code("symmetric-init") == doctor.code("GN101") == "GN101-symmetric-init"
    with pytest.raises(ValueError, match="GN999"):
        doctor.code("GN999")


def test_theory_values():
    assert 10 * doctor.binary_entropy(0.1) == pytest.approx(3.2508, abs=1e-4)   # the 3.24 plateau
    assert doctor.entropy(np.full(10, 0.1)) == pytest.approx(np.log(10))
    vals = doctor.priors_losses(losses.BCEWithLogits(), np.full(10, 0.1))
    assert max(vals.values()) == pytest.approx(3.2508, abs=1e-4)
