"""What `gpunet bench train` measures: the workloads, and each side's model, step and batches.

    WORKLOADS            name -> Workload (model factory, data factory, batch size, lr)
    build_sides(w, ...)  {"gpunet": (step, device), "torch": (step, device)}, same initial weights
    batches(w, ...)      the batches resident on each side's device
    synchronizer(side)   the device sync of a side (timing brackets)
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .. import backend, losses, models, optim, precision
from ..errors import GpunetError
from . import torch_twin


@dataclasses.dataclass
class Workload:
    """One benchmark row: a model factory, a data factory and the batch size."""
    name: str
    model: Callable
    data: Callable          # (n_samples, seed) -> (x float32 NCHW, y int64, description)
    batch_size: int
    lr: float = 0.01
    momentum: float = 0.9


def idx_images(name: str):
    """Loader of the first n training images of an IDX dataset in [0, 1], NCHW; random if absent."""
    def load(n, seed):
        from .. import data
        try:
            ds = data.load(name, "train", download=False)
        except GpunetError:
            x, y, _ = random_images((1, 28, 28))(n, seed)
            return x, y, f"random 1×28×28 ({name} not found: set GPUNET_DATA)"
        x = ds.x[:n].reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)
        return x, ds.y[:n].astype(np.int64), f"{name} train[:{len(x)}]"
    return load


def random_images(shape, classes=10):
    """Uniform [0, 1) images (the range of scaled pixels) with uniform random labels."""
    def make(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.random((n, *shape), dtype=np.float32)
        return x, rng.integers(0, classes, n).astype(np.int64), f"random {'×'.join(map(str, shape))} in [0, 1)"
    return make


WORKLOADS = {
    "mlp-b128": Workload("mlp-b128", lambda: models.mlp([784, 512, 256, 10]), idx_images("mnist"), 128),
    "mlp-b1024": Workload("mlp-b1024", lambda: models.mlp([784, 512, 256, 10]), idx_images("mnist"), 1024),
    "small-cnn": Workload("small-cnn", lambda: models.small_cnn(), idx_images("fashion-mnist"), 256),
    # lr 0.002: on random labels at lr 0.01 float32 rounding differences grow chaotically
    # (1e-3 relative after ~12 steps) while float64 runs agree to 1e-16; see --check-float64.
    "tf-cifar10-cnn": Workload("tf-cifar10-cnn", lambda: models.tf_cifar10_cnn(),
                               random_images((3, 24, 24)), 128, lr=0.002),
}


# ---------------------------------------------------------------- the two sides

def gpunet_step(model, loss_fn, opt):
    """One gpunet training step, as the Trainer runs it (the loss stays on the device)."""
    def step(x, y):
        loss = loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        opt.zero_grad()
        return loss
    return step


def gpunet_amp_step(model, loss_fn, opt, dev, prec):
    """One gpunet step at precision `prec` as the Trainer runs it (fp16: with its loss scaler)."""
    from ..loss_scale import LossScaler
    from ..step import LocalEngine
    precision.apply(model, prec)
    engine = LocalEngine(model, loss_fn, opt, dev)
    engine.scaler = LossScaler() if prec == "fp16" else None
    return lambda x, y: engine.train_step(x, y, metrics=False)[0]


def build_sides(w: Workload, dev, seed: int, with_torch: bool, dtype="float32", prec="fp32",
                models_out=None):
    """{"gpunet": step, "torch": step}: same architecture, same initial weights.
    `models_out`, a dict, receives the two models (for the per-layer profile)."""
    backend.manual_seed(seed)
    model = w.model().to(dev, dtype=dtype)
    model.train()
    sides = {}
    if with_torch:  # copy the weights before gpunet's first step changes them
        tdev = f"cuda:{dev.index}" if dev.is_gpu else "cpu"
        tmodel = torch_twin.twin(model, tdev)
        sides["torch"] = (torch_twin.make_step(tmodel, w.lr, w.momentum, prec), tdev)
    opt = optim.SGD(model.parameters(), lr=w.lr, momentum=w.momentum)
    sides["gpunet"] = (gpunet_step(model, losses.SoftmaxCrossEntropy(), opt) if prec == "fp32" else
                       gpunet_amp_step(model, losses.SoftmaxCrossEntropy(), opt, dev, prec), dev)
    if models_out is not None:
        models_out["gpunet"] = model
        if with_torch:
            models_out["torch"] = tmodel
    return dict(sorted(sides.items()))  # "gpunet" first


def batches(w: Workload, dev, pool: int, seed: int, with_torch: bool, dtype="float32"):
    """`pool` batches, resident on the device for each side: {side: [(x, y), ...]}, description."""
    x, y, what = w.data(pool * w.batch_size, seed)
    x = x.astype(dtype)
    pool = max(1, len(x) // w.batch_size)
    out = {"gpunet": [], "torch": []}
    for i in range(pool):
        sl = slice(i * w.batch_size, (i + 1) * w.batch_size)
        xb, yb = np.ascontiguousarray(x[sl]), np.ascontiguousarray(y[sl])
        out["gpunet"].append((dev.asarray(xb), dev.asarray(yb)))
        if with_torch:
            tdev = f"cuda:{dev.index}" if dev.is_gpu else "cpu"
            out["torch"].append((torch_twin.to_torch(xb, tdev), torch_twin.to_torch(yb, tdev)))
    return out, what


def synchronizer(side: str, dev):
    if side == "torch":
        import torch
        return torch.cuda.synchronize if dev.is_gpu else (lambda: None)
    return dev.synchronize
