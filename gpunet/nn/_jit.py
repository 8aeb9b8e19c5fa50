"""Compiled CPU loops for MaxPool2d, BatchNorm and ReLU's backward, with Numba (the optional extra gpunet[cpu]).

NumPy runs each element-wise step as its own pass over memory, and its strided and
masked passes (a window's columns, a select) run at 1–3 ns an element. These loops do
a layer's work in the fewest passes that its data flow allows:

    maxpool_forward   y and the argmax (int32 plane offset, −1 for a NaN window) in one pass
    maxpool_backward  dx: zero each plane, add dy at the argmax (exact where windows overlap)
    bn_sums           Σ(x − K) and Σ(x − K)² per channel in float64, K = the channel's first value
    bn_affine         y = x·scale[c] + shift[c]
    bn_grad_sums      Σ dy and Σ dy·(x − mean) per channel in float64
    bn_grad_input     dx = a[c]·dy + b[c]·(x − mean[c]) + d[c]
    relu_backward     dx = dy where y > 0, else +0 (one pass; the NumPy select takes three)

Each takes a batch range [lo, hi) and releases the GIL (nogil), so the layers run them
over batch chunks on gpunet's CPU threads (gpunet.threads), like their NumPy passes.
Every loop has a NumPy twin in the layer that runs when Numba is absent or switched
off (`use(False)`); the tests hold the two to each other. Compiled on first use, about
a second per loop and dtype: the BatchNorm and max-pool backward loops are cached on disk
by Numba; the max-pool forward is compiled once per kernel size in each process (its
constant trip counts unroll, ~3× faster than runtime ones).
"""
from __future__ import annotations

import threading
import warnings

import numpy as np

_state = {"enabled": True, "kernels": None, "error": None}


def use(enabled: bool = True) -> bool:
    """Switch the compiled loops on or off (the NumPy paths run when off); returns the old setting."""
    old = _state["enabled"]
    _state["enabled"] = bool(enabled)
    return old


def describe() -> str:
    """Which loops run: "numba X.Y", or "numpy (why)" when switched off or unavailable."""
    if kernels() is None:
        return "numpy (switched off)" if not _state["enabled"] else f"numpy (Numba unavailable: {_state['error']})"
    import numba
    return f"numba {numba.__version__}"


