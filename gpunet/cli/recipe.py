"""The `gpunet train` configuration and how a run is built from it.

Precedence: dataclass defaults < `--config FILE.toml` (or .json) < explicit flags.
Config files are data (TOML/JSON), never evaluated.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

from .. import backend, data, models, nn, optim, precision
from ..argcheck import non_negative, one_of
from ..errors import GpunetValueError
from ..fileio import regular_file
from ..parallel.engine import REDUCES
from ..train import LR_SCALINGS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "digits"
    model: str = "mlp"
    hidden: str = "256,128"          # mlp hidden widths, comma-separated
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    init: str = "he_normal"
    dropout: float = 0.0
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.1
    out: str = "runs"
    name: str = ""                   # default: "<dataset>-<model>"
    resume: bool = False
    checkpoint_every: int = 0        # also checkpoint every K steps (0: epochs only)
    data_root: str = ""              # dataset folder (default: the lookup order)
    devices: str = ""                # data parallel: "cuda:0,cuda:1" or "cpu,cpu" (one replica each)
    reduce: str = "mean"             # data parallel: "mean" or "sum" of the replicas' gradients
    lr_scaling: str = "none"         # "linear": lr × replicas (Goyal et al. 2017)
    warmup_epochs: float = 0.0       # linear warmup to the scaled lr
    threads: int = 0                 # BLAS threads on the CPU (0: gpunet's choice, gn.threads.AUTO_THREADS)
    schedule: str = "none"           # lr schedule: a name in SCHEDULES
    early_stopping: int = 0          # stop after this many epochs without a better val_loss (0: never)
    clip_grad_norm: float = 0.0      # clip the global gradient norm to this (0: no clipping)
    augment: bool = False            # random crop (and flip for cifar10, fashion-mnist) of training batches
    log: str = ""                    # extra epoch logs beside metrics.jsonl: "csv", "tensorboard" or both
    accumulate: int = 1              # run each batch as K micro-batches (gradient accumulation)
    precision: str = "fp32"          # compute precision of matrix products: fp32, tf32, bf16, fp16 (gpunet.precision)
    fused: bool = False              # fused optimizer step over flat buffers (sgd, adam, adamw; gn.optim fused=True)

    def validate(self) -> "TrainConfig":
        finite = math.isfinite(self.lr) and math.isfinite(self.weight_decay)
        checks = [("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", finite and self.lr > 0, "> 0 and finite"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", finite and self.weight_decay >= 0, ">= 0 and finite"),
                  ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                  ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
                  ("checkpoint_every", self.checkpoint_every >= 0, ">= 0"), ("threads", self.threads >= 0, ">= 0"),
                  ("early_stopping", self.early_stopping >= 0, ">= 0"),
                  ("accumulate", 1 <= self.accumulate <= self.batch_size, "in [1, batch_size]"),
                  ("clip_grad_norm", math.isfinite(self.clip_grad_norm) and self.clip_grad_norm >= 0,
                   ">= 0 and finite"),
                  ("seed", 0 <= self.seed < 2**63, "in [0, 2^63)")]
        for name, ok, want in checks:
            if not ok:
                raise GpunetValueError(f"TrainConfig: {name} expected a value {want}, got {getattr(self, name)!r}")
        self.hidden_sizes()
        if self.early_stopping and not self.val_fraction:
            raise GpunetValueError("TrainConfig: early_stopping expected a validation split to watch "
                                   f"(--val-fraction > 0), got val_fraction {self.val_fraction}")
        if self.schedule == "plateau" and not self.val_fraction:
            raise GpunetValueError("TrainConfig: schedule plateau expected a validation split to watch "
                                   f"(--val-fraction > 0), got val_fraction {self.val_fraction}")
        one_of("TrainConfig", "dtype", self.dtype, DTYPES)
        one_of("TrainConfig", "optimizer", self.optimizer, tuple(optim.OPTIMIZERS))
        one_of("TrainConfig", "init", self.init, nn.init.NAMES)
        one_of("TrainConfig", "reduce", self.reduce, REDUCES)
        one_of("TrainConfig", "schedule", self.schedule, tuple(SCHEDULES))
        for name in self.log_list():
            one_of("TrainConfig", "log", name, LOGS)
        if "tensorboard" in self.log_list() and importlib.util.find_spec("tensorboardX") is None:
            raise GpunetValueError("TrainConfig: log tensorboard expected tensorboardX installed: pip install "
                                   "tensorboardX (or, from the gpunet checkout, pip install \".[tensorboard]\")")
        one_of("TrainConfig", "lr_scaling", self.lr_scaling, LR_SCALINGS)
        one_of("TrainConfig", "precision", self.precision, precision.PRECISIONS)
        if self.precision != "fp32" and self.dtype != "float32":
            raise GpunetValueError(f"TrainConfig: precision {self.precision!r} expected dtype float32 (float32 master "
                                   f"weights; float64 runs stay float64), got dtype {self.dtype!r}")
        precision.resolve(self.precision)  # bf16 without ml_dtypes: refused with the install hint
        non_negative("TrainConfig", "warmup_epochs", self.warmup_epochs)
        models.get(self.model)
        backend.resolve_dtype(self.dtype)
        check_run_name(self.name)
        return self

    def hidden_sizes(self) -> list:
        """The mlp hidden widths parsed from `hidden` ("256,128" -> [256, 128]; "" -> none)."""
        parts = [p.strip() for p in self.hidden.split(",") if p.strip()]
        if not all(p.isascii() and p.isdigit() and 1 <= int(p) <= 2**24 for p in parts):
            raise GpunetValueError(f"TrainConfig: hidden expected comma-separated positive ints (at most 2^24) such as '256,128', "
                                   f"got {self.hidden!r}")
        return [int(p) for p in parts]

    def log_list(self) -> list:
        return [p.strip() for p in self.log.split(",") if p.strip()]

    def device_list(self):
        """The data-parallel replicas' devices, or None for one device."""
        devs = [d.strip() for d in self.devices.split(",") if d.strip()]
        return devs or None

    @property
    def run_name(self) -> str:
        dataset = data.custom.short_name(self.dataset) if data.custom.is_custom(self.dataset) else self.dataset
        return self.name or f"{dataset}-{self.model}"


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
DTYPES = ("float32", "float64")
LOGS = ("csv", "tensorboard")
# --schedule NAME -> the run's lr schedule (None: constant lr). A builder takes the config, the
# optimizer, the steps per epoch and the linear-scaling factor, and returns a per-epoch Schedule,
# or a gn.optim.Scheduler / ReduceLROnPlateau that the Trainer's StepScheduler adopts (a
# Scheduler with unit="step" advances after every optimizer step). To offer another schedule,
# add its name here and a line in SCHEDULE_HELP.
SCHEDULES = {
    "none": lambda cfg, opt, steps: None,
    "cosine": lambda cfg, opt, steps: optim.Cosine(total=cfg.epochs),                 # base lr -> 0 over the run
    "step": lambda cfg, opt, steps: optim.StepLR(step_size=max(1, cfg.epochs // 3)),  # ×0.1 at 1/3 and 2/3
    "multistep": lambda cfg, opt, steps: optim.MultiStep(milestones=multistep_milestones(cfg.epochs)),
    "onecycle": lambda cfg, opt, steps: onecycle(cfg, opt, steps),
    "plateau": lambda cfg, opt, steps: optim.ReduceLROnPlateau(opt, **PLATEAU),
}
SCHEDULE_HELP = ("none: constant; cosine: to 0 over the run; step: ×0.1 at 1/3 and 2/3 of the epochs; "
                 "multistep: ×0.1 at 1/2 and 3/4; onecycle: per step, up from lr/25 to lr over the first "
                 "3/10 of the run, then down to lr/25e4, momentum (or Adam's β₁) cycled 0.95→0.85→0.95; "
                 "plateau: ×0.1 after 2 epochs without a better val_loss (needs --val-fraction > 0)")
PLATEAU = {"factor": 0.1, "patience": 2, "monitor": "val_loss"}
CYCLES_MOMENTUM = ("sgd", "adam", "adamw", "nadam", "radam")  # optimizers with a momentum or β₁ to cycle


def multistep_milestones(epochs: int) -> list:
    """The epochs where --schedule multistep multiplies the lr by 0.1: at 1/2 and 3/4 of the run."""
    return sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})


