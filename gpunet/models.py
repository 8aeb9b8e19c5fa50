"""The model zoo: small, classic networks built only from `gn.nn` layers.

Every model takes NCHW images (the DataLoader's layout) and returns logits.

- `softmax_regression`: Flatten + one Linear (the TensorFlow MNIST beginner model).
- `mlp`: Flatten + Linear/activation blocks (+ optional Dropout).
- `tf_cifar10_cnn`: the TensorFlow CIFAR-10 tutorial network on 24×24 crops
  (Krizhevsky's cuda-convnet layers-18pct lineage), with its local response
  normalisation; `batchnorm=True` puts BatchNorm2d after each conv instead.
- `small_cnn`: conv-BN-ReLU-pool blocks for MNIST, Fashion-MNIST and CIFAR.
- `resnet20`, `resnet8`: the CIFAR ResNets of He et al. 2016 (section 4.2) for 32×32
  inputs; smaller images are zero-padded to 32×32 by the model's first layer.
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


def tf_cifar10_cnn(classes: int = 10, batchnorm: bool = False, init: str = "he_normal",
                   lrn: bool | None = None) -> nn.Sequential:
    """The TensorFlow CIFAR-10 tutorial CNN, for 3×24×24 inputs.

    conv5×5×64 (same) → ReLU → maxpool 3×3/2 → LRN → conv5×5×64 → ReLU → LRN → maxpool 3×3/2
    → FC 384 → ReLU → FC 192 → ReLU → FC classes. The LRN is the tutorial's
    tf.nn.lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75), i.e.
    LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1). batchnorm=True puts BatchNorm2d
    after each conv and, unless lrn=True is given too, drops the LRN layers it replaces.
    """
    if not isinstance(batchnorm, bool) or not (lrn is None or isinstance(lrn, bool)):
        raise GpunetValueError(f"tf_cifar10_cnn: batchnorm and lrn expected True or False (lrn also None), "
                               f"got batchnorm={batchnorm!r}, lrn={lrn!r}")
    use_lrn = (not batchnorm) if lrn is None else lrn

    def block(cin, lrn_before_pool):
        layers = [nn.Conv2d(cin, 64, 5, padding=2, init=init)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(64))
        norm = [nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)] if use_lrn else []
        pool = [nn.MaxPool2d(3, stride=2, padding=1)]
        return layers + [nn.ReLU()] + (norm + pool if lrn_before_pool else pool + norm)

    return nn.Sequential(*block(3, False), *block(64, True), nn.Flatten(),
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


def _basic_block(cin, cout, stride, init="he_normal"):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the input (or its 1×1 conv-BN projection when the
    shape changes: He et al.'s option B), then ReLU."""
    body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, init=init),
                         nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False, init=init),
                         nn.BatchNorm2d(cout))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False, init=init),
                                 nn.BatchNorm2d(cout))
    return [nn.Residual(body, shortcut), nn.ReLU()]


def resnet(depth: int, in_channels: int = 3, classes: int = 10, image_size: int = 32,
           width: int = 16, init: str = "he_normal") -> nn.Sequential:
    """The CIFAR ResNet of depth 6n + 2 (He et al. 2016, section 4.2).

    conv3×3×width-BN-ReLU, three stages of n basic blocks with width, 2·width and 4·width
    channels (stride 2 at the start of stages 2 and 3: 32→16→8), global average pooling,
    FC classes. Projection shortcuts (1×1 conv + BN) where the shape changes, so the net
    is built from gn.nn layers only. Inputs smaller than 32×32 (28×28 MNIST) are
    zero-padded to 32×32 by a leading ZeroPad2d; larger ones are used as they are. `init`
    initialises every convolution; the output Linear stays glorot_uniform.
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise GpunetValueError(f"resnet: depth expected 6n + 2 (8, 14, 20, 32, ...), got {depth!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise GpunetValueError(f"resnet: image_size expected an int >= 8, got {image_size!r}")
    n = (depth - 2) // 6
    layers = []
    if image_size < 32:
        lo = (32 - image_size) // 2
        hi = 32 - image_size - lo
        layers.append(nn.ZeroPad2d((lo, hi, lo, hi)))
    layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False, init=init),
               nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage in range(3):
        cout = width * 2 ** stage
        for b in range(n):
            layers += _basic_block(cin, cout, 2 if (stage > 0 and b == 0) else 1, init)
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes, init="glorot_uniform")]
    return nn.Sequential(*layers)


def resnet20(in_channels: int = 3, classes: int = 10, image_size: int = 32, init: str = "he_normal") -> nn.Sequential:
    """ResNet-20 for CIFAR-style 32×32 inputs (0.27M parameters): `resnet(20, ...)`."""
    return resnet(20, in_channels, classes, image_size, init=init)


def resnet8(in_channels: int = 3, classes: int = 10, image_size: int = 32, init: str = "he_normal") -> nn.Sequential:
    """ResNet-8 (one block per stage, 78k parameters): `resnet(8, ...)`."""
    return resnet(8, in_channels, classes, image_size, init=init)


ZOO = {"softmax_regression": softmax_regression, "mlp": mlp, "tf_cifar10_cnn": tf_cifar10_cnn,
       "small_cnn": small_cnn, "resnet20": resnet20, "resnet8": resnet8}


def get(name: str):
    if name not in ZOO:
        raise GpunetValueError(f"model: expected one of {sorted(ZOO)}, got {name!r}")
    return ZOO[name]
