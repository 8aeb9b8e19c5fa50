"""`gpunet evaluate CHECKPOINT`: rebuild the run's model from the config saved in the
checkpoint, load the weights and report loss and accuracy on a dataset split."""
from __future__ import annotations

import dataclasses
import json

from rich.console import Console
from rich.markup import escape

import gpunet as gn

from .. import data, losses
from ..checkpoint import read_checkpoint
from ..errors import GpunetError
from . import recipe


@dataclasses.dataclass
class EvaluateConfig:
    checkpoint: str = ""
    dataset: str = ""        # default: the dataset the run trained on
    split: str = "test"
    device: str = "auto"
    batch_size: int = 1024
    data_root: str = ""
    json: bool = False


def add_arguments(parser) -> None:
    d = EvaluateConfig()
    parser.add_argument("checkpoint", help="a checkpoint-*.npz written by gpunet train")
    parser.add_argument("--dataset", default=d.dataset, help="dataset name (default: the run's)")
    parser.add_argument("--split", default=d.split, choices=("train", "test"), help=f"(default {d.split})")
    parser.add_argument("--device", default=d.device, help=f"cpu, cuda, cuda:N or auto (default {d.device})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"samples per forward pass (default {d.batch_size})")
    parser.add_argument("--data-root", default=d.data_root, help="dataset folder (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    console = Console()
    cfg = EvaluateConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvaluateConfig)})
    try:
        result = evaluate(cfg)
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    if cfg.json:
        print(json.dumps(result))
    else:
        console.print(f"{result['dataset']} {result['split']}: loss {result['loss']:.4f}, "
                      f"accuracy {result['accuracy']:.4f} ({result['samples']} samples, {result['device']})")
    return 0


def evaluate(cfg: EvaluateConfig) -> dict:
    header, _ = read_checkpoint(cfg.checkpoint, meta_only=True)  # the arrays: load_checkpoint, bounded
    saved = (header.get("meta") or {}).get("config")
    if not saved:
        raise gn.CheckpointError(f"checkpoint {cfg.checkpoint}: holds no run config, so the model "
                                 "cannot be rebuilt; load it in Python with gn.load_checkpoint")
    if not isinstance(saved, dict):
        raise gn.CheckpointError(f"checkpoint {cfg.checkpoint}: expected the saved run config to be a JSON "
                                 f"object, got {type(saved).__name__}")
    try:
        train_cfg = recipe.resolve({}, base=saved)  # the same type and range checks as a run's flags
    except gn.GpunetError as e:
        raise gn.CheckpointError(f"checkpoint {cfg.checkpoint}: its saved run config is invalid: {e}") from None
    name = cfg.dataset or train_cfg.dataset
    ds = data.load(name, cfg.split, root=cfg.data_root or train_cfg.data_root or None)
    dev = gn.device(cfg.device)
    model = recipe.build_model(train_cfg, recipe.sample_shape(ds), len(ds.classes))
    model.to(dev, dtype=train_cfg.dtype)
    gn.load_checkpoint(cfg.checkpoint, model)
    opt = recipe.build_optimizer(train_cfg, model.parameters())
    # at the run's precision: the numbers of its own test evaluation
    trainer = gn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, device=dev, precision=train_cfg.precision)
    out = trainer.evaluate(ds, batch_size=cfg.batch_size)
    return {"dataset": name, "split": cfg.split, "samples": len(ds), "device": dev.name,
            "precision": train_cfg.precision, **out}
