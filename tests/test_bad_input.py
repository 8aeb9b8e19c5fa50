"""The bad-input catalogue, part 1: layers, losses, hyperparameters, names and devices.

Every row is one bad input to the public API. For each the test checks that
  1. the error is a gpunet class that is also a ValueError or TypeError,
  2. the message names the argument, what was expected and what was received
     (three substrings per row: `arg`, `expected`, `got`), and
  3. nothing changed: weights, gradients and buffers of the model, the optimizer's
     hyperparameters, step and buffers, and every file under the test's folder are
     byte-identical before and after (`snapshot` / `assert_unchanged`).
Part 2 (files: datasets, checkpoints, configs; and the Trainer) is test_bad_input_io.py.
Adding a case is one line: C(id, world, action, error class, arg, expected, got).
"""
import collections
import hashlib

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend
from gpunet.errors import (DeviceError, GpunetTypeError, GpunetValueError, NonFiniteError,
                           ShapeError)

nn = gn.nn


# ---------------------------------------------------------------- worlds: state an action could damage

class World:
    """A trained model, its optimizer and loss, a good batch (x, y), and a folder of files."""

    def __init__(self, root, dev, model=None, opt=None, loss=None, x=None, y=None):
        self.root, self.dev, self.m, self.opt, self.loss, self.x, self.y = root, dev, model, opt, loss, x, y
        self.trainer = None
        self.extra = {}

    def step(self, x=None, y=None):
        """One training step (forward, loss, backward, update) on (x, y), defaulting to the good batch."""
        x = self.dev.asarray(self.x if x is None else x)
        y = self.dev.asarray(self.y if y is None else y)
        loss = self.loss.forward(self.m.forward(x), y)
        self.m.backward(self.loss.backward())
        self.opt.step()
        self.opt.zero_grad()
        return loss


