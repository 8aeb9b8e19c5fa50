"""Weights in and out of gpunet: safetensors files and ONNX graphs.

Names and layouts are PyTorch's (`Module.state_dict` already is): "1.weight" of a
Sequential's Linear is (out, in), a Conv2d's weight is (out, in, kh, kw), a BatchNorm's
buffers are running_mean, running_var and num_batches_tracked. So a file saved here loads
into the equivalent `torch.nn.Sequential` with `load_state_dict`, and back.

    save_safetensors(model, "model.safetensors")    # pickle-free; atomic write
    load_safetensors(model, "model.safetensors")    # validated: on error nothing changes
    export_onnx(model, "model.onnx", (1, 28, 28))   # inference graph (eval mode), opset 17

ONNX export covers the layers of the model zoo (Flatten, Linear, Conv2d with groups and
dilation, BatchNorm1d/2d, MaxPool2d, AvgPool2d, LocalResponseNorm, ZeroPad2d, global
AdaptiveAvgPool2d, Residual, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Identity, Dropout as identity);
any other layer is refused by name. Needs `pip install safetensors onnx` (extra "interop").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import backend, nn
from .errors import CheckpointError, GpunetTypeError, GpunetValueError
from .fileio import atomic_write_bytes

ONNX_OPSET = 17


def _need(module: str, extra: str = "interop"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise GpunetValueError(f"{module} is not installed: pip install {module.split('.')[0]} "
                               f"(or, from the gpunet checkout, pip install \".[{extra}]\")") from None


def _check_model(owner, model):
    if not isinstance(model, nn.Module):
        raise GpunetTypeError(f"{owner}: model expected a gn.nn.Module, got {type(model).__name__}")


def save_safetensors(model, path, metadata: dict | None = None) -> Path:
    """Write the model's parameters and buffers (PyTorch names) to a .safetensors file."""
    _check_model("save_safetensors", model)
    st = _need("safetensors.numpy")
    tensors = {k: _contiguous(backend.to_numpy(v)) for k, v in model.state_dict().items()}
    meta = {"format": "pt", "producer": "gpunet", **{str(k): str(v) for k, v in (metadata or {}).items()}}
    path = Path(path)
    atomic_write_bytes(path, st.save(tensors, metadata=meta))
    return path


def _contiguous(a):
    """`a` C-contiguous with its own shape (np.ascontiguousarray makes a 0-d array 1-d, so
    BatchNorm's num_batches_tracked would come back as shape (1,))."""
    return np.ascontiguousarray(a).reshape(np.shape(a))


def load_safetensors(model, path, strict: bool = True):
    """Load a .safetensors file (gpunet's or `torch.nn` weights with the same names) into `model`."""
    _check_model("load_safetensors", model)
    st = _need("safetensors")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_safetensors: path expected an existing file, got {str(path)!r}")
    try:
        with st.safe_open(str(path), framework="numpy") as f:  # memory-mapped
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - a torn or foreign file
        raise CheckpointError(f"load_safetensors: {path} is not a readable safetensors file "
                              f"({type(e).__name__}: {e})") from None
    model.load_state_dict(state, strict=strict)
    return model


# ---------------------------------------------------------------- ONNX