def onecycle(cfg, opt, steps_per_epoch: int):
    """--schedule onecycle: a Scheduler over every optimizer step of the run (epochs × steps per
    epoch), from each group's lr, cycling momentum where the optimizer has one. The Trainer
    applies linear scaling to it, as to every schedule."""
    if opt is None or steps_per_epoch is None:
        raise GpunetValueError("schedule onecycle: expected the optimizer and the steps per epoch, got none")
    total = max(2, cfg.epochs * int(steps_per_epoch))
    cycle = cfg.optimizer in CYCLES_MOMENTUM
    return optim.Scheduler(None, optim.OneCycle(total, cycle_momentum=cycle), unit="step",
                           base_lr=[float(g["lr"]) for g in opt.param_groups])


AUGMENT_FLIP = ("cifar10", "fashion-mnist")  # mirror-symmetric classes; digits are not

# Which zoo models and optimizers a setting reaches. A setting the user gives (flag or config
# file) that does not reach the model or optimizer chosen is refused, never silently ignored.
MODEL_SETTINGS = {
    "hidden": ("mlp",),
    "dropout": ("mlp",),
    "init": ("mlp", "softmax_regression", "small_cnn", "tf_cifar10_cnn", "resnet20", "resnet8"),
}
OPTIMIZER_SETTINGS = {"momentum": ("sgd",),
                      "fused": tuple(k for k, c in optim.OPTIMIZERS.items() if c.FUSABLE)}
