"""`gpunet doctor`: static checks, then a short probe run with LiveDoctor, then a report.

    gpunet doctor --dataset digits --model mlp --init zeros
    gpunet doctor --dataset mnist --model mlp --lr 1e4 --probe-steps 50 --ignore GN107

The model, optimizer and data come from the same `TrainConfig` as `gpunet train`
(cli/recipe.py), so a config that passes here is the one `train` will run. The
doctor-only flags reproduce the classic mistakes on purpose (--loss mse,
--last-activation relu, --input-scale 1, --velocity-init ones, --replicas 2
--reduce sum). Exit status: 0 when no finding is a warning or worse, 1 otherwise,
2 on a bad argument.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np

from rich.console import Console
from rich.markup import escape

import gpunet as gn

from .. import data, doctor, losses, nn
from ..argcheck import one_of
from ..errors import GpunetError, GpunetValueError, NonFiniteError
from ..parallel.engine import REDUCES
from . import recipe
from .flags import add_field_flag

TRAIN_FIELDS = ("dataset", "model", "hidden", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
                "init", "dropout", "dtype", "device", "seed", "val_fraction", "data_root")
LOSSES = ("cross_entropy", "bce", "mse")
VELOCITY_INITS = ("zeros", "ones")
LAST_ACTIVATIONS = {"": None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softmax": nn.Softmax, "tanh": nn.Tanh}


@dataclasses.dataclass
class DoctorConfig:
    probe_steps: int = 50            # optimizer steps of the live probe (0: static checks only)
    log_every: int = 5               # steps between live checks during the probe
    ignore: tuple = ()               # codes to silence (GN101, symmetric-init or the full code)
    loss: str = "cross_entropy"      # cross_entropy | bce (one-hot, per-class sigmoid) | mse (one-hot)
    last_activation: str = ""        # append relu | sigmoid | softmax | tanh after the logits
    velocity_init: str = "zeros"     # SGD momentum velocity at the start: zeros | ones
    input_scale: float = 1 / 255     # the loader's pixel scale (1: pixels stay 0-255)
    replicas: int = 1                # data-parallel replicas on --device
    reduce: str = "mean"             # mean | sum (with --replicas > 1)
    json_out: str = ""               # also write the findings as JSON to this file (--json is a switch elsewhere)

    def validate(self) -> "DoctorConfig":
        checks = [("probe_steps", self.probe_steps >= 0, ">= 0"), ("log_every", self.log_every >= 1, ">= 1"),
                  ("input_scale", self.input_scale > 0, "> 0"), ("replicas", self.replicas >= 1, ">= 1")]
        for name, ok, want in checks:
            if not ok:
                raise GpunetValueError(f"gpunet doctor: --{name.replace('_', '-')} expected a value {want}, "
                                       f"got {getattr(self, name)!r}")
        for name, choices in (("loss", LOSSES), ("last_activation", tuple(LAST_ACTIVATIONS)),
                              ("velocity_init", VELOCITY_INITS), ("reduce", REDUCES)):
            one_of("gpunet doctor", "--" + name.replace("_", "-"), getattr(self, name), choices)
        for c in self.ignore:
            doctor.code(c)
        return self


HELP = {
    "probe_steps": "optimizer steps of the live probe (0: static checks only)",
    "log_every": "steps between live checks during the probe", "loss": "cross_entropy, bce or mse",
    "last_activation": "append relu, sigmoid, softmax or tanh after the logits",
    "velocity_init": "SGD momentum velocity at the start: zeros or ones",
    "input_scale": "the loader's pixel scale (1: pixels stay 0-255)",
    "replicas": "data-parallel replicas on --device", "reduce": "mean or sum (with --replicas > 1)",
    "json_out": "also write the findings as JSON to this file",
}


def add_arguments(parser) -> None:
    from .train import HELP as TRAIN_HELP, SHOWN_DEFAULT as TRAIN_SHOWN
    for name in TRAIN_FIELDS:
        field = recipe.FIELDS[name]
        shown = TRAIN_SHOWN.get(name, field.default)
        add_field_flag(parser, name, field.type, None, f"{TRAIN_HELP[name]}, as in gpunet train (default {shown})")
    d = DoctorConfig()
    for f in dataclasses.fields(DoctorConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "ignore":
            parser.add_argument(flag, nargs="+", action="extend", default=[], metavar="CODE",
                                help="silence these codes (GN101, symmetric-init or GN101-symmetric-init)")
        else:
            value = getattr(d, f.name)
            shown = "none" if value == "" else f"{value:.6g}" if isinstance(value, float) else value
            add_field_flag(parser, f.name, type(value), value, f"{HELP[f.name]} (default {shown})")
    parser.add_argument("--config", default=None, metavar="FILE.toml", help="a gpunet train config file")


def run(args) -> int:
    console = Console()
    try:
        cfg = recipe.resolve({k: getattr(args, k) for k in TRAIN_FIELDS}, args.config)
        dc = DoctorConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DoctorConfig)})
        dc.ignore = tuple(dc.ignore)
        findings, summary = diagnose(cfg, dc.validate())
    except GpunetError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    report(console, findings, summary, dc)
    return 1 if doctor.has_problems(findings) else 0


def make_loss(name: str, classes: int):
    """The loss for --loss: per-class losses get one-hot targets from the integer labels."""
    if name == "cross_entropy":
        return losses.SoftmaxCrossEntropy()
    inner = losses.BCEWithLogits() if name == "bce" else losses.MSE()
    return doctor.OneHotLoss(inner, classes)


def build(cfg, dc):
    """(model, loss, optimizer, train Dataset) for the config, with the doctor's deliberate variations."""
    gn.manual_seed(cfg.seed)
    train_set, _, _ = recipe.datasets(cfg)
    classes = len(train_set.classes)
    model = recipe.build_model(cfg, recipe.sample_shape(train_set), classes)
    if LAST_ACTIVATIONS[dc.last_activation] is not None:
        model.append(LAST_ACTIVATIONS[dc.last_activation]())
    model.to(gn.device(cfg.device), dtype=cfg.dtype)
    opt = recipe.build_optimizer(cfg, model.parameters())
    if hasattr(opt, "velocity_init"):
        opt.velocity_init = dc.velocity_init
    return model, make_loss(dc.loss, classes), opt, train_set


