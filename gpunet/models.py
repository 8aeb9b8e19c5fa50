"""The model zoo: small, classic networks built only from `gn.nn` layers.

Every model takes NCHW images (the DataLoader's layout) and returns logits.

- `softmax_regression`: Flatten + one Linear (the TensorFlow MNIST beginner model).
- `mlp`: Flatten + Linear/activation blocks (+ optional Dropout).
- `tf_cifar10_cnn`: the TensorFlow CIFAR-10 tutorial network on 24×24 crops
  (Krizhevsky's cuda-convnet layers-18pct lineage). Its local response
  normalisation is left out by default; `batchnorm=True` puts BatchNorm2d there.
- `small_cnn`: conv-BN-ReLU-pool blocks for MNIST, Fashion-MNIST and CIFAR.
"""
from __future__ import annotations

from . import nn
from .errors import GpunetValueError

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise GpunetValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def softmax_regression(in_features: int, classes: int, init: str = "zeros") -> nn.Sequential:
    """logits = flatten(x) @ W.T + b, with W and b initialised by `init` (zeros by default)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes, init=init))


def mlp(sizes, activation: str = "relu", dropout: float = 0.0, init: str = "he_normal",
        out_init: str | None = None) -> nn.Sequential:
    """Flatten, then Linear(sizes[i], sizes[i+1]) with `activation` (and Dropout) between.

    `sizes` includes the input and output widths, e.g. [784, 512, 256, 10]. The last
    Linear has no activation: it produces logits. `out_init` defaults to `init`.
    """
    sizes = [int(s) for s in sizes]
    _activation(activation)  # validate even when there is no hidden layer
    if len(sizes) < 2 or min(sizes) < 1:
        raise GpunetValueError(f"mlp: sizes expected at least two positive widths, got {sizes}")
    if not 0.0 <= dropout < 1.0:
        raise GpunetValueError(f"mlp: dropout expected a probability in [0, 1), got {dropout}")
    layers = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(fan_in, fan_out, init=(out_init or init) if last else init))
        if not last:
            layers.append(_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def tf_cifar10_cnn(classes: int = 10, batchnorm: bool = False, init: str = "he_normal") -> nn.Sequential:
    """The TensorFlow CIFAR-10 tutorial CNN, for 3×24×24 inputs.

    conv5×5×64 (same) → ReLU → maxpool 3×3/2 → conv5×5×64 → ReLU → maxpool 3×3/2
    → FC 384 → ReLU → FC 192 → ReLU → FC classes. The tutorial's LRN layers are
    omitted (batchnorm=False) or replaced by BatchNorm2d after each conv.
    """
    def block(cin):
        layers = [nn.Conv2d(cin, 64, 5, padding=2, init=init)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(64))
        return layers + [nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]

    return nn.Sequential(*block(3), *block(64), nn.Flatten(),
                         nn.Linear(64 * 6 * 6, 384, init=init), nn.ReLU(),
                         nn.Linear(384, 192, init=init), nn.ReLU(),
                         nn.Linear(192, classes, init="glorot_uniform"))


def small_cnn(in_channels: int = 1, classes: int = 10, image_size: int = 28, width: int = 32,
              hidden: int = 128, bn_before_relu: bool = True, init: str = "he_normal") -> nn.Sequential:
    """Two conv3×3-BN-ReLU-maxpool2 blocks (width, 2·width channels), then FC hidden → classes.

    `bn_before_relu=False` places BatchNorm after the ReLU (the batchnorm-placement
    experiment compares the two). `init` initialises the convolutions and the hidden
    Linear; the output Linear stays glorot_uniform.
    """
    if image_size % 4:
        raise GpunetValueError(f"small_cnn: image_size expected a multiple of 4, got {image_size}")

    def block(cin, cout):
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False, init=init)
        pair = [nn.BatchNorm2d(cout), nn.ReLU()] if bn_before_relu else [nn.ReLU(), nn.BatchNorm2d(cout)]
        return [conv, *pair, nn.MaxPool2d(2)]

    side = image_size // 4
    return nn.Sequential(*block(in_channels, width), *block(width, 2 * width), nn.Flatten(),
                         nn.Linear(2 * width * side * side, hidden, init=init), nn.ReLU(),
                         nn.Linear(hidden, classes, init="glorot_uniform"))


ZOO = {"softmax_regression": softmax_regression, "mlp": mlp, "tf_cifar10_cnn": tf_cifar10_cnn,
       "small_cnn": small_cnn}


def get(name: str):
    if name not in ZOO:
        raise GpunetValueError(f"model: expected one of {sorted(ZOO)}, got {name!r}")
    return ZOO[name]