def f32(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _trained(root, dev, model, opt_cls, x, y, **opt_kw):
    """Move `model` to `dev`, take two steps (non-trivial optimizer state), save good.npz."""
    model.to(dev)
    w = World(root, dev, model, opt_cls(model.parameters(), **opt_kw), gn.losses.SoftmaxCrossEntropy(), x, y)
    w.step()
    w.step()
    gn.save_checkpoint(root / "good.npz", model, w.opt, note="the good checkpoint")
    return w


def cnn_world(root, dev):
    """Every spatial layer type: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Flatten,
    Linear, BatchNorm1d, Tanh, Dropout, Linear. Input (N, 1, 8, 8); Adam state."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Tanh(),
                          nn.Dropout(0.5), nn.Linear(8, 3))
    return _trained(root, dev, model, gn.optim.Adam, f32(4, 1, 8, 8), np.array([0, 1, 2, 1]), lr=1e-2)


def mlp_world(root, dev):
    """Flatten, Linear(16→8), ReLU, Linear(8→10) on (N, 1, 4, 4); SGD with momentum."""
    gn.manual_seed(0)
    model = gn.models.mlp([16, 8, 10])
    return _trained(root, dev, model, gn.optim.SGD, f32(6, 1, 4, 4), np.arange(6) % 10, lr=0.1, momentum=0.9)


def mlp64_world(root, dev):
    """mlp_world in float64, still fed the float32 batch."""
    gn.manual_seed(0)
    model = gn.models.mlp([16, 8, 10]).to(dtype="float64")
    w = _trained(root, dev, model, gn.optim.SGD, f32(6, 1, 4, 4, dtype=np.float64), np.arange(6), lr=0.1)
    w.x = w.x.astype(np.float32)
    return w


def emb_world(root, dev):
    """Embedding(10, 4), Flatten, Linear(12→3), Sigmoid on (N, 3) indices; SGD with momentum."""
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3), nn.LeakyReLU())
    return _trained(root, dev, model, gn.optim.SGD, np.array([[1, 2, 3], [4, 5, 9]]), np.array([0, 2]),
                    lr=0.1, momentum=0.9)


def no_world(root, dev):
    """No model: constructors and lookups. Files under root are still checked."""
    (root / "keep.txt").write_text("a file that must survive")
    return World(root, dev)


WORLDS = {"cnn": cnn_world, "mlp": mlp_world, "mlp64": mlp64_world, "emb": emb_world, "none": no_world}


# ---------------------------------------------------------------- snapshot and the asserts

def _host(a):
    a = backend.to_numpy(a)
    return (a.dtype.str, a.shape, a.tobytes())


def snapshot(w: World) -> dict:
    """Bytes of everything an action must not change."""
    snap = {}
    if w.m is not None:
        snap["model"] = {k: _host(v) for k, v in w.m.state_dict().items()}
        snap["grads"] = {k: _host(p.grad) for k, p in w.m.named_parameters()}
    if w.opt is not None:
        sd = w.opt.state_dict()
        snap["opt"] = (sd["type"], repr(sd["hyper"]), sd["step"], float(w.opt.lr),
                       {k: _host(v) for k, v in sd["buffers"].items()})
    if w.trainer is not None:
        snap["trainer"] = (w.trainer.epoch, w.trainer.global_step, len(w.trainer.history.epochs))
    snap["files"] = {str(p.relative_to(w.root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                                  hashlib.sha256(p.read_bytes()).hexdigest())
                     for p in sorted(w.root.rglob("*")) if p.is_file()}
    snap["dirs"] = sorted(str(p.relative_to(w.root)) for p in w.root.rglob("*") if p.is_dir())
    return snap


def assert_unchanged(before: dict, after: dict) -> None:
    for part in before:
        if part in ("model", "grads"):
            changed = [k for k in before[part] if before[part][k] != after[part].get(k)]
            assert not changed, f"{part} changed by a failed call: {changed}"
        else:
            assert before[part] == after[part], f"{part} changed by a failed call:\n{before[part]}\n{after[part]}"


def assert_message(err, arg, expected, got) -> None:
    """The message names the argument, what was expected and what was received."""
    msg = str(err)
    missing = [f"{what} {needle!r}" for what, needle in (("argument", arg), ("expected", expected),
                                                         ("received", got)) if needle not in msg]
    assert not missing, f"message lacks {', '.join(missing)}:\n  {type(err).__name__}: {msg}"


def assert_gpunet_error(err, cls) -> None:
    assert isinstance(err, cls), f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    assert isinstance(err, gn.GpunetError) and isinstance(err, (ValueError, TypeError)), type(err).__mro__


Case = collections.namedtuple("Case", "id world action error arg expected got")


def C(id, world, action, error, arg, expected, got, marks=()):
    return pytest.param(Case(id, world, action, error, arg, expected, got), id=id, marks=marks)


def run_case(case: Case, root, device="cpu"):
    dev = gn.device(device)
    w = WORLDS[case.world](root, dev) if isinstance(case.world, str) else case.world(root, dev)
    before = snapshot(w)
    with pytest.raises(Exception) as info, np.errstate(all="ignore"):
        case.action(w)
    assert_gpunet_error(info.value, case.error)
    assert_message(info.value, case.arg, case.expected, case.got)
    assert_unchanged(before, snapshot(w))
    return info.value


def _with_checks(fn):
    def act(w):
        with gn.checks():
            return fn(w)
    return act


def _nan_batch(w):
    x = w.x.copy()
    x[1, 0, 2, 3] = np.nan
    return x


def _soft(rows, cols, total=1.0):
    return np.full((rows, cols), total / cols, dtype=np.float32)


SGD, Adam = gn.optim.SGD, gn.optim.Adam
CE = gn.losses.SoftmaxCrossEntropy

# ---------------------------------------------------------------- the catalogue
CATALOGUE = [
    # shapes, at every layer type (the layer belongs to a trained model, so state is checked)
    C("conv2d-channels", "cnn", lambda w: w.m[0](f32(2, 3, 8, 8)), ShapeError, "Conv2d(1→4", "(N, 1, H, W)", "(2, 3, 8, 8)"),
    C("conv2d-rank", "cnn", lambda w: w.m[0](f32(2, 8, 8)), ShapeError, "Conv2d(1→4", "(N, 1, H, W)", "(2, 8, 8)"),
    C("batchnorm2d-channels", "cnn", lambda w: w.m[1](f32(2, 5, 8, 8)), ShapeError, "BatchNorm2d(4)", "(N, 4, H, W)", "(2, 5, 8, 8)"),
    C("maxpool2d-rank", "cnn", lambda w: w.m[3](f32(4, 8, 8)), ShapeError, "MaxPool2d", "(N, C, H, W)", "(4, 8, 8)"),
    C("maxpool2d-window", "cnn", lambda w: w.m[3](f32(2, 4, 1, 1)), ShapeError, "MaxPool2d", "window must fit", "(2, 4, 1, 1)"),
    C("avgpool2d-window", "cnn", lambda w: w.m[4](f32(2, 4, 1, 5)), ShapeError, "AvgPool2d", "window must fit", "(2, 4, 1, 5)"),
    C("flatten-rank", "cnn", lambda w: w.m[5](f32(4)), ShapeError, "Flatten()", "at least 2 dimensions", "(4,)"),
    C("linear-features", "cnn", lambda w: w.m[6](f32(2, 15)), ShapeError, "Linear(16→8)", "(N, 16)", "(2, 15)"),
    C("batchnorm1d-features", "cnn", lambda w: w.m[7](f32(2, 9)), ShapeError, "BatchNorm1d(8)", "(N, 8)", "(2, 9)"),
    C("batchnorm1d-one-sample", "cnn", lambda w: w.m[7](f32(1, 8)), ShapeError, "BatchNorm1d(8)", "more than 1 value per channel", "(1, 8)"),
    C("model-image-size", "mlp", lambda w: w.step(f32(6, 1, 5, 5)), ShapeError, "Linear(16→8)", "(N, 16)", "(6, 25)"),
    C("linear-backward-dy", "emb", lambda w: (w.m(w.x), w.m[2].backward(f32(2, 4))), ShapeError, "dy", "(2, 3)", "(2, 4)"),
    C("backward-before-forward", "none", lambda w: nn.Linear(12, 3).backward(f32(2, 3)), GpunetValueError, "Linear(12→3)", "forward", "backward called before"),
    C("embedding-float-indices", "emb", lambda w: w.step(f32(2, 3)), GpunetTypeError, "Embedding(10, 4)", "integer indices", "float32"),
    C("embedding-index-range", "emb", lambda w: w.step(np.array([[1, 2, 3], [4, 10, 0]])), GpunetValueError, "Embedding(10, 4)", "[0, 10)", "got 10"),
    C("embedding-negative-index", "emb", lambda w: w.step(np.array([[1, -2, 3], [4, 5, 0]])), GpunetValueError, "Embedding(10, 4)", "[0, 10)", "got -2"),
    # dtypes
    C("dtype-mismatch", "cnn", lambda w: w.step(w.x.astype(np.float64)), GpunetTypeError, "Conv2d(1→4", "float32 input", "float64"),
    C("dtype-mismatch-float64-model", "mlp64", lambda w: w.step(), GpunetTypeError, "Linear(16→8)", "float64 input", "float32"),
    C("integer-images", "mlp", lambda w: w.step((w.x * 255).astype(np.uint8)), GpunetTypeError, "Linear(16→8)", "floating input", "uint8"),
    C("integer-into-relu", "cnn", lambda w: w.m[2](np.ones((2, 4), np.int64)), GpunetTypeError, "ReLU()", "floating input", "int64"),
    C("integer-into-tanh", "cnn", lambda w: w.m[8](np.ones((2, 8), np.int32)), GpunetTypeError, "Tanh()", "floating input", "int32"),
    C("integer-into-dropout", "cnn", lambda w: w.m[9](np.ones((2, 8), np.uint8)), GpunetTypeError, "Dropout(p=0.5)", "floating input", "uint8"),
    # labels and targets (a full training step: the update must not happen)
    C("label-out-of-range", "mlp", lambda w: w.step(y=np.array([0, 1, 2, 10, 4, 5])), GpunetValueError, "class labels", "[0, 10)", "got 10 at row 3"),
    C("label-negative", "mlp", lambda w: w.step(y=np.array([0, -1, 2, 3, 4, 5])), GpunetValueError, "class labels", "[0, 10)", "got -1 at row 1"),
    C("label-count", "mlp", lambda w: w.step(y=np.arange(5)), ShapeError, "target", "(N,) = (6,)", "target (5,)"),
    C("label-float-dtype", "mlp", lambda w: w.step(y=np.arange(6.0)), GpunetTypeError, "class labels", "integer", "float64"),
    C("soft-target-classes", "mlp", lambda w: w.step(y=_soft(6, 11)), ShapeError, "soft targets", "(N, C) = (6, 10)", "target (6, 11)"),
    C("soft-target-rows", "mlp", lambda w: w.step(y=_soft(5, 10)), ShapeError, "soft targets", "(N, C) = (6, 10)", "target (5, 10)"),
    C("soft-target-sums", "mlp", _with_checks(lambda w: w.step(y=_soft(6, 10, total=0.5))), GpunetValueError, "soft-target rows", "summing to 1", "got 0.5"),
    C("logits-rank", "none", lambda w: CE().forward(f32(2, 3, 4), np.arange(2)), ShapeError, "logits", "(N, C)", "(2, 3, 4)"),
    C("loss-backward-first", "none", lambda w: CE().backward(), GpunetValueError, "SoftmaxCrossEntropy.backward", "a forward call first", "got none"),
    C("bce-shape", "none", lambda w: gn.losses.BCEWithLogits().forward(f32(4, 1), f32(4, 2)), ShapeError, "target", "pred shape", "target (4, 2)"),
    C("mse-shape", "none", lambda w: gn.losses.MSE().forward(f32(4, 3), f32(3, 3)), ShapeError, "target", "pred shape", "target (3, 3)"),
    C("dice-shape", "none", lambda w: gn.losses.GeneralizedDice().forward(f32(4, 3), f32(4, 2)), ShapeError, "target", "(4, 3)", "(4, 2)"),
    # NaN / Inf with checks on
    C("nan-input", "cnn", _with_checks(lambda w: w.step(_nan_batch(w))), NonFiniteError, "Conv2d(1→4", "non-finite input", "(1, 0, 2, 3)"),
    C("inf-logits", "none", _with_checks(lambda w: CE().forward(np.array([[0, np.inf]], np.float32), np.array([0]))), NonFiniteError, "logits", "finite", "inf at row 0, column 1"),
    # hyperparameters (the trained optimizer must keep its state when a setter refuses)
    C("lr-zero", "mlp", lambda w: SGD(w.m.parameters(), lr=0), GpunetValueError, "lr", "(0.0, inf)", "got 0"),
    C("lr-negative", "mlp", lambda w: Adam(w.m.parameters(), lr=-1e-3), GpunetValueError, "lr", "(0.0, inf)", "got -0.001"),
    C("lr-setter-negative", "mlp", lambda w: setattr(w.opt, "lr", -0.1), GpunetValueError, "lr", "[0.0, inf)", "got -0.1"),
    C("lr-string", "mlp", lambda w: SGD(w.m.parameters(), lr="0.1"), GpunetTypeError, "lr", "real number", "str"),
    C("momentum-one", "mlp", lambda w: SGD(w.m.parameters(), lr=0.1, momentum=1.0), GpunetValueError, "momentum", "[0.0, 1.0)", "got 1.0"),
    C("momentum-negative", "mlp", lambda w: SGD(w.m.parameters(), lr=0.1, momentum=-0.5), GpunetValueError, "momentum", "[0.0, 1.0)", "got -0.5"),
    C("betas", "mlp", lambda w: Adam(w.m.parameters(), betas=(0.9, 1.0)), GpunetValueError, "betas[1]", "[0.0, 1.0)", "got 1.0"),
    C("weight-decay-negative", "mlp", lambda w: SGD(w.m.parameters(), lr=0.1, weight_decay=-1), GpunetValueError, "weight_decay", "[0.0", "got -1"),
    C("dropout-p-one", "none", lambda w: nn.Dropout(1.0), GpunetValueError, "p", "[0.0, 1.0)", "got 1.0"),
    C("dropout-p-negative", "none", lambda w: nn.Dropout(-0.1), GpunetValueError, "p", "[0.0, 1.0)", "got -0.1"),
    C("mlp-dropout", "none", lambda w: gn.models.mlp([4, 3], dropout=1.5), GpunetValueError, "dropout", "[0, 1)", "got 1.5"),
    C("linear-width", "none", lambda w: nn.Linear(0, 3), GpunetValueError, "in_features", "int >= 1", "got 0"),
    # names: the message lists the valid ones
    C("unknown-initializer", "none", lambda w: nn.Linear(3, 2, init="kaiming"), GpunetValueError, "init", "'he_normal'", "'kaiming'"),
    C("unknown-optimizer", "mlp", lambda w: gn.optim.get("lamb", w.m.parameters(), lr=0.1), GpunetValueError, "optimizer", "'adamw', 'nadam', 'radam', 'rmsprop', 'sgd'", "'lamb'"),
    C("unknown-dataset", "none", lambda w: gn.data.load("imagenet", download=False), GpunetValueError, "name", "'fashion-mnist', 'cifar10', 'digits'", "'imagenet'"),
    C("unknown-split", "none", lambda w: gn.data.load("digits", "validation"), GpunetValueError, "split", "'train' or 'test'", "'validation'"),
    C("unknown-activation", "none", lambda w: gn.models.mlp([4, 3], activation="gelu"), GpunetValueError, "activation", "'relu'", "'gelu'"),
    C("unknown-model", "none", lambda w: gn.models.get("resnet50"), GpunetValueError, "model", "'mlp'", "'resnet50'"),
    C("unknown-dtype", "mlp", lambda w: w.m.to(dtype="float16"), GpunetValueError, "dtype", "float32 or float64", "'float16'"),
    # devices
    C("device-cuda-99", "none", lambda w: gn.device("cuda:99"), DeviceError, "device 'cuda:99'", "GPU", "99"),
    C("device-gpu-x", "none", lambda w: gn.device("gpu:x"), DeviceError, "device", '"cuda:N"', "'gpu:x'"),
    C("device-cpu-1", "none", lambda w: gn.device("cpu:1"), DeviceError, "device", '"cpu"', "'cpu:1'"),
    C("device-type", "none", lambda w: gn.device(0), GpunetTypeError, "device", "a string", "int 0"),
    C("model-to-missing-gpu", "mlp", lambda w: w.m.to("cuda:99"), DeviceError, "cuda:99", "GPU", "99"),
    C("trainer-device", "mlp", lambda w: gn.Trainer(w.m, CE(), w.opt, device="gpu:x"), DeviceError, "device", '"cuda:N"', "'gpu:x'"),
]


@pytest.mark.parametrize("case", CATALOGUE)
def test_bad_input(case, tmp_path):
    run_case(case, tmp_path)


def test_catalogue_ids_are_unique():
    ids = [p.id for p in CATALOGUE]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


def test_snapshot_sees_every_kind_of_change(tmp_path):
    """The no-change check can fail: each kind of damage is caught by assert_unchanged."""
    w = mlp_world(tmp_path, gn.device("cpu"))
    damage = [lambda: w.m[1].weight.data.__setitem__((0, 0), 1.5),
              lambda: w.m[1].bias.grad.__setitem__(0, 1.0),
              lambda: w.opt.state[0]["momentum_buffer"].__setitem__((0, 0), 9.0),
              lambda: setattr(w.opt, "step_count", w.opt.step_count + 1),
              lambda: setattr(w.opt, "lr", 0.5),
              lambda: (tmp_path / "good.npz").write_bytes(b"torn"),
              lambda: (tmp_path / "new.tmp").write_bytes(b"")]
    for harm in damage:
        before = snapshot(w)
        harm()
        with pytest.raises(AssertionError, match="changed"):
            assert_unchanged(before, snapshot(w))


# ---------------------------------------------------------------- the GPU kernel path (labels)

GPU_CASES = [
    C("gpu-label-out-of-range", "mlp", _with_checks(lambda w: w.step(y=np.array([0, 1, 2, 3, 4, 12]))), GpunetValueError, "class labels", "[0, 10)", "got 12 at row 5"),
    C("gpu-label-negative", "mlp", _with_checks(lambda w: w.step(y=np.array([0, -7, 2, 3, 4, 5]))), GpunetValueError, "class labels", "[0, 10)", "got -7 at row 1"),
    C("gpu-nan-input", "cnn", _with_checks(lambda w: w.step(_nan_batch(w))), NonFiniteError, "Conv2d(1→4", "non-finite input", "(1, 0, 2, 3)"),
    C("gpu-dtype-mismatch", "cnn", lambda w: w.step(w.x.astype(np.float64)), GpunetTypeError, "Conv2d(1→4", "float32 input", "float64"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES)
def test_bad_input_on_gpu(case, tmp_path):
    """Through the CUDA kernels: with checks on, the label check reads the kernel's error slot at once."""
    run_case(case, tmp_path, device="cuda")


@pytest.mark.gpu
def test_gpu_deferred_label_error_is_raised_at_the_next_check():
    """Checks off: the kernel records the bad label and raise_deferred_errors reports it."""
    dev = gn.device("cuda")
    logits = dev.asarray(f32(5, 4))
    y = dev.asarray(np.array([0, 1, 9, 3, 2]))
    loss = CE().forward(logits, y)  # no sync, no error yet
    assert np.isnan(float(loss))
    with pytest.raises(GpunetValueError) as info:
        gn.ops.raise_deferred_errors(dev)
    assert_message(info.value, "class labels", "[0, C)", "got 9 at row 2")
    gn.ops.raise_deferred_errors(dev)  # reading the error cleared it


def test_batchnorm_statistics_move_when_a_later_layer_refuses_the_batch(tmp_path):
    """Documented limit (as in PyTorch): a training-mode forward updates BatchNorm running
    statistics layer by layer, so when a *later* layer rejects the batch, the BatchNorm
    layers before it have already counted it. Weights, gradients and optimizer state are
    untouched. Shapes checked up front (or eval mode) avoid it."""
    w = cnn_world(tmp_path, gn.device("cpu"))
    before = snapshot(w)
    with pytest.raises(ShapeError, match=r"Linear\(16→8\)"):
        w.step(f32(4, 1, 12, 12))
    after = snapshot(w)
    moved = sorted(k for k in before["model"] if before["model"][k] != after["model"][k])
    assert moved == ["1.num_batches_tracked", "1.running_mean", "1.running_var"]
    assert before["grads"] == after["grads"] and before["opt"] == after["opt"]
    w.m.eval()
    before = snapshot(w)
    with pytest.raises(ShapeError):
        w.m(f32(4, 1, 12, 12))
    assert_unchanged(before, snapshot(w))