def diagnose(cfg, dc):
    """Static findings + live findings from a probe of `dc.probe_steps` steps; and a summary dict."""
    model, loss, opt, train_set = build(cfg, dc)
    steps = max(dc.probe_steps, 1)
    n = min(len(train_set), steps * cfg.batch_size)
    subset = train_set.subset(range(n)) if n < len(train_set) else train_set
    devices = [cfg.device] * dc.replicas if dc.replicas > 1 else None
    live = doctor.LiveDoctor(ignore=dc.ignore)
    trainer = gn.Trainer(model, loss, opt, device=cfg.device, devices=devices, reduce=dc.reduce,
                         callbacks=[live], seed=cfg.seed, log_every=dc.log_every)
    loader = data.DataLoader(subset, cfg.batch_size, device=trainer.device, seed=cfg.seed,
                             dtype=model.dtype, scale=dc.input_scale)
    findings = doctor.preflight(model, loader, loss, opt, trainer, ignore=dc.ignore)
    summary = {"config": {**dataclasses.asdict(cfg), **dataclasses.asdict(dc)}, "steps": 0, "stopped": None}
    if dc.probe_steps:
        epochs = math.ceil(steps / len(loader))
        try:
            with np.errstate(all="ignore"):  # a diverging probe is reported as a finding, not as warnings
                history = trainer.fit(loader, epochs, cfg.batch_size)
            summary.update(loss=history.loss, accuracy=history.accuracy)
        except NonFiniteError as e:
            summary["stopped"] = str(e).splitlines()[0]
        summary["steps"] = trainer.global_step
    return findings + live.findings, summary


def report(console, findings, summary, dc) -> None:
    """The rich report (and the JSON file with --json-out)."""
    cfg = summary["config"]
    head = f"gpunet doctor: {cfg['model']} on {cfg['dataset']}, probe of {summary['steps']} steps"
    if summary.get("loss"):
        head += f", loss {summary['loss'][0]:.4g} → {summary['loss'][-1]:.4g}"
        head += f", accuracy {summary['accuracy'][-1]:.3f}" if summary.get("accuracy") else ""
    console.print(escape(head))
    if summary["stopped"]:
        console.print(f"[bold red]probe stopped:[/] {escape(summary['stopped'])}")
    doctor.render(findings, console, title="findings")
    verdict = doctor.worst(findings)
    console.print("verdict: " + ("[green]healthy[/]" if not doctor.has_problems(findings)
                                 else f"[bold red]{verdict}s found[/]" if verdict == "error" else "[yellow]warnings found[/]"))
    if dc.json_out:
        out = {"findings": [f.to_dict() for f in findings], **summary}
        with open(dc.json_out, "w") as f:
            json.dump(out, f, indent=1, default=str)


def main(argv=None) -> int:
    """`python -m gpunet.cli.doctor ...` (the same flags as `gpunet doctor`)."""
    import argparse
    parser = argparse.ArgumentParser(prog="gpunet doctor", allow_abbrev=False, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