WHY_NOT = {  # a short reason per (setting, model or optimizer) pair that is refused
    "hidden": "its layer widths are fixed by the architecture",
    "dropout": "it has no Dropout layer",
    "momentum": "Adam, AdamW, NAdam and RAdam use betas (0.9, 0.999) instead; RMSprop and Adagrad are built without momentum",
    "fused": "it has no fused step over flat buffers",
}
PARALLEL_SETTINGS = ("reduce", "lr_scaling")  # data parallel only: with one replica they change nothing
ONE_REPLICA_SETTINGS = ("clip_grad_norm", "augment", "early_stopping", "accumulate")  # not yet wired into data parallel: refused there


def check_applicable(cfg: TrainConfig, given, replicas: int = 1) -> None:
    """Refuse settings in `given` (names the user set) that would not take effect for `cfg`."""
    for name in sorted(given):
        flag = "--" + name.replace("_", "-")
        if name in MODEL_SETTINGS and cfg.model not in MODEL_SETTINGS[name]:
            raise GpunetValueError(f"{flag} does not apply to --model {cfg.model}: {WHY_NOT[name]} "
                                   f"(it applies to {', '.join(MODEL_SETTINGS[name])})")
        off = name == "fused" and not cfg.fused  # fused = false in a config file asks for nothing
        if name in OPTIMIZER_SETTINGS and cfg.optimizer not in OPTIMIZER_SETTINGS[name] and not off:
            raise GpunetValueError(f"{flag} does not apply to --optimizer {cfg.optimizer}: {WHY_NOT[name]} "
                                   f"(it applies to {', '.join(OPTIMIZER_SETTINGS[name])})")
        if name == "momentum" and cfg.schedule == "onecycle":
            raise GpunetValueError(f"{flag} does not apply with --schedule onecycle: it cycles the momentum "
                                   f"between 0.95 and 0.85 itself")
        if name in ONE_REPLICA_SETTINGS and replicas > 1 and getattr(cfg, name) != FIELDS[name].default:
            raise GpunetValueError(f"{flag} applies to single-device runs for now: drop it or train "
                                   f"without --devices / gpunet launch")
        if name in PARALLEL_SETTINGS and replicas == 1 and getattr(cfg, name) != FIELDS[name].default:
            raise GpunetValueError(f"{flag} {getattr(cfg, name)} applies to data parallel only: give "
                                   f"--devices cpu,cpu (or cuda:0,cuda:1) or start the run with gpunet launch")


