"""The `gpunet train` configuration and how a run is built from it.

Precedence: dataclass defaults < `--config FILE.toml` (or .json) < explicit flags.
Config files are data (TOML/JSON), never evaluated.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from . import data, models, nn, optim
from .errors import GpunetValueError

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

    def validate(self) -> "TrainConfig":
        finite = math.isfinite(self.lr) and math.isfinite(self.weight_decay)
        checks = [("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", finite and self.lr > 0, "> 0 and finite"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", finite and self.weight_decay >= 0, ">= 0 and finite"),
                  ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                  ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
                  ("checkpoint_every", self.checkpoint_every >= 0, ">= 0")]
        for name, ok, want in checks:
            if not ok:
                raise GpunetValueError(f"{name}: expected a value {want}, got {getattr(self, name)!r}")
        self.hidden_sizes()
        for name, value, valid in (("reduce", self.reduce, ("mean", "sum")),
                                   ("lr_scaling", self.lr_scaling, ("none", "linear"))):
            if value not in valid:
                raise GpunetValueError(f"{name}: expected one of {valid}, got {value!r}")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise GpunetValueError(f"warmup_epochs: expected a finite value >= 0, got {self.warmup_epochs!r}")
        models.get(self.model)
        return self

    def hidden_sizes(self) -> list:
        """The mlp hidden widths parsed from `hidden` ("256,128" -> [256, 128]; "" -> none)."""
        parts = [p.strip() for p in self.hidden.split(",") if p.strip()]
        if not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise GpunetValueError(f"hidden: expected comma-separated positive ints such as '256,128', "
                                   f"got {self.hidden!r}")
        return [int(p) for p in parts]

    def device_list(self):
        """The data-parallel replicas' devices, or None for one device."""
        devs = [d.strip() for d in self.devices.split(",") if d.strip()]
        return devs or None

    @property
    def run_name(self) -> str:
        return self.name or f"{self.dataset}-{self.model}"


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_config_file(path) -> dict:
    """Read a TOML or JSON config file: keys must be TrainConfig fields."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise GpunetValueError(f"config: cannot read {path}: {e}") from None
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise GpunetValueError(f"config {path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    values = values.get("train", values)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise GpunetValueError(f"config {path}: unknown keys {unknown}; expected some of {sorted(FIELDS)}")
    return {k.replace("-", "_"): v for k, v in values.items()}


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
            raise GpunetValueError(f"{k}: expected {kind.__name__}, got {type(v).__name__} {v!r}")
        values[k] = kind(v)
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
        return models.small_cnn(in_channels=c, classes=classes, image_size=h)
    if cfg.model in ("resnet20", "resnet8"):  # smaller images are zero-padded to 32×32 in the model
        return models.get(cfg.model)(in_channels=c, classes=classes, image_size=h)
    return models.tf_cifar10_cnn(classes=classes)


def build_optimizer(cfg: TrainConfig, params):
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        kw["momentum"] = cfg.momentum
    return optim.get(cfg.optimizer, params, **kw)


def sample_shape(dataset) -> tuple:
    """(C, H, W) of one image as the DataLoader yields it (a 3-D dataset gains C=1)."""
    shape = tuple(dataset.x.shape[1:])
    return (1, *shape) if len(shape) == 2 else shape


def param_count(model: nn.Module) -> int:
    return sum(p.size for p in model.parameters())
