"""Dropout (Srivastava et al. 2014), inverted or classic.

Training draws keep = (u >= p), u ~ U[0, 1), so each unit survives with probability 1 − p.

    scale=True  (inverted, the PyTorch/Keras default):
        train: y = x · keep / (1 − p)       eval: y = x
    scale=False (classic, as in the original paper):
        train: y = x · keep                 eval: y = x · (1 − p)

Both give E[y_train] = y_eval. Inverted dropout makes inference free and lets a
trained model be used without knowing p; classic dropout matches the paper and old
checkpoints trained that way, and keeps the training-time activations unscaled
(which matters when comparing activation statistics with and without dropout).
backward: dx = dy · keep (· 1/(1 − p) when scaled) in training; the eval factor otherwise.
The boolean mask (1 byte per unit) is what is kept.

Dropout2d (Tompson et al. 2015) zeroes whole channels: one draw per (n, c) of an
(N, C, H, W) input, the mask broadcast over H and W.
"""
from __future__ import annotations

from .. import backend
from ._layer import Layer, boolean, real


class Dropout(Layer):
    """Zeroes each element with probability p in training mode. Any input shape.

    Masks come from `self.generator.uniform(shape, dtype)`. `generator=None` uses the
    generator of the device that holds x (gn.manual_seed seeds it); the data-parallel
    engine sets one independent generator per replica.
    """

    def __init__(self, p=0.5, scale=True):
        super().__init__()
        self.p = real("Dropout", "p", p, 0.0, 1.0, high_open=True)
        self.scale = boolean("Dropout", "scale", scale)
        self.generator = None
        self._cache = None

    def forward(self, x):
        self._check_float(x)
        if not self.training or self.p == 0.0:
            self._cache = (None, x.shape)
            factor = self._eval_factor()
            return x if factor == 1.0 else x * factor
        gen = self.generator if self.generator is not None else backend.device_of(x)
        keep = gen.uniform(self._mask_shape(x), x.dtype) >= self.p
        y = x * keep
        if self.scale:
            y *= 1.0 / (1.0 - self.p)
        self._cache = (keep, x.shape)
        return y

    def _mask_shape(self, x):
        return x.shape

    def _eval_factor(self):
        return 1.0 if (self.scale or self.p == 0.0) else 1.0 - self.p

    def backward(self, dy, need_input_grad=True):
        keep, shape = self._saved()
        self._check_dy(dy, shape)
        if keep is None:
            factor = self._eval_factor()
            return dy if factor == 1.0 else dy * factor
        dx = dy * keep
        if self.scale:
            dx *= 1.0 / (1.0 - self.p)
        return dx

    def extra_repr(self):
        return f"p={self.p}" + ("" if self.scale else ", scale=False")


class Dropout2d(Dropout):
    """Zeroes whole channels of (N, C, H, W) inputs with probability p (spatial dropout).

    scale=True rescales the kept channels by 1/(1 − p) (PyTorch); scale=False is classic,
    as in Dropout.
    """

    def forward(self, x):
        self._check_array(x)
        if x.ndim != 4:
            raise self._shape_error("(N, C, H, W)", x)
        return super().forward(x)

    def _mask_shape(self, x):
        return (*x.shape[:2], 1, 1)

    def backward(self, dy, need_input_grad=True):
        return super().backward(dy)  # the (N, C, 1, 1) mask broadcasts over H and W
