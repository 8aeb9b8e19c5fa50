"""`gpunet summary MODEL`: the zoo model `gpunet train` would build, layer by layer.

One row per layer: output shape (per sample), parameters, and memory: the layer's
parameters plus its output for `--batch-size` samples in the run's dtype (the activations
a training step keeps for backward; gradients and optimizer state come on top).
"""
from __future__ import annotations

import numpy as np

import gpunet as gn

from .. import data, models
from ..errors import GpunetError
from . import recipe


def add_arguments(parser) -> None:
    d = recipe.TrainConfig()
    parser.add_argument("model", choices=sorted(models.ZOO), help="a zoo model")
    parser.add_argument("--dataset", default=d.dataset, help=f"sets the input shape and classes (default {d.dataset})")
    parser.add_argument("--hidden", default=None, help=f"mlp hidden widths (default {d.hidden})")
    parser.add_argument("--dropout", type=float, default=None, help=f"mlp dropout (default {d.dropout})")
    parser.add_argument("--dtype", default=d.dtype, choices=recipe.DTYPES, help=f"(default {d.dtype})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"samples whose activations are counted (default {d.batch_size})")


def rows(model, shape, batch_size: int, itemsize: int):
    """(index, layer, output shape, parameters, bytes) per layer of a Sequential."""
    x = np.zeros((1, *shape), dtype=model.dtype)
    model.eval()
    out = []
    for name, layer in model._children.items():
        x = layer.forward(x)
        n = sum(p.size for p in layer.parameters())
        out.append((name, type(layer).__name__, tuple(x.shape[1:]), n,
                    n * itemsize + int(np.prod(x.shape[1:])) * batch_size * itemsize))
    return out


def run(args) -> int:
    try:
        flags = {"model": args.model, "dataset": args.dataset, "hidden": args.hidden, "dropout": args.dropout,
                 "dtype": args.dtype, "batch_size": args.batch_size}
        cfg = recipe.resolve(flags)
        recipe.check_applicable(cfg, recipe.given_settings(flags))
        ds = data.load(cfg.dataset, "test", root=cfg.data_root or None)
        shape = recipe.sample_shape(ds)
        model = recipe.build_model(cfg, shape, len(ds.classes)).to("cpu", dtype=cfg.dtype)
    except GpunetError as e:
        print(f"error: {e}")
        return 2
    itemsize = np.dtype(cfg.dtype).itemsize
    table = rows(model, shape, cfg.batch_size, itemsize)
    print(f"{cfg.model} on {cfg.dataset} input {'×'.join(map(str, shape))}, {cfg.dtype}, "
          f"batch {cfg.batch_size}")
    print(f"{'#':>3}  {'layer':<12} {'output':<14} {'params':>10} {'memory':>10}")
    for name, kind, out, n, nbytes in table:
        print(f"{name:>3}  {kind:<12} {'×'.join(map(str, out)):<14} {n:>10,} {_mib(nbytes):>10}")
    total_p = sum(r[3] for r in table)
    print(f"{'':>3}  {'total':<12} {'':<14} {total_p:>10,} {_mib(sum(r[4] for r in table)):>10}")
    print(f"parameters {_mib(total_p * itemsize)}; training adds as much again for the gradients")
    print(f"and per buffer of optimizer state (SGD momentum: 1, Adam: 2)")
    return 0


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f} MiB"