def _onnx_nodes(layer, name, x, out, h, add_init):
    """ONNX nodes computing `out` from `x` for one gpunet layer (inference semantics)."""
    def attr_pads(p):
        return [p[0], p[1], p[0], p[1]]

    if isinstance(layer, nn.Flatten):
        if layer.start_dim != 1 or layer.end_dim != -1:
            raise GpunetValueError(f"export_onnx: layer {name} Flatten expected start_dim=1, end_dim=-1, "
                                   f"got {layer.start_dim}, {layer.end_dim}")
        return [h.make_node("Flatten", [x], [out], axis=1)]
    if isinstance(layer, nn.Linear):
        ins = [x, add_init(f"{name}.weight", layer.weight.data)]
        if layer.bias is not None:
            ins.append(add_init(f"{name}.bias", layer.bias.data))
        return [h.make_node("Gemm", ins, [out], transB=1)]
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise GpunetValueError(f"export_onnx: layer {name} Conv2d expected padding_mode='zeros' (ONNX Conv pads "
                                   f"with zeros), got {layer.padding_mode!r}")
        ins = [x, add_init(f"{name}.weight", layer.weight.data)]
        if layer.bias is not None:
            ins.append(add_init(f"{name}.bias", layer.bias.data))
        t, b, l, r = layer.pads
        return [h.make_node("Conv", ins, [out], kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                            dilations=list(layer.dilation), group=int(layer.groups), pads=[t, l, b, r])]
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        c = layer.num_features
        dt = layer.running_mean.dtype
        scale = layer.weight.data if layer.affine else np.ones(c, dt)
        bias = layer.bias.data if layer.affine else np.zeros(c, dt)
        ins = [x] + [add_init(f"{name}.{k}", v) for k, v in
                     (("weight", scale), ("bias", bias), ("running_mean", layer.running_mean),
                      ("running_var", layer.running_var))]
        return [h.make_node("BatchNormalization", ins, [out], epsilon=float(layer.eps))]
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        op = "MaxPool" if isinstance(layer, nn.MaxPool2d) else "AveragePool"
        kw = {"count_include_pad": int(layer.count_include_pad)} if op == "AveragePool" else {}
        return [h.make_node(op, [x], [out], kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                            pads=attr_pads(layer.padding), ceil_mode=int(layer.ceil_mode), **kw)]
    if isinstance(layer, nn.LocalResponseNorm):
        if layer.size % 2 == 0:  # ONNX centres an even window one channel later than PyTorch and gpunet
            raise GpunetValueError(f"export_onnx: layer {name} LocalResponseNorm expected an odd size (ONNX and "
                                   f"gpunet place an even window differently), got {layer.size}")
        return [h.make_node("LRN", [x], [out], size=int(layer.size), alpha=float(layer.alpha),
                            beta=float(layer.beta), bias=float(layer.k))]
    if isinstance(layer, nn.ZeroPad2d):
        left, right, top, bottom = layer.padding
        pads = add_init(f"{name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        return [h.make_node("Pad", [x, pads], [out], mode="constant")]
    if isinstance(layer, nn.AdaptiveAvgPool2d) and tuple(layer.output_size) == (1, 1):
        return [h.make_node("GlobalAveragePool", [x], [out])]
    if isinstance(layer, nn.Residual):
        y, nodes = _onnx_chain(layer.body, f"{name}.body", x, h, add_init)
        s = x
        if layer.shortcut is not None:
            s, more = _onnx_chain(layer.shortcut, f"{name}.shortcut", x, h, add_init)
            nodes += more
        return nodes + [h.make_node("Add", [y, s], [out])]
    if isinstance(layer, nn.Sequential):
        y, nodes = _onnx_chain(layer, name, x, h, add_init)
        return nodes + [h.make_node("Identity", [y], [out])]
    simple = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.Dropout: "Identity",
              nn.Identity: "Identity"}
    for cls, op in simple.items():
        if isinstance(layer, cls):
            return [h.make_node(op, [x], [out])]
    if isinstance(layer, nn.LeakyReLU):
        return [h.make_node("LeakyRelu", [x], [out], alpha=float(layer.negative_slope))]
    if isinstance(layer, nn.Softmax):
        return [h.make_node("Softmax", [x], [out], axis=int(layer.axis))]
    raise GpunetValueError(f"export_onnx: layer {name} expected one of Flatten, Linear, Conv2d, BatchNorm, "
                           f"MaxPool2d, AvgPool2d, LocalResponseNorm, ZeroPad2d, AdaptiveAvgPool2d(1), "
                           f"Residual, Sequential, an activation, Identity or Dropout, got {type(layer).__name__}")


def _onnx_chain(seq, prefix, x, h, add_init):
    """(name of the last output, nodes) of a nested Sequential, its layers named prefix.i."""
    nodes = []
    for key, layer in seq._children.items():
        out = f"{prefix}.{key}.out"
        nodes += _onnx_nodes(layer, f"{prefix}.{key}", x, out, h, add_init)
        x = out
    return x, nodes


def export_onnx(model, path, input_shape, opset: int = ONNX_OPSET) -> Path:
    """Write `model` (a Sequential of zoo layers) as an ONNX inference graph.

    `input_shape` is one sample's shape without the batch axis, e.g. (1, 28, 28); the
    batch axis is dynamic. Input "input", output "logits"; initializers carry PyTorch names.
    """
    _check_model("export_onnx", model)
    onnx = _need("onnx")
    h = onnx.helper
    if not isinstance(model, nn.Sequential):
        raise GpunetTypeError(f"export_onnx: model expected a gn.nn.Sequential, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    dtype = np.dtype(model.dtype)
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}[dtype]
    inits = []

    def add_init(key, arr):
        inits.append(onnx.numpy_helper.from_array(np.ascontiguousarray(backend.to_numpy(arr)), key))
        return key

    nodes, x = [], "input"
    layers = list(model._children.items())
    for i, (name, layer) in enumerate(layers):
        out = "logits" if i == len(layers) - 1 else f"{name}.out"
        nodes += _onnx_nodes(layer, name, x, out, h, add_init)
        x = out
    graph = h.make_graph(nodes, "gpunet", [h.make_tensor_value_info("input", elem, ["batch", *shape])],
                         [h.make_tensor_value_info("logits", elem, ["batch", None])], initializer=inits)
    proto = h.make_model(graph, producer_name="gpunet", opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path