def schedule(cfg: TrainConfig, optimizer=None, steps_per_epoch=None):
    """The lr schedule of `--schedule` for the Trainer (None for "none"): a per-epoch Schedule,
    or a Scheduler (onecycle, per step) or ReduceLROnPlateau (plateau), which need the optimizer
    and, for onecycle, the steps per epoch."""
    if cfg.schedule == "plateau" and optimizer is None:
        raise GpunetValueError("schedule plateau: expected the optimizer, got none")
    return SCHEDULES[cfg.schedule](cfg, optimizer, steps_per_epoch)


def augmentation(cfg: TrainConfig, sample_shape):
    """The `--augment` transform for training batches: a random crop of the image size from the
    image zero-padded by 1/8 of its side, and a random flip where classes are mirror-symmetric."""
    from ..data import transforms
    if not cfg.augment:
        return None
    side = sample_shape[1]
    parts = [transforms.RandomCrop(side, padding=max(1, side // 8), seed=cfg.seed)]
    if not data.custom.is_custom(cfg.dataset) and data.datasets._canonical(cfg.dataset) in AUGMENT_FLIP:
        parts.append(transforms.RandomFlip(seed=cfg.seed))
    return transforms.Compose(parts, seed=cfg.seed) if len(parts) > 1 else parts[0]


def given_settings(flags: dict, config_file=None) -> set:
    """The TrainConfig names set by the flags (not None) or by the config file."""
    names = {k for k, v in flags.items() if v is not None and k in FIELDS}
    if config_file:
        names |= set(load_config_file(config_file))
    return names


def check_run_name(name: str) -> None:
    """A run name is one folder name inside --out: no separators, no '..', nothing absolute."""
    if not name:
        return
    bad = ("/" in name or "\\" in name or name in (".", "..") or "\0" in name or Path(name).is_absolute()
           or name != name.strip() or len(name.encode()) > 200)
    if bad:
        raise GpunetValueError(f"name: expected one folder name inside --out (no '/', '\\', '..', NUL, "
                               f"surrounding spaces, at most 200 bytes), got {name!r}")


MAX_CONFIG_BYTES = 1 << 20


def read_small_file(path, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. A FIFO, a device, a folder
    or a huge file is refused before it is read, so none of them can hang or fill memory."""
    path = Path(path)
    st = regular_file(path, what, GpunetValueError)
    if st.st_size > limit:
        raise GpunetValueError(f"{what} {path}: expected at most {limit} bytes, got {st.st_size}")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise GpunetValueError(f"{what} {path}: cannot read it: {e.strerror or e}") from None
    if len(data) > limit:
        raise GpunetValueError(f"{what} {path}: expected at most {limit} bytes, got more")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GpunetValueError(f"{what} {path}: expected UTF-8 text, got undecodable bytes at "
                               f"offset {e.start}") from None


def load_config_file(path) -> dict:
    """Read a TOML or JSON config file: a table whose keys are TrainConfig fields, at the top
    level and/or in a [train] table (a key may not be in both)."""
    path = Path(path)
    text = read_small_file(path, "config")
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        values = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, RecursionError, tomllib.TOMLDecodeError) as e:
        raise GpunetValueError(f"config {path}: not valid {kind}: {e}") from None
    if not isinstance(values, dict):
        raise GpunetValueError(f"config {path}: expected a table of settings at the top level, "
                               f"got {type(values).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    if "train" in values:
        table = values.pop("train")
        if not isinstance(table, dict):
            raise GpunetValueError(f"config {path}: expected [train] to be a table, got {type(table).__name__}")
        table = {str(k).replace("-", "_"): v for k, v in table.items()}
        both = sorted(set(values) & set(table))
        if both:
            raise GpunetValueError(f"config {path}: keys {both} are set both at the top level and in "
                                   f"[train]; expected each once")
        values.update(table)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise GpunetValueError(f"config {path}: unknown keys {unknown}; expected some of {sorted(FIELDS)}")
    return values


def resolve(flags: dict, config_file=None, base: dict | None = None) -> TrainConfig:
    """Merge defaults, `base` (a resumed run's saved config), the config file and the flags
    that were given (not None), later ones winning."""
    values = {k: v for k, v in (base or {}).items() if k in FIELDS}
    if config_file:
        values.update(load_config_file(config_file))
    values.update({k: v for k, v in flags.items() if v is not None and k in FIELDS})
    for k, v in values.items():
        kind = type(FIELDS[k].default)
        # Exact types: a bool is not a number here, and 2.5 epochs is an error, not 2.
        allowed = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}[kind]
        if not isinstance(v, allowed) or (kind is not bool and isinstance(v, bool)):
            raise GpunetValueError(f"{k}: expected {kind.__name__}, got {type(v).__name__} {v!r:.80}")
        try:
            values[k] = kind(v)
        except OverflowError:
            raise GpunetValueError(f"{k}: expected a {kind.__name__} in range, got {v!r:.80}") from None
    return TrainConfig(**values).validate()


def datasets(cfg: TrainConfig):
    """(train, val or None, test) Datasets for the config."""
    root = cfg.data_root or None
    full = data.load(cfg.dataset, "train", root=root)
    test = data.load(cfg.dataset, "test", root=root)
    if cfg.val_fraction > 0:
        train, val = data.random_split(full, cfg.val_fraction, seed=cfg.seed)
    else:
        train, val = full, None
    return train, val, test


def build_model(cfg: TrainConfig, sample_shape, classes: int):
    """The zoo model for `cfg` on inputs of shape (C, H, W) (without the batch axis)."""
    c, h, w = sample_shape
    if cfg.model == "mlp":
        return models.mlp([c * h * w, *cfg.hidden_sizes(), classes], dropout=cfg.dropout, init=cfg.init)
    if cfg.model == "softmax_regression":
        return models.softmax_regression(c * h * w, classes, init=cfg.init)
    if cfg.model == "small_cnn":
        return models.small_cnn(in_channels=c, classes=classes, image_size=h, init=cfg.init)
    if cfg.model in ("resnet20", "resnet8"):  # smaller images are zero-padded to 32×32 in the model
        return models.get(cfg.model)(in_channels=c, classes=classes, image_size=h, init=cfg.init)
    return models.tf_cifar10_cnn(classes=classes, init=cfg.init)


def build_optimizer(cfg: TrainConfig, params):
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in OPTIMIZER_SETTINGS["momentum"]:
        kw["momentum"] = cfg.momentum
    if cfg.fused:  # optim.get refuses it for an optimizer without a fused step
        kw["fused"] = True
    return optim.get(cfg.optimizer, params, **kw)


def sample_shape(dataset) -> tuple:
    """(C, H, W) of one image as the DataLoader yields it (a 3-D dataset gains C=1)."""
    shape = tuple(dataset.x.shape[1:])
    return (1, *shape) if len(shape) == 2 else shape


def param_count(model: nn.Module) -> int:
    return sum(p.size for p in model.parameters())
