"""`gpunet export CHECKPOINT --onnx PATH --safetensors PATH`: a trained run's model, out of gpunet.

The model is rebuilt from the config saved in the checkpoint (as `gpunet evaluate` does),
its weights loaded, then written as an ONNX inference graph and/or a safetensors file
with PyTorch's names and layouts (see gpunet/interop.py).
"""
from __future__ import annotations

import gpunet as gn

from .. import data, interop
from ..checkpoint import read_checkpoint
from ..errors import GpunetError, GpunetValueError
from . import recipe


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint-*.npz written by gpunet train")
    parser.add_argument("--onnx", default=None, metavar="PATH.onnx", help="write an ONNX graph (opset 17) here")
    parser.add_argument("--safetensors", default=None, metavar="PATH.safetensors",
                        help="write the weights here (PyTorch names: loads into the torch.nn twin)")


def load_run_model(checkpoint):
    """(model on the CPU with the checkpoint's weights, one sample's shape) from a run checkpoint."""
    header, _ = read_checkpoint(checkpoint)
    saved = (header.get("meta") or {}).get("config")
    if not saved:
        raise gn.CheckpointError(f"checkpoint {checkpoint}: holds no run config, so the model "
                                 "cannot be rebuilt; load it in Python and call gn.interop directly")
    cfg = recipe.TrainConfig(**{k: v for k, v in saved.items() if k in recipe.FIELDS})
    ds = data.load(cfg.dataset, "test", root=cfg.data_root or None)
    shape = recipe.sample_shape(ds)
    model = recipe.build_model(cfg, shape, len(ds.classes)).to("cpu", dtype=cfg.dtype)
    gn.load_checkpoint(checkpoint, model)
    model.eval()
    return model, shape


def run(args) -> int:
    try:
        if not (args.onnx or args.safetensors):
            raise GpunetValueError("gpunet export: expected --onnx PATH.onnx and/or --safetensors "
                                   "PATH.safetensors, got neither")
        model, shape = load_run_model(args.checkpoint)
        if args.onnx:
            print(f"wrote {interop.export_onnx(model, args.onnx, shape)} (ONNX, input 'input' "
                  f"N×{'×'.join(map(str, shape))}, output 'logits')")
        if args.safetensors:
            print(f"wrote {interop.save_safetensors(model, args.safetensors)} (safetensors, PyTorch names)")
    except GpunetError as e:
        print(f"error: {e}")
        return 2
    return 0
