"""Smooth activations: GELU, SiLU, ELU, Softplus. Each keeps x (and what its backward reuses).

    GELU:     y = x·Φ(x), Φ(x) = erfc(−x/√2)/2        dx = dy·(Φ(x) + x·φ(x))   Hendrycks, Gimpel 2016
      tanh:   y = x·σ(2u), u = √(2/π)·(x + 0.044715·x³)   dx = dy·(σ + 2x·σ(1 − σ)·u')
    SiLU:     y = x·σ(x)                              dx = dy·σ·(1 + x·(1 − σ))   Elfwing et al. 2018
    ELU:      y = x if x > 0 else alpha·(e^x − 1)     dx = dy·(1 or alpha·e^x)    Clevert et al. 2016
    Softplus: y = log(1 + e^(βx))/β, or x where βx > threshold;   dx = dy·σ(βx), or dy

σ(2u) is (1 + tanh u)/2 without the cancellation of 1 + tanh u for u << 0, and Φ uses
erfc, so both GELUs keep their relative accuracy in the left tail. PyTorch evaluates
0.5·x·(1 + erf(x/√2)) and 0.5·x·(1 + tanh u): the two agree to rounding for x > −4
and differ beyond (at x = −10 PyTorch's exact GELU is −0.0, this one −7.6e-23).

NumPy has no erf, so `erfc` below is evaluated from two classic expansions in float64
(Abramowitz & Stegun 7.1.6 and 7.1.14):
    |t| < 1.5:  erf(t) = (2/√π)·e^(−t²)·Σ_k 2^k·t^(2k+1)/(1·3···(2k+1))    (positive terms)
    |t| ≥ 1.5:  erfc(t) = e^(−t²)/√π · 1/(t + (1/2)/(t + 1/(t + (3/2)/(t + ...))))   (80 levels)
e^(−t²) is split so that t² is not rounded. Relative error below 3e-14 over the real
line; one xp code path (CuPy has no erf without SciPy).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ._layer import Layer, real
from .activation import sigmoid

_SERIES_TERMS, _FRACTION_DEPTH, _SPLIT = 30, 80, 1.5


def erfc(t):
    """erfc(t) elementwise, in float64 (see the module docstring)."""
    xp = backend.xp_of(t)
    t = xp.asarray(t, dtype=np.float64)
    a = xp.abs(t)
    out = xp.empty_like(a)
    near = a < _SPLIT
    s = a[near]
    s2 = s * s
    term, total = s.copy(), s.copy()
    for k in range(1, _SERIES_TERMS):
        term *= s2 * (2.0 / (2 * k + 1))
        total += term
    out[near] = 1.0 - (2.0 / math.sqrt(math.pi)) * xp.exp(-s2) * total
    f = a[~near]
    cf = f.copy()
    for k in range(_FRACTION_DEPTH, 0, -1):
        cf = f + (0.5 * k) / cf
    out[~near] = _exp_minus_square(xp, f) / (math.sqrt(math.pi) * cf)
    return xp.where(t < 0, 2.0 - out, out)


def _exp_minus_square(xp, f):
    """e^(−f²) without the rounding of f² (relative error f²·2^−53 in e^(−f²), 8e-14 at f = 27):
    f = hi + lo with hi on a 2^−12 grid, so hi² is exact and f² = hi² + lo·(f + hi)."""
    hi = xp.floor(f * 4096.0) * (1.0 / 4096.0)
    return xp.exp(-hi * hi) * xp.exp(-(f - hi) * (f + hi))


def _check_float(layer, x):
    layer._check_float(x)
    return backend.xp_of(x)


class GELU(Layer):
    """Gaussian error linear unit; approximate="none" (x·Φ(x)) or "tanh" (as in PyTorch).

    Differs from PyTorch only below x ≈ −4, where this one is the more accurate (see above).
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise GpunetValueError(f"GELU: approximate expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._cache = None

    _K, _C = math.sqrt(2.0 / math.pi), 0.044715

    def forward(self, x):
        xp = _check_float(self, x)
        if self.approximate == "tanh":
            u = x * x
            u *= self._C
            u += 1.0
            u *= x * (2.0 * self._K)                  # 2u
            p = sigmoid(u)
        else:
            p = (0.5 * erfc(x * (-1.0 / math.sqrt(2.0)))).astype(x.dtype, copy=False)   # Φ(x)
        self._cache = (x, p)
        return x * p

    def backward(self, dy, need_input_grad=True):
        x, p = self._saved()
        self._check_dy(dy, x.shape)
        xp = backend.xp_of(dy)
        if self.approximate == "tanh":
            du = x * x
            du *= 3.0 * self._C
            du += 1.0
            du *= 2.0 * self._K                       # (2u)'
            d = 1.0 - p
            d *= p
            d *= du
            d *= x
            d += p                                    # σ + x·σ(1 − σ)·(2u)'
        else:
            d = x * x
            d *= -0.5
            xp.exp(d, out=d)
            d *= x * (1.0 / math.sqrt(2.0 * math.pi))   # x·φ(x)
            d += p
        d *= dy
        return d

    def extra_repr(self):
        return "" if self.approximate == "none" else "approximate='tanh'"


class SiLU(Layer):
    """x·σ(x) (also called swish)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        _check_float(self, x)
        s = sigmoid(x)
        self._cache = (x, s)
        return x * s

    def backward(self, dy, need_input_grad=True):
        x, s = self._saved()
        self._check_dy(dy, x.shape)
        d = 1.0 - s
        d *= x
        d += 1.0
        d *= s
        d *= dy
        return d


class ELU(Layer):
    """x for x > 0, alpha·(e^x − 1) otherwise (expm1: exact near 0)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = real("ELU", "alpha", alpha)
        self._cache = None

    def forward(self, x):
        xp = _check_float(self, x)
        y = xp.expm1(xp.minimum(x, 0.0))               # no overflow for large x
        y *= self.alpha
        y = xp.where(x > 0, x, y)
        self._cache = x
        return y

    def backward(self, dy, need_input_grad=True):
        x = self._saved()
        self._check_dy(dy, x.shape)
        xp = backend.xp_of(dy)
        d = xp.exp(xp.minimum(x, 0.0))
        d *= self.alpha
        return dy * xp.where(x > 0, 1.0, d).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return "" if self.alpha == 1.0 else f"alpha={self.alpha}"


class Softplus(Layer):
    """log(1 + e^(beta·x))/beta, linear (y = x) where beta·x > threshold (PyTorch's arguments)."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = real("Softplus", "beta", beta, 0.0, low_open=True)
        self.threshold = real("Softplus", "threshold", threshold)
        self._cache = None

    def forward(self, x):
        xp = _check_float(self, x)
        bx = x * self.beta
        linear = bx > self.threshold
        y = xp.log1p(xp.exp(xp.minimum(bx, self.threshold)))
        y *= 1.0 / self.beta
        y = xp.where(linear, x, y)
        self._cache = (bx, linear)
        return y

    def backward(self, dy, need_input_grad=True):
        bx, linear = self._saved()
        self._check_dy(dy, bx.shape)
        xp = backend.xp_of(dy)
        return dy * xp.where(linear, 1.0, sigmoid(bx)).astype(dy.dtype, copy=False)

    def extra_repr(self):
        parts = [] if self.beta == 1.0 else [f"beta={self.beta}"]
        parts += [] if self.threshold == 20.0 else [f"threshold={self.threshold}"]
        return ", ".join(parts)
