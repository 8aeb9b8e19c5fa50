"""The PyTorch twin of a gpunet Sequential, with gpunet's weights copied in.

gpunet's parameter names and layouts follow PyTorch (Linear.weight (out, in), Conv2d.weight
(out, in, kh, kw), BatchNorm's running buffers), so a `torch.nn.Sequential` built layer by
layer with the same child indices takes gpunet's state dict as is. Starting both sides from
the same weights is what lets the benchmark check that they compute the same thing
(same loss after the same steps on the same batches), not merely that both are fast.

PyTorch is optional: this module imports it lazily, and `available()` says whether it can.
"""
from __future__ import annotations

import importlib

import numpy as np

from .. import backend, nn
from ..errors import GpunetValueError


def available() -> bool:
    """Whether PyTorch imports here (it is optional: never a dependency of gpunet)."""
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def _pool_kwargs(layer):
    return dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                ceil_mode=layer.ceil_mode)


def _twin_layer(torch, layer):
    """The torch.nn module computing what the gpunet `layer` computes."""
    tnn = torch.nn
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if type(layer) is nn.Conv2d:
        return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, bias=layer.bias is not None, dilation=layer.dilation,
                          groups=layer.groups, padding_mode=layer.padding_mode)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        cls = tnn.BatchNorm2d if isinstance(layer, nn.BatchNorm2d) else tnn.BatchNorm1d
        return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                   track_running_stats=layer.track_running_stats)
    if isinstance(layer, nn.LocalResponseNorm):
        return tnn.LocalResponseNorm(layer.size, alpha=layer.alpha, beta=layer.beta, k=layer.k)
    if isinstance(layer, nn.Flatten):
        return tnn.Flatten(layer.start_dim, layer.end_dim)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(**_pool_kwargs(layer))
    if isinstance(layer, nn.AvgPool2d):
        return tnn.AvgPool2d(**_pool_kwargs(layer), count_include_pad=layer.count_include_pad)
    if isinstance(layer, nn.LeakyReLU):
        return tnn.LeakyReLU(layer.negative_slope)
    simple = {nn.ReLU: tnn.ReLU, nn.Tanh: tnn.Tanh, nn.Sigmoid: tnn.Sigmoid}
    for cls, twin in simple.items():
        if isinstance(layer, cls):
            return twin()
    if type(layer) is nn.Dropout and layer.scale:
        return tnn.Dropout(layer.p)
    raise GpunetValueError(f"torch twin: no PyTorch equivalent for layer {layer!r}")


def twin(model, device: str = "cpu"):
    """A torch.nn.Sequential with `model`'s layers and a copy of its current weights."""
    import torch
    if not isinstance(model, nn.Sequential):
        raise GpunetValueError(f"torch twin: expected a gn.nn.Sequential, got {type(model).__name__}")
    layers = [_twin_layer(torch, layer) for layer in model]
    tmodel = torch.nn.Sequential(*layers)
    state = {k: torch.from_numpy(np.array(backend.to_numpy(v))) for k, v in model.state_dict().items()}
    tmodel.load_state_dict(state, strict=True)
    return tmodel.to(device=device, dtype=torch.float32 if model.dtype == np.float32 else torch.float64)


AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}


def autocast_description(precision: str, gpu: bool) -> str:
    """What PyTorch's side runs for gpunet's `precision` (recorded in benchmark rows)."""
    if precision in AUTOCAST:
        return f"torch.autocast({AUTOCAST[precision]})" + (" + GradScaler" if precision == "fp16" else "")
    if precision == "tf32":
        return "float32, allow_tf32=True" if gpu else "float32 (TF32 is a GPU mode)"
    return "float32"


def make_step(tmodel, lr: float, momentum: float, precision: str = "fp32"):
    """A closure running one PyTorch training step; returns the loss tensor (no host sync).
    precision bf16/fp16: under torch.autocast (fp16 with a GradScaler); tf32: TF32 matmuls on a GPU."""
    import torch
    opt = torch.optim.SGD(tmodel.parameters(), lr=lr, momentum=momentum)
    cross_entropy = torch.nn.functional.cross_entropy
    tmodel.train()
    kind = next(tmodel.parameters()).device.type
    if precision == "tf32" and kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dtype = getattr(torch, AUTOCAST[precision]) if precision in AUTOCAST else None
    scaler = torch.amp.GradScaler(kind) if precision == "fp16" else None

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(kind, dtype=dtype, enabled=dtype is not None):
            loss = cross_entropy(tmodel(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.detach()

    return step


def to_torch(a, device: str):
    """A torch tensor of `a` (NumPy or CuPy) on `device`; shares memory on the CPU."""
    import torch
    if backend.is_cupy_array(a):
        return torch.from_dlpack(a).to(device)
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)
