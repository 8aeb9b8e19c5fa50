"""2-d pooling over NCHW inputs: MaxPool2d and AvgPool2d.

    MaxPool2d: y[n, c, ho, wo] = max_{i,j} xpad[n, c, sh·ho + i, sw·wo + j]   (xpad padded with −inf)
               dx: each window's dy goes to its argmax only; ties go to the first
               element in row-major window order (exactly one element per window).
    AvgPool2d: y = (1 / n[ho, wo]) Σ_{i,j} xpad[...]                          (xpad padded with 0)
               dx: dy / n to every element of the window. n = kh·kw (count_include_pad=True,
               PyTorch's default) or the number of input elements in the window (False).

ceil_mode=True (PyTorch's rule): Ho = ceil((H + 2·ph − kh) / sh) + 1, less one if the last
window would start in the bottom padding; the last windows may run past the padding, so
the input is padded by the overhang too (−inf or 0), and AvgPool2d's n counts only the
part of each window inside the padded input (as PyTorch does).

AvgPool2d (and MaxPool2d on the GPU) loop over the kh·kw kernel offsets with strided
slices (see _window.py), so overlapping windows (e.g. 3×3 stride 2) accumulate exactly
in backward. MaxPool2d there keeps x and y (backward finds the first maximum per window).
CPU: MaxPool2d runs the compiled loops of _jit.py (gpunet[cpu]) or its NumPy twin
(a separable max, and backward as a scatter-add to the first maxima), over batch chunks.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetValueError
from ..ops import relu as relu_ops
from . import _jit
from ._chunks import over_batch
from ._layer import Layer, boolean, int_pair
from ._window import crop_hw, offset_view, pad_hw


def pool_out_size(size, k, s, p, ceil_mode):
    """Outputs along one axis, PyTorch's rule (windows must start inside input or left padding)."""
    span = size + 2 * p - k
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