def kernels():
    """The compiled loops as a namespace, or None (switched off, or Numba not installed)."""
    if not _state["enabled"]:
        return None
    if _state["kernels"] is None and _state["error"] is None:
        try:
            _state["kernels"] = _build()
        except ImportError as e:  # gpunet[cpu] not installed: the NumPy paths run
            _state["error"] = e
        except Exception as e:  # noqa: BLE001 - a broken Numba install: said once, NumPy runs
            _state["error"] = e
            warnings.warn(f"gpunet: the compiled CPU loops (Numba) could not be built, the NumPy "
                          f"paths run instead: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
    return _state["kernels"]


def _build():
    import types

    import numba

    jit = numba.njit(nogil=True, cache=True)
    # reassoc only: sums may be vectorised (reordered); NaN and Inf keep their meaning.
    jit_sum = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})

    @jit
    def maxpool_backward(dy, arg, dx, lo, hi):
        C, HW = dx.shape[1], dx.shape[2]
        Ho, Wo = dy.shape[2], dy.shape[3]
        for n in range(lo, hi):
            for c in range(C):
                for k in range(HW):
                    dx[n, c, k] = 0
                for ho in range(Ho):
                    for wo in range(Wo):
                        at = arg[n, c, ho, wo]
                        if at >= 0:
                            dx[n, c, at] += dy[n, c, ho, wo]

    @jit_sum
    def bn_sums(x, shift, s1, s2, lo, hi):
        C, L = x.shape[1], x.shape[2]
        for c in range(C):
            k = shift[c]
            a = 0.0
            b = 0.0
            for n in range(lo, hi):
                for j in range(L):
                    d = float(x[n, c, j]) - k
                    a += d
                    b += d * d
            s1[c] = a
            s2[c] = b

    @jit
    def bn_affine(x, scale, shift, y, lo, hi):
        C, L = x.shape[1], x.shape[2]
        for n in range(lo, hi):
            for c in range(C):
                s, t = scale[c], shift[c]
                for j in range(L):
                    y[n, c, j] = x[n, c, j] * s + t

    @jit_sum
    def bn_grad_sums(dy, x, mean, s1, s2, lo, hi):
        C, L = x.shape[1], x.shape[2]
        for c in range(C):
            m = mean[c]
            a = 0.0
            b = 0.0
            for n in range(lo, hi):
                for j in range(L):
                    g = float(dy[n, c, j])
                    a += g
                    b += g * (float(x[n, c, j]) - m)
            s1[c] = a
            s2[c] = b

    @jit
    def bn_grad_input(dy, x, a, b, m, d, dx, lo, hi):
        C, L = x.shape[1], x.shape[2]
        for n in range(lo, hi):
            for c in range(C):
                ac, bc, mc, dc = a[c], b[c], m[c], d[c]
                for j in range(L):
                    dx[n, c, j] = ac * dy[n, c, j] + bc * (x[n, c, j] - mc) + dc

    forwards, lock = {}, threading.Lock()

    def maxpool_forward(x, y, arg, kh, kw, sh, sw, ph, pw, lo, hi):
        key = (kh, kw)  # one compiled loop per kernel size: constant trip counts unroll (~3× faster)
        loop = forwards.get(key)
        if loop is None:
            with lock:  # batch chunks arrive together on the first call: compile once
                loop = forwards.get(key) or forwards.setdefault(key, _maxpool_forward_for(numba, kh, kw))
        loop(x, y, arg, sh, sw, ph, pw, lo, hi)

    @jit
    def relu_backward(dy, y, dx, lo, hi):
        zero = dx.dtype.type(0)
        for n in range(lo, hi):
            for k in range(dy.shape[1]):
                dx[n, k] = dy[n, k] if y[n, k] > 0 else zero   # a select: NaN·0 never leaks

    return types.SimpleNamespace(relu_backward=relu_backward,
                                 maxpool_forward=maxpool_forward, maxpool_backward=maxpool_backward,
                                 bn_sums=bn_sums, bn_affine=bn_affine, bn_grad_sums=bn_grad_sums,
                                 bn_grad_input=bn_grad_input, numba_version=numba.__version__)


def _maxpool_forward_for(numba, KH, KW):
    """The max-pool forward loop for a KH×KW kernel (compiled once per size in a process)."""

    @numba.njit(nogil=True)
    def forward(x, y, arg, sh, sw, ph, pw, lo, hi):
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
        Ho, Wo = y.shape[2], y.shape[3]
        for n in range(lo, hi):
            for c in range(C):
                p = x[n, c]
                for ho in range(Ho):
                    h0 = ho * sh - ph
                    for wo in range(Wo):
                        w0 = wo * sw - pw
                        i0, j0 = max(h0, 0), max(w0, 0)
                        best = p[i0, j0]            # the window's first element inside x
                        at = i0 * W + j0
                        bad = False
                        if h0 >= 0 and w0 >= 0 and h0 + KH <= H and w0 + KW <= W:
                            for i in range(KH):     # inside x: no bounds tests, unrolled
                                for j in range(KW):
                                    v = p[h0 + i, w0 + j]
                                    up = v > best   # strictly: the first maximum wins ties
                                    best = v if up else best  # selects, not branches: random
                                    at = (h0 + i) * W + w0 + j if up else at  # data mispredicts
                                    bad |= v != v
                        else:
                            for i in range(KH):
                                h = h0 + i
                                if h < 0 or h >= H:
                                    continue
                                for j in range(KW):
                                    w = w0 + j
                                    if w < 0 or w >= W:
                                        continue
                                    v = p[h, w]
                                    up = v > best
                                    best = v if up else best
                                    at = h * W + w if up else at
                                    bad |= v != v
                        if bad:
                            best = np.nan               # NaN: y is NaN and routes nothing
                            at = -1
                        y[n, c, ho, wo] = best
                        arg[n, c, ho, wo] = at

    return forward
