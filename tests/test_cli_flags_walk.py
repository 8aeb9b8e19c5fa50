"""Every flag of `gpunet train`, against every zoo model and optimizer: it changes what is
built (model, optimizer, device, data split, run folder) or it is refused with a reason."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gpunet as gn
from gpunet import data, models, optim
from gpunet.cli import recipe
from gpunet.cli import train as train_cli
from gpunet.errors import DeviceError, GpunetValueError

# One non-default value per TrainConfig field. A new field must be added here (and so walked).
ALT = {"dataset": "mnist", "model": "small_cnn", "hidden": "32", "epochs": 3, "batch_size": 32,
       "lr": 0.01, "optimizer": "adam", "momentum": 0.5, "weight_decay": 1e-4, "init": "zeros",
       "dropout": 0.5, "dtype": "float64", "device": "cuda", "seed": 1, "val_fraction": 0.2,
       "out": "elsewhere", "name": "mine", "resume": True, "checkpoint_every": 5, "data_root": "/nowhere",
       "devices": "cpu,cpu", "reduce": "sum", "lr_scaling": "linear", "warmup_epochs": 1.0, "threads": 2,
       "schedule": "cosine", "early_stopping": 2, "clip_grad_norm": 1.0, "augment": True, "log": "csv",
       "accumulate": 4, "precision": "bf16", "fused": True}
MODEL_FLAGS = ("hidden", "dropout", "init", "seed", "dtype")
OPT_FLAGS = ("lr", "momentum", "weight_decay", "optimizer", "fused")
SHAPES = {"mlp": (1, 8, 8), "softmax_regression": (1, 8, 8), "small_cnn": (1, 8, 8), "tf_cifar10_cnn": (3, 24, 24),
          "resnet20": (1, 8, 8), "resnet8": (1, 8, 8)}


def test_every_field_is_walked():
    assert set(ALT) == set(recipe.FIELDS)
    assert all(ALT[k] != f.default for k, f in recipe.FIELDS.items())


def _model(cfg):
    gn.manual_seed(cfg.seed)
    m = recipe.build_model(cfg, SHAPES[cfg.model], 10)
    return m.to("cpu", dtype=cfg.dtype)


def _signature(m):
    return ([type(x).__name__ for x in m.modules()],
            [(p.data.dtype.str, p.data.shape, p.data.tobytes()) for p in m.parameters()])


def _cfg(model, opt, **kw):
    return recipe.resolve({"model": model, "optimizer": opt, **kw})


@pytest.mark.parametrize("flag", MODEL_FLAGS)
@pytest.mark.parametrize("model", sorted(models.ZOO))
def test_model_flag_changes_the_model_or_is_refused(flag, model):
    for opt in sorted(optim.OPTIMIZERS):
        base, alt = _cfg(model, opt), _cfg(model, opt, **{flag: ALT[flag]})
        try:
            recipe.check_applicable(alt, {flag})
        except GpunetValueError as e:
            assert f"--{flag} does not apply to --model {model}" in str(e)
            assert flag in recipe.MODEL_SETTINGS and model not in recipe.MODEL_SETTINGS[flag]
            continue
        assert _signature(_model(base)) != _signature(_model(alt)), (flag, model)


@pytest.mark.parametrize("flag", OPT_FLAGS)
@pytest.mark.parametrize("opt", sorted(optim.OPTIMIZERS))
def test_optimizer_flag_changes_the_optimizer_or_is_refused(flag, opt):
    value = ("sgd" if opt != "sgd" else "adam") if flag == "optimizer" else ALT[flag]
    for model in ("mlp", "small_cnn"):
        base, alt = _cfg(model, opt), _cfg(model, opt, **{flag: value})
        try:
            recipe.check_applicable(alt, {flag})
        except GpunetValueError as e:
            assert f"--{flag} does not apply to --optimizer {opt}" in str(e)
            continue
        params = _model(base).parameters()
        a, b = recipe.build_optimizer(base, params), recipe.build_optimizer(alt, params)
        assert (type(a), a.hyper(), a.fused) != (type(b), b.hyper(), b.fused), (flag, opt)


def test_refusals_name_the_flag_the_model_and_why():
    cfg = _cfg("small_cnn", "sgd", init="zeros")
    recipe.check_applicable(cfg, {"init"})  # init reaches the CNN's convolutions now
    assert all(np.all(p.data == 0) for p in _model(cfg).parameters()[:1])
    with pytest.raises(GpunetValueError, match="--hidden does not apply to --model small_cnn: its layer widths"):
        recipe.check_applicable(_cfg("small_cnn", "sgd", hidden="32"), {"hidden"})
    with pytest.raises(GpunetValueError, match="--dropout does not apply to --model tf_cifar10_cnn"):
        recipe.check_applicable(_cfg("tf_cifar10_cnn", "sgd", dropout=0.5), {"dropout"})
    with pytest.raises(GpunetValueError, match="--momentum does not apply to --optimizer adam: Adam"):
        recipe.check_applicable(_cfg("mlp", "adam", momentum=0.5), {"momentum"})


@pytest.mark.parametrize("bad", ["fp16", "bf16", "banana", "float16", "int32"])
def test_unknown_dtype_is_refused_not_float32(bad):
    with pytest.raises(GpunetValueError, match="dtype expected one of"):
        recipe.resolve({"dtype": bad})
    with pytest.raises(GpunetValueError, match="dtype: expected float32 or float64"):
        gn.backend.resolve_dtype(bad)


def test_parallel_only_flags_refused_with_one_replica():
    for flag in recipe.PARALLEL_SETTINGS:
        cfg = recipe.resolve({flag: ALT[flag]})
        with pytest.raises(GpunetValueError, match=f"--{flag.replace('_', '-')} .* applies to data parallel only"):
            recipe.check_applicable(cfg, {flag})
        recipe.check_applicable(cfg, {flag}, replicas=2)  # takes effect with replicas


def test_run_flags_take_effect(tmp_path):
    cfg = recipe.resolve({})
    # device: "cuda" without a GPU fails, with or without gpunet launch (world > 1).
    if not gn.is_gpu_available():
        for world in (1, 2):
            with pytest.raises(DeviceError):
                train_cli.pick_device(recipe.resolve({"device": "cuda"}), world, 0)
    assert train_cli.pick_device(recipe.resolve({"devices": "cpu,cpu"}), 1, 0).name == "cpu"
    # name, out and resume pick the run folder.
    assert train_cli.run_dir(recipe.resolve({"out": str(tmp_path), "name": "mine"})) == tmp_path / "mine"
    (tmp_path / "mine").mkdir()
    assert train_cli.run_dir(recipe.resolve({"out": str(tmp_path), "name": "mine"})) == tmp_path / "mine-2"
    assert train_cli.run_dir(recipe.resolve({"out": str(tmp_path), "name": "mine", "resume": True})) == tmp_path / "mine"
    # val_fraction and seed split the data.
    a = recipe.datasets(cfg)
    b = recipe.datasets(dataclasses.replace(cfg, val_fraction=ALT["val_fraction"]))
    assert len(b[1]) > len(a[1])
    c = recipe.datasets(dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(a[1].y, c[1].y)
    # epochs, batch_size, checkpoint_every, warmup_epochs, dataset, data_root: passed to the Trainer and the
    # loaders; their effect is asserted end to end in test_cli_train.py and test_trainer.py;
    # threads in test_threads.py; schedule, early_stopping, clip_grad_norm, augment, log, accumulate in
    # test_cli_conveniences.py.
    assert {"epochs", "batch_size", "checkpoint_every", "warmup_epochs", "dataset", "data_root"} <= set(ALT)