class _Pool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = int_pair(name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair(name, "stride", stride)
        self.padding = int_pair(name, "padding", padding, minimum=0)
        self.ceil_mode = boolean(name, "ceil_mode", ceil_mode)
        for p, k in zip(self.padding, self.kernel_size):
            if 2 * p > k:  # else a window could lie entirely in the padding
                raise GpunetValueError(f"{name}: padding expected at most half the kernel size "
                                       f"{self.kernel_size}, got {padding!r}")
        self._cache = None

    def _geometry(self, x):
        """Validates x and returns (Ho, Wo)."""
        self._check_array(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.ndim != 4:
            raise self._shape_error("(N, C, H, W)", x)
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise self._shape_error(f"H + 2·{ph} >= {kh} and W + 2·{pw} >= {kw} (the window must fit)", x)
        self._check_float(x)
        return tuple(pool_out_size(n, k, s, p, self.ceil_mode)
                     for n, k, s, p in zip(x.shape[2:], self.kernel_size, self.stride, self.padding))

    def _overhang(self, x_shape, Ho, Wo):
        """(eh, ew): rows and columns that ceil_mode's last windows reach past the padded input."""
        return tuple(max(0, (n_out - 1) * s + k - (n + 2 * p)) for n_out, n, s, k, p in
                     zip((Ho, Wo), x_shape[2:], self.stride, self.kernel_size, self.padding))

    def _offsets(self):
        kh, kw = self.kernel_size
        return [(k, divmod(k, kw)) for k in range(kh * kw)]

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}"
        if self.stride != self.kernel_size:
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        return s


class MaxPool2d(_Pool2d):
    """Max over each (kh, kw) window; stride defaults to kernel_size. (N, C, H, W) -> (N, C, Ho, Wo).

    Ties go to the first maximum in row-major window order. A window holding NaN has
    y = NaN and routes no gradient. Three paths behind the one API:
    - CPU, compiled (gpunet[cpu]): one pass gives y and each window's argmax (int32, kept);
      backward zeroes dx and adds dy at the argmaxes. No padded copy of x.
    - CPU, NumPy: y separably, the max over each row's kw columns (strided column views)
      then over kh rows, ~2× fewer passes than one per kernel offset. Backward finds each
      window's first maximum (x == y offset by offset, weighted so a running `maximum`
      keeps the first) and scatter-adds dy there with np.add.at, exact where windows
      overlap, instead of masked strided copies.
    - GPU: a chain of `maximum`s over the kh·kw offset views keeping (x, y): x is usually
      kept by the layer before anyway (ReLU keeps its output), so this costs no memory.
      Backward finds each window's first maximum offset by offset (the first offset equal
      to y wins and is masked out for the later ones).
    All CPU passes run over batch chunks on gpunet's CPU threads (gpunet.threads).
    """

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        xp = backend.xp_of(x)
        jk = None if backend.is_cupy_array(x) else _jit.kernels()
        if jk is not None:  # compiled: y and each window's argmax in one pass, no padded copy
            xc = np.ascontiguousarray(x)
            y = np.empty((*x.shape[:2], Ho, Wo), dtype=x.dtype)
            arg = np.empty(y.shape, dtype=np.int32)
            over_batch(x, lambda lo, hi: jk.maxpool_forward(xc, y, arg, *self.kernel_size, *self.stride,
                                                             *self.padding, lo, hi))
            self._cache = (xc, y, x.shape, x, (jk, arg))
            return y
        xpad = pad_hw(x, *self.padding, -np.inf, *self._overhang(x.shape, Ho, Wo))
        if backend.is_cupy_array(x):
            y = None
            for _, (i, j) in self._offsets():
                s = offset_view(xpad, i, j, Ho, Wo, *self.stride)
                if y is None:
                    y = xp.array(s, copy=True, order="C")  # never a view of x: y is updated in place
                else:
                    xp.maximum(y, s, out=y)
        else:
            y = _cpu_window_max(xpad, self.kernel_size, self.stride, Ho, Wo)
        self._cache = (xpad, y, x.shape, x, None)  # references only: no copy of x
        return y

    def _tiles(self, x_shape):
        """True when the windows cover the input exactly once (stride = kernel, no padding)."""
        (kh, kw), (H, W) = self.kernel_size, x_shape[2:]
        return (self.stride == self.kernel_size and self.padding == (0, 0)
                and H % kh == 0 and W % kw == 0)

    def fuses_forward_with(self, prev) -> bool:
        """True on the CPU's compiled path after a ReLU that keeps a float array (not mask=True):
        max(·, 0) commutes with the window max, so pooling first saves the ReLU's full-size pass."""
        return (getattr(prev, "forward_deferred", None) is not None and not getattr(prev, "mask", True)
                and not prev.device.is_gpu and _jit.kernels() is not None)

    def forward_fused(self, prev, x):
        """prev.forward then self.forward for the ReLU `prev`: the pool of x, then max(·, 0) at the
        pooled size. Each window's first maximum of x is the one of relu(x) wherever that max
        is > 0, and elsewhere the fused backward routes nothing (see backward_fused): the
        outputs and gradients equal the two layers run in sequence."""
        x = prev.forward_deferred(x)
        y = self.forward(x)
        if self._cache[4] is None:  # not the compiled path (a device change between the checks)
            return self.forward(prev.forward(x))
        over_batch(y, lambda lo, hi: np.maximum(y[lo:hi], 0, out=y[lo:hi]))
        return y

    def fuses_backward_with(self, prev) -> bool:
        """True when this pool's last input is the ReLU output that `prev` keeps."""
        cache = self.__dict__.get("_cache")
        return cache is not None and prev.keeps_relu_output(cache[3])

    def backward_fused(self, prev, dy):
        """prev.backward(self.backward(dy)) for the ReLU `prev` whose output y_relu this pool read.

        Every element a window routes to holds that window's max, so the ReLU's select
        (y_relu > 0) equals (window max > 0): applied to dy at the pooled size (a quarter of
        the elements for 2×2 pools) it replaces a ReLU backward over the whole input. Equal
        to the two backwards in sequence, up to the sign of zeros.
        """
        y = self._saved()[1]
        self._check_dy(dy, y.shape)
        return self.backward(relu_ops.relu_backward(dy, y))

    def backward(self, dy, need_input_grad=True):
        xpad, y, x_shape, _, compiled = self._saved()
        self._check_dy(dy, y.shape)
        if compiled is not None:
            jk, arg = compiled
            dy = np.ascontiguousarray(dy)
            dx = np.empty(x_shape, dtype=dy.dtype)
            dx3 = dx.reshape(x_shape[0], x_shape[1], -1)
            over_batch(dy, lambda lo, hi: jk.maxpool_backward(dy, arg, dx3, lo, hi))
            return dx
        if not backend.is_cupy_array(dy):
            return self._backward_cpu(dy, xpad, y, x_shape)
        xp = backend.xp_of(dy)
        ph, pw = self.padding
        N, C, H, W = x_shape
        Ho, Wo = y.shape[2:]
        eh, ew = self._overhang(x_shape, Ho, Wo)
        tiles = self._tiles(x_shape)  # disjoint views that cover dx: write, no zero fill or add
        dxpad = (xp.empty if tiles else xp.zeros)((N, C, H + 2 * ph + eh, W + 2 * pw + ew), dtype=dy.dtype)
        taken, hit = xp.empty(y.shape, dtype=bool), xp.empty(y.shape, dtype=bool)
        routed = None if tiles else xp.empty_like(dy)
        offsets = self._offsets()
        for k, (i, j) in offsets:
            win = taken if k == 0 else hit  # the first offset's hits are all the window maxima found so far
            xp.equal(offset_view(xpad, i, j, Ho, Wo, *self.stride), y, out=win)
            if k > 0:
                xp.greater(hit, taken, out=hit)  # hit and not taken: ties go to the first offset
                if k + 1 < len(offsets):
                    taken |= hit
            view = offset_view(dxpad, i, j, Ho, Wo, *self.stride)
            if tiles:
                xp.multiply(dy, win, out=view)
            else:
                xp.multiply(dy, win, out=routed)
                view += routed
        return crop_hw(dxpad, ph, pw, H, W)

    def _backward_cpu(self, dy, xpad, y, x_shape):
        """dx by one scatter-add of dy to each window's first maximum (np.add.at, exact
        where windows overlap), over batch chunks."""
        nan = np.isnan(y)
        if nan.any():  # NaN windows route nothing
            dy = np.where(nan, 0, dy).astype(dy.dtype, copy=False)
        dy = np.ascontiguousarray(dy)
        base = self._window_origins(xpad.shape, y.shape)
        dxpad = np.zeros(xpad.shape, dtype=dy.dtype)
        flat = dxpad.reshape(-1)

        def scatter(lo, hi):  # chunks write disjoint images of dx
            idx = np.add(base[lo:hi], _cpu_first_max(xpad, y, self.kernel_size, self.stride, lo, hi),
                         dtype=np.intp)
            np.add.at(flat, idx.reshape(-1), dy[lo:hi].reshape(-1))

        over_batch(dy, scatter)
        ph, pw = self.padding
        return crop_hw(dxpad, ph, pw, *x_shape[2:])

    def _window_origins(self, pad_shape, y_shape):
        """Flat index into the padded input of each window's top-left element, (N, C, Ho, Wo)
        intp; kept between steps (it depends on the shapes only)."""
        key = (tuple(pad_shape), tuple(y_shape), self.stride)
        cached = self.__dict__.get("_origins")
        if cached is not None and cached[0] == key:
            return cached[1]
        N, C, Hp, Wp = pad_shape
        Ho, Wo = y_shape[2:]
        sh, sw = self.stride
        base = (np.arange(N * C, dtype=np.intp).reshape(N, C, 1, 1) * (Hp * Wp)
                + (np.arange(Ho, dtype=np.intp) * (sh * Wp)).reshape(Ho, 1)
                + np.arange(Wo, dtype=np.intp) * sw)
        object.__setattr__(self, "_origins", (key, base))
        return base


def _cpu_window_max(xpad, kernel, stride, Ho, Wo):
    """Each window's max, separably: over each row's kw columns (kw − 1 `maximum`s of
    strided column views, every padded row), then over kh rows; over batch chunks."""
    (kh, kw), (sh, sw) = kernel, stride
    N, C = xpad.shape[:2]
    y = np.empty((N, C, Ho, Wo), dtype=xpad.dtype)

    def chunk(lo, hi):
        xs = xpad[lo:hi]
        cols = [xs[..., j:j + sw * (Wo - 1) + 1:sw] for j in range(kw)]
        mw = np.maximum(cols[0], cols[1]) if kw > 1 else np.ascontiguousarray(cols[0])
        for j in range(2, kw):
            np.maximum(mw, cols[j], out=mw)
        rows = [mw[:, :, i:i + sh * (Ho - 1) + 1:sh] for i in range(kh)]
        out = y[lo:hi]
        if kh > 1:
            np.maximum(rows[0], rows[1], out=out)
        else:
            np.copyto(out, rows[0])
        for i in range(2, kh):
            np.maximum(out, rows[i], out=out)

    over_batch(xpad, chunk)
    return y


def _cpu_first_max(xpad, y, kernel, stride, lo, hi):
    """For the images lo:hi: the offset r·Wp + c in the padded plane, from each window's
    top-left element, of its first maximum in row-major order (int32, y's shape).

    With weights K − k (K = kh·kw) on the matches x_k == y of offsets k = 0, 1, ..., the
    largest weighted match is the first one: a running `maximum` of uint8/int16 arrays
    instead of masked writes (which NumPy does not vectorise)."""
    (kh, kw), (sh, sw) = kernel, stride
    K, Wp = kh * kw, xpad.shape[-1]
    Ho, Wo = y.shape[2:]
    code_t = np.uint8 if K < 256 else np.int32
    yc, xs = y[lo:hi], xpad[lo:hi]
    best = np.zeros(yc.shape, dtype=code_t)
    for k in range(K):
        i, j = divmod(k, kw)
        hit = np.equal(offset_view(xs, i, j, Ho, Wo, sh, sw), yc)
        w = hit.view(np.uint8) if code_t == np.uint8 else hit.astype(code_t)
        if K - k > 1:
            w *= K - k
        np.maximum(best, w, out=best)
    # best = K − k of the first match (0 where none: a NaN window, whose dy is zeroed)
    table = np.array([0] + [(K - b) // kw * Wp + (K - b) % kw for b in range(1, K + 1)], dtype=np.int32)
    return np.take(table, best)


class AvgPool2d(_Pool2d):
    """Mean over each (kh, kw) window. count_include_pad=True (PyTorch's default) divides by
    kh·kw, zero padding included; False divides by the input elements in each window."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = boolean("AvgPool2d", "count_include_pad", count_include_pad)

    def _inverse_counts(self, x_shape, Ho, Wo, xp, dtype):
        """1/n per output (broadcastable to (N, C, Ho, Wo)), or a float when every n is kh·kw."""
        counts = []
        for n_out, n, s, k, p in zip((Ho, Wo), x_shape[2:], self.stride, self.kernel_size, self.padding):
            start = np.arange(n_out) * s - p
            end = np.minimum(start + k, n + p)
            if not self.count_include_pad:
                start, end = np.maximum(start, 0), np.minimum(end, n)
            counts.append(end - start)
        if (counts[0] == self.kernel_size[0]).all() and (counts[1] == self.kernel_size[1]).all():
            return 1.0 / (self.kernel_size[0] * self.kernel_size[1])
        return xp.asarray(1.0 / np.multiply.outer(counts[0], counts[1]).astype(np.float64), dtype=dtype)

    def forward(self, x):
        Ho, Wo = self._geometry(x)
        xp = backend.xp_of(x)
        xpad = pad_hw(x, *self.padding, 0.0, *self._overhang(x.shape, Ho, Wo))
        y = None
        for k, (i, j) in self._offsets():
            s = offset_view(xpad, i, j, Ho, Wo, *self.stride)
            if y is None:
                y = xp.array(s, copy=True, order="C")
            else:
                y += s
        y *= self._inverse_counts(x.shape, Ho, Wo, xp, x.dtype)
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        x_shape, y_shape = self._saved_shapes(dy)
        xp = backend.xp_of(dy)
        ph, pw = self.padding
        N, C, H, W = x_shape
        eh, ew = self._overhang(x_shape, *y_shape[2:])
        g = dy * self._inverse_counts(x_shape, *y_shape[2:], xp, dy.dtype)
        dxpad = xp.zeros((N, C, H + 2 * ph + eh, W + 2 * pw + ew), dtype=dy.dtype)
        for k, (i, j) in self._offsets():
            view = offset_view(dxpad, i, j, *y_shape[2:], *self.stride)
            view += g
        return crop_hw(dxpad, ph, pw, H, W)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")
