"""1-d and 2-d convolution (cross-correlation, as in PyTorch): im2col and one GEMM per group,
or for stride-1 convolutions over many channels, GEMMs per frequency (_dftconv).

    x (N, C, H, W), W (O, C/g, kh, kw), b (O,) -> y (N, O, Ho, Wo),  g = groups
    y[n, o, ho, wo] = b[o] + Σ_{c∈group(o), i, j} W[o, c, i, j] · xpad[n, c, sh·ho + dh·i, sw·wo + dw·j]
    Ho = (H + 2·ph − dh·(kh − 1) − 1) // sh + 1                        (Wo alike)

With K = (C/g)·kh·kw and L = N·Ho·Wo, im2col gives cols (g, K, L), and per group
    forward:  Y = W2 (O/g, K) @ cols (K, L)
    backward: dW2 = dY (O/g, L) @ cols.T,  db = Σ_L dY,  dcols = W2.T @ dY -> col2im -> dx
(Chellapilla et al. 2006; Caffe). groups = C = O is a depthwise convolution (a batch of
1×K @ K×L products). cols is kept for backward in training mode (K× the input's size: it
trades memory for skipping a second im2col); in eval mode only x is kept and backward
rebuilds cols.

Padding: an int or pair (zeros on both sides), "valid" (none) or "same" (stride 1 only:
total dh·(kh − 1), the extra row of an even total at the bottom/right as in PyTorch);
padding_mode "zeros", "reflect", "replicate" or "circular". Symmetric zero padding runs
inside im2col; the other cases pad x explicitly first (_window.pad_mode) and fold the
gradient back with its adjoint.

Algorithm (`algorithm=`, also settable as the attribute): "im2col" as above; "dft" computes
the convolution in the frequency domain (gpunet/nn/_dftconv.py: x's and dy's small 2-d DFTs
as GEMMs, then one complex (N, C) @ (C, O) GEMM per frequency for each of y, dx and dW), for
stride 1, dilation 1 and groups 1 only, on NumPy only (refused otherwise), any padding and padding_mode;
it keeps x's spectrum (F·N·C complex) for backward instead of the columns. "auto" (the
default) picks per call:
    "dft"    on NumPy, stride 1, dilation 1, groups 1, kh and kw >= 3, in and out channels
             >= DFT_MIN_CHANNELS (16), and im2col's GEMM flops >= DFT_MIN_RATIO (3) times the
             frequency GEMMs', 2·Ho·Wo·kh·kw / (8·Ph·(Pw//2 + 1)) with the DFT size
             Ph = max(H + max(top, bottom), kh) (Pw alike), and max(Ph, Pw) <=
             DFT_MAX_SIZE_PER_CHANNEL (3) · min(in, out channels): each transform costs ~P
             multiplies per value, the frequency GEMMs save in proportion to the channels
             (16→32 3×3 on 64×64, P = 65, runs no faster than im2col). float32 and float64
             alike: the DFT path agrees with im2col to ~1e-15 relative in float64;
    "im2col" otherwise (always on CuPy: the GPU path is unchanged; and whenever a reduced
             compute precision is set on the layer, which only the one-GEMM path emulates).
On NumPy, im2col also runs its GEMM one image at a time when Ho·Wo >= PER_IMAGE_MIN_PIXELS
(256: first layers, where one (O, 9) @ (9, N·Ho·Wo) product is several times slower), writing
NCHW without a transpose, and then dW needs no transposed dy when dx is not asked for. The
gathers and scatters run over batch chunks on gpunet's worker threads (threads.parallel_chunks:
im2col, col2im, the DFT path's transposes), and so do the GEMMs (threads.matmul: over images,
frequencies, rows or columns, each chunk one single-threaded BLAS call): with BLAS's own
threads, OpenBLAS's idle workers spin for ~0.1 s after each product and take the core the
chunked passes of the layers around need (small_cnn at 2 threads: 2.7k → 3.5–3.9k samples/s).
E.g. the CIFAR CNN's 64→64 5×5 on 12×12 (ratio 8.0) and small_cnn's 32→64 3×3 on 14×14
(3.7) run "dft"; first layers (1 or 3 input channels), strided, grouped and 1×1 convs, im2col.
"""
from __future__ import annotations

import numpy as np

from .. import precision as _precision
from .. import threads
from ..errors import DeviceError, GpunetValueError
from . import init as _init
from ._layer import RegularizedLayer, boolean, int_pair, positive_int
from ._dftconv import analysis, dft_size, matmul as _mm, synthesis
from ._window import col2im, im2col, out_size, pad_mode, unpad_mode
from .module import Parameter

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
ALGORITHMS = ("auto", "im2col", "dft")
DFT_MIN_CHANNELS = 16   # auto: the frequency-domain path for in and out channels both at least this
DFT_MIN_RATIO = 3.0     # ... and im2col's GEMM flops at least this many times the frequency GEMMs'
DFT_MAX_SIZE_PER_CHANNEL = 3  # ... and the DFT size at most this many times min(in, out channels)
PER_IMAGE_MIN_PIXELS = 256  # im2col on NumPy: one GEMM per image from this output size (Ho·Wo) up


def conv_padding(owner, padding, kernel_size, stride, dilation):
    """(top, bottom, left, right) for an int, a pair, "valid" or "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise GpunetValueError(f"{owner}: padding expected an int, a pair, 'valid' or 'same', "
                                   f"got {padding!r}")
        if stride != (1, 1):
            raise GpunetValueError(f"{owner}: padding='same' expected stride 1 (as in PyTorch), got "
                                   f"stride={stride}")
        pads = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = int_pair(owner, "padding", padding, minimum=0)
    return (ph, ph, pw, pw)


def _gemm(xp, a, b, out=None, precision=None):
    """a (g, m, k) @ b (g, k, n) (into out (g, m, n)); one plain 2-d GEMM when g = 1.
    precision: the compute precision of operands already cast (gpunet.precision), or None."""
    if a.shape[0] == 1:
        r = _precision.matmul(precision, a[0], b[0], out=None if out is None else out[0])
        return r[None]
    return _precision.matmul(precision, a, b, out=out)


class _ConvLayer(RegularizedLayer):
    """What Conv2d and ConvTranspose2d share: the size arguments, the weight and bias."""

    def _init_sizes(self, name, in_channels, out_channels, kernel_size, stride, dilation, groups):
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.out_channels = positive_int(name, "out_channels", out_channels)
        self.kernel_size = int_pair(name, "kernel_size", kernel_size)
        self.stride = int_pair(name, "stride", stride)
        self.dilation = int_pair(name, "dilation", dilation)
        self.groups = positive_int(name, "groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise GpunetValueError(f"{name}: groups expected to divide in_channels ({self.in_channels}) "
                                   f"and out_channels ({self.out_channels}), got {groups!r}")

    def _init_parameters(self, name, shape, bias, init, bias_init, kernel_regularizer, activity_regularizer):
        """The weight of `shape`, the bias (out_channels,) unless bias=False, the regularizers."""
        has_bias = boolean(name, "bias", bias)
        self.weight = Parameter(_init.initialize(init, shape, arg="init"))
        bias_init = _init.bias_initializer(init, bias_init, shape)
        self.bias = Parameter(_init.initialize(bias_init, (self.out_channels,), arg="bias_init")) \
            if has_bias else None
        self._init_regularizers(kernel_regularizer, activity_regularizer)
        self._cache = None


class Conv2d(_ConvLayer):
    """NCHW convolution; weight (out_channels, in_channels/groups, kh, kw), bias (out_channels,).

    kernel_size, stride, dilation and an int padding take an int or an (h, w) pair; padding
    also takes "same" or "valid". init defaults to "glorot_uniform" with PyTorch fans
    (fan_in = in_channels/groups·kh·kw); init="torch_default" draws PyTorch's default, and
    then bias_init (None: zeros, or PyTorch's U(±1/sqrt(fan_in)) with "torch_default") too.
    `precision` (set by gpunet.precision.apply): the compute precision of its GEMMs.
    """

    takes_precision, precision = True, None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="glorot_uniform", bias_init=None, kernel_regularizer=None,
                 activity_regularizer=None, dilation=1, groups=1, padding_mode="zeros", algorithm="auto"):
        super().__init__()
        name = type(self).__name__
        self._init_sizes(name, in_channels, out_channels, kernel_size, stride, dilation, groups)
        if padding_mode not in PADDING_MODES:
            raise GpunetValueError(f"{name}: padding_mode expected one of {PADDING_MODES}, "
                                   f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.pads = conv_padding(name, padding, self.kernel_size, self.stride, self.dilation)
        self.padding = padding if isinstance(padding, str) else (self.pads[0], self.pads[2])
        self._init_parameters(name, (self.out_channels, self.in_channels // self.groups, *self.kernel_size),
                              bias, init, bias_init, kernel_regularizer, activity_regularizer)
        self.algorithm = algorithm

    @property
    def algorithm(self):
        """"auto" (chosen per call by shape, dtype and device), "im2col" or "dft"."""
        return self._algorithm

    @algorithm.setter
    def algorithm(self, value):
        name = type(self).__name__
        if not isinstance(value, str) or value not in ALGORITHMS:
            raise GpunetValueError(f"{name}: algorithm expected one of {ALGORITHMS}, got {value!r}")
        if value == "dft" and (self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1):
            raise GpunetValueError(f"{name}: algorithm='dft' expected stride 1, dilation 1 and groups 1, "
                                   f"got stride={self.stride}, dilation={self.dilation}, groups={self.groups}")
        self._algorithm = value

    def algorithm_for(self, x_shape):
        """The algorithm forward runs on an input of x_shape ((N, C, H, W), or Conv1d's (N, C, L)):
        the forced one, else the rule in the module docstring."""
        if self._algorithm == "dft" and self.device.xp is not np:
            raise DeviceError(f"{self!r}: algorithm='dft' runs on the CPU (NumPy) only, the layer is on "
                              f"{self.device.name}; use algorithm='auto' or 'im2col' there")
        if self._algorithm == "dft" and self._reduced_precision():
            raise GpunetValueError(f"{self!r}: algorithm='dft' computes in the weights' dtype, got "
                                   f"precision={self.precision!r}; use algorithm='auto' or 'im2col'")
        if self._algorithm != "auto":
            return self._algorithm
        (kh, kw), C, O = self.kernel_size, self.in_channels, self.out_channels
        if (self.device.xp is not np or self._reduced_precision() or self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1
                or min(kh, kw) < 3 or min(C, O) < DFT_MIN_CHANNELS):
            return "im2col"
        t, b, l, r = self.pads
        H, W = x_shape[2:] if len(x_shape) == 4 else (1, x_shape[-1])  # Conv1d: (N, C, L)
        Ph, Pw = dft_size(H, t, b, kh), dft_size(W, l, r, kw)
        Ho, Wo = H + t + b - kh + 1, W + l + r - kw + 1
        flops_ratio = 2 * Ho * Wo * kh * kw / (8 * Ph * (Pw // 2 + 1))
        small_transforms = max(Ph, Pw) <= DFT_MAX_SIZE_PER_CHANNEL * min(C, O)
        return "dft" if flops_ratio >= DFT_MIN_RATIO and small_transforms else "im2col"

    @property
    def _inside(self):
        """True when im2col pads by itself: zeros, the same amount on both sides."""
        t, b, l, r = self.pads
        return self.padding_mode == "zeros" and t == b and l == r

    def _check_input(self, x):
        self._check_array(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise self._shape_error(f"(N, {self.in_channels}, H, W)", x)
        t, b, l, r = self.pads
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if x.shape[2] + t + b < eh or x.shape[3] + l + r < ew:
            raise self._shape_error(f"H + {t + b} >= {eh} and W + {l + r} >= {ew} (the kernel must fit)", x)
        # reflect mirrors without the edge: a pad needs a larger side; circular wraps once at most
        limit = {"reflect": 1, "circular": 0}.get(self.padding_mode)
        if limit is not None and (max(t, b) > x.shape[2] - limit or max(l, r) > x.shape[3] - limit):
            raise self._shape_error(f"H and W larger than the padding {self.pads} "
                                    f"(padding_mode={self.padding_mode!r})", x)
        self._check_float(x, self.weight.dtype)

    def _out_hw(self, H, W):
        t, b, l, r = self.pads
        return (out_size(H + t + b, self.kernel_size[0], self.stride[0], 0, self.dilation[0]),
                out_size(W + l + r, self.kernel_size[1], self.stride[1], 0, self.dilation[1]))

    def _cols(self, x, Ho, Wo):
        """The (K·g, N·Ho·Wo) GEMM operand, in the layer's reused buffer."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        out = self._scratch("cols", (self.in_channels * kh * kw, x.shape[0] * Ho * Wo), x.dtype)
        if self._inside:
            ph, pw = self.pads[0], self.pads[2]
        else:
            x, ph, pw = pad_mode(x, self.pads, self.padding_mode), 0, 0
        if self.device.xp is not np:
            return im2col(x, kh, kw, sh, sw, ph, pw, out=out, dh=dh, dw=dw).reshape(out.shape)
        cols6 = out.reshape(self.in_channels, kh, kw, x.shape[0], Ho, Wo)

        def images(lo, hi):  # over batch chunks on the worker threads
            im2col(x[lo:hi], kh, kw, sh, sw, ph, pw, out=cols6[:, :, :, lo:hi], dh=dh, dw=dw)
        threads.parallel_chunks(images, x.shape[0], min_chunk=2)
        return out

    def _col2im(self, dcols, shape, ph, pw):
        """col2im over batch chunks on the worker threads (NumPy): each chunk owns its images."""
        xp = self.device.xp
        if xp is not np:
            return col2im(dcols, shape, *self.stride, ph, pw, *self.dilation)
        dx = np.zeros(shape, dtype=dcols.dtype)

        def images(lo, hi):
            col2im(dcols[:, :, :, lo:hi], (hi - lo, *shape[1:]), *self.stride, ph, pw, *self.dilation, out=dx[lo:hi])
        threads.parallel_chunks(images, shape[0], min_chunk=2)
        return dx

    def _w3(self):
        """The weight as (g, O/g, K)."""
        return self.weight.data.reshape(self.groups, self.out_channels // self.groups, -1)

    def forward(self, x):
        self._check_input(x)
        if self.algorithm_for(x.shape) == "dft":
            return self._forward_dft(x)
        xp = self.device.xp
        N, _, H, W = x.shape
        Ho, Wo = self._out_hw(H, W)
        p = self.precision  # None (fp32) or the GEMM's compute precision: cols built from the cast x
        xc, w3 = _precision.cast(p, x), _precision.cast(p, self._w3())
        cols = self._cols(xc, Ho, Wo)                             # (g·K, N·Ho·Wo)
        O, g, L = self.out_channels, self.groups, cols.shape[1]
        if self._per_image(xp, Ho, Wo):  # fp32 only
            # y[n] = W2 @ cols[:, n]: each image's (K, Ho·Wo) block is a strided GEMM operand,
            # and the products land in NCHW directly (no (O, N·Ho·Wo) buffer, no transpose).
            y = xp.empty((N, g, O // g, Ho * Wo), dtype=x.dtype)
            threads.matmul(w3, cols.reshape(g, -1, N, Ho * Wo).transpose(2, 0, 1, 3), out=y)
            if self.bias is not None:
                y += self.bias.data.reshape(g, O // g, 1)
            y = y.reshape(N, O, Ho, Wo)
            self._cache = (None, cols, x.shape, y.shape, w3) if self.training else (x, None, x.shape, y.shape, w3)
            return self._keep_output(y)
        # With N = 1 or O = 1 the (O, N, Ho, Wo) → NCHW transpose below is already contiguous
        # and would return the GEMM's buffer itself: the next call would overwrite it.
        y = xp.empty((O, L), dtype=x.dtype) if (N == 1 or O == 1) else self._scratch("y", (O, L), x.dtype)
        _gemm(xp, w3, cols.reshape(g, -1, L), y.reshape(g, O // g, L), p)  # (O, N·Ho·Wo)
        if self.bias is not None:
            y += self.bias.data[:, None]
        y = xp.ascontiguousarray(y.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3))
        # Training keeps cols for dW; eval keeps x only (backward, if asked, rebuilds cols).
        self._cache = (None, cols, x.shape, y.shape, w3) if self.training else (xc, None, x.shape, y.shape, w3)
        return self._keep_output(y)

    def _dft_geometry(self, x_shape):
        """(pads, P) of the frequency-domain path: the zero pads it applies as a phase (all 0
        when another padding_mode pads x explicitly first) and the DFT size (Ph, Pw)."""
        (kh, kw), (H, W) = self.kernel_size, x_shape[2:]
        pads = self.pads if self.padding_mode == "zeros" else (0, 0, 0, 0)
        if self.padding_mode != "zeros":
            t, b, l, r = self.pads
            H, W = H + t + b, W + l + r
        t, b, l, r = pads
        return pads, (dft_size(H, t, b, kh), dft_size(W, l, r, kw))

    def _forward_dft(self, x):
        xp, scratch = self.device.xp, self._scratch
        x_shape = x.shape
        if self.padding_mode != "zeros":
            x = pad_mode(x, self.pads, self.padding_mode)
        (t, b, l, r), P = self._dft_geometry(x_shape)
        N, C, H, W = x.shape
        O, (kh, kw) = self.out_channels, self.kernel_size
        Ho, Wo = H + t + b - kh + 1, W + l + r - kw + 1
        F = P[0] * (P[1] // 2 + 1)
        xf = analysis(xp, x.reshape(N * C, H, W), P, (0, 0), scratch=scratch, tag="x").reshape(F, N, C)
        wf = analysis(xp, self.weight.data.reshape(O * C, kh, kw), P, (-t, -l), conj=True,
                      scratch=scratch, tag="w").reshape(F, O, C)
        yf = _mm(xp, xf, wf.transpose(0, 2, 1), out=scratch("yf", (F, N, O), xf.dtype))
        if self.bias is not None:  # a constant is the zero frequency alone: b·Ph·Pw there
            yf[0] += self.bias.data * (P[0] * P[1])
        y = synthesis(xp, yf.reshape(P[0], -1, N * O), P, (Ho, Wo), (0, 0), scratch=scratch, tag="y")
        # Training keeps x's spectrum for dW; eval keeps x only (backward, if asked, redoes it).
        kept = ("dft", xf if self.training else x, wf)
        self._cache = (kept, None, x_shape, (N, O, Ho, Wo), None)
        return self._keep_output(y.reshape(N, O, Ho, Wo))

    def _backward_dft(self, dy, kept, x_shape, need_input_grad):
        xp, scratch = self.device.xp, self._scratch
        _, xf, wf = kept
        (t, b, l, r), P = self._dft_geometry(x_shape)
        N, O, Ho, Wo = dy.shape
        C, (kh, kw) = self.in_channels, self.kernel_size
        H, W = Ho - t - b + kh - 1, Wo - l - r + kw - 1                     # x's (padded) size
        F = wf.shape[0]
        if xf.ndim == 4:                                                  # eval: x was kept
            xf = analysis(xp, xf.reshape(N * C, H, W), P, (0, 0), scratch=scratch, tag="x").reshape(F, N, C)
        dyf = analysis(xp, xp.ascontiguousarray(dy).reshape(N * O, Ho, Wo), P, (0, 0), conj=True,
                       scratch=scratch, tag="dy").reshape(F, N, O)          # conj(D̂)
        dwf = _mm(xp, dyf.transpose(0, 2, 1), xf, out=scratch("dwf", (F, O, C), xf.dtype))
        dw = synthesis(xp, dwf.reshape(P[0], -1, O * C), P, (kh, kw), (-t, -l))
        self.weight.grad += dw.reshape(self.weight.shape)
        self._add_kernel_grad()
        if self.bias is not None:  # Σ dy is the zero frequency of dy's spectrum
            self.bias.grad += dyf[0].real.sum(axis=0)
        if not need_input_grad:
            return None
        dxf = _mm(xp, dyf, wf, out=scratch("dxf", (F, N, C), xf.dtype))  # conj(dX̂)
        dx = synthesis(xp, dxf.reshape(P[0], -1, N * C), P, (H, W), (0, 0), conj=True,
                       scratch=scratch, tag="dx").reshape(N, C, H, W)
        if self.padding_mode == "zeros":
            return dx
        return unpad_mode(dx, self.pads, self.padding_mode, *x_shape[2:])

    def backward(self, dy, need_input_grad=True):
        """dx, or None when need_input_grad=False (the first layer: no dcols GEMM, no col2im)."""
        x, cols, x_shape, y_shape, w3 = self._saved()
        self._check_dy(dy, y_shape)
        if isinstance(x, tuple):
            return self._backward_dft(self._activity_dy(dy), x, x_shape, need_input_grad)
        xp = self.device.xp
        N, O, Ho, Wo = y_shape
        g = self.groups
        if cols is None:
            cols = self._cols(x, Ho, Wo)
        dy = self._activity_dy(dy)
        if not need_input_grad and self._per_image(xp, Ho, Wo):
            return self._weight_grad_per_image(xp, xp.ascontiguousarray(dy), cols)
        dy2 = self._scratch("dy", (O, N, Ho, Wo), dy.dtype)
        dy2[...] = dy.transpose(1, 0, 2, 3)
        dy3 = dy2.reshape(g, O // g, -1)                                     # (g, O/g, L)
        cols3 = cols.reshape(g, -1, cols.shape[1])                           # (g, K, L)
        p = self.precision
        dy3c = _precision.cast(p, dy3)
        self.weight.grad += _gemm(xp, dy3c, cols3.transpose(0, 2, 1), precision=p).reshape(self.weight.shape)
        self._add_kernel_grad()
        if self.bias is not None:
            self.bias.grad += dy3.reshape(O, -1).sum(axis=1)
        if not need_input_grad:
            return None
        dcols = self._scratch("dcols", cols.shape, dy.dtype)
        _gemm(xp, w3.transpose(0, 2, 1), dy3c, dcols.reshape(cols3.shape), p)  # (g, K, L)
        dcols = dcols.reshape(self.in_channels, *self.kernel_size, N, Ho, Wo)
        if self._inside:
            return self._col2im(dcols, x_shape, self.pads[0], self.pads[2])
        t, b, l, r = self.pads
        H, W = x_shape[2:]
        dxpad = self._col2im(dcols, (N, self.in_channels, H + t + b, W + l + r), 0, 0)
        return unpad_mode(dxpad, self.pads, self.padding_mode, H, W)

    def _reduced_precision(self):
        """True when a compute precision other than the weights' own is set on the layer (the
        one-GEMM im2col path is the one that emulates it; the CPU fast paths keep out)."""
        return self.precision is not None

    def _per_image(self, xp, Ho, Wo):
        """im2col's GEMMs one image at a time (NumPy, outputs of at least PER_IMAGE_MIN_PIXELS):
        OpenBLAS runs the one (O, K) @ (K, N·Ho·Wo) product of a first layer (K = 9 or 75)
        several times slower than N products over Ho·Wo columns each, and these write NCHW."""
        return xp is np and Ho * Wo >= PER_IMAGE_MIN_PIXELS and not self._reduced_precision()

    def _weight_grad_per_image(self, xp, dy, cols):
        """dW = Σ_n dy[n] (O/g, Ho·Wo) @ cols[:, n].T (Ho·Wo, K) per group, and db, without dy's
        (O, N·Ho·Wo) transpose; partial sums over a few images at a time keep the buffer small."""
        N, O, Ho, Wo = dy.shape
        g = self.groups
        dy4 = dy.reshape(N, g, O // g, Ho * Wo)
        c4 = cols.reshape(g, -1, N, Ho * Wo).transpose(2, 0, 3, 1)          # (N, g, Ho·Wo, K)
        step = max(1, (1 << 20) // (O * c4.shape[3]))
        for a in range(0, N, step):
            part = threads.matmul(dy4[a:a + step], c4[a:a + step]).sum(axis=0)
            self.weight.grad += part.reshape(self.weight.shape)
        self._add_kernel_grad()
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        return None

    def extra_repr(self):
        s = f"{self.in_channels}→{self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}"
        return s + self._common_repr()

    def _common_repr(self):
        s = ""
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.bias is None:
            s += ", bias=False"
        return s + self._regularizer_repr()


class Conv1d(Conv2d):
    """(N, C, L) convolution; weight (out_channels, in_channels/groups, k), PyTorch's layout.

    A Conv2d over (N, C, 1, L) with kernel (1, k): the same options (stride, padding as an
    int, "same" or "valid", dilation, groups, padding_mode), each an int.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="glorot_uniform", bias_init=None, kernel_regularizer=None,
                 activity_regularizer=None, dilation=1, groups=1, padding_mode="zeros", algorithm="auto"):
        k = positive_int("Conv1d", "kernel_size", kernel_size)
        s = positive_int("Conv1d", "stride", stride)
        d = positive_int("Conv1d", "dilation", dilation)
        p = padding if isinstance(padding, str) else (0, positive_int("Conv1d", "padding", padding, minimum=0))
        super().__init__(in_channels, out_channels, (1, k), (1, s), p, bias, init, bias_init,
                         kernel_regularizer, activity_regularizer, (1, d), groups, padding_mode, algorithm)
        self.weight.data = self.weight.data.reshape(self.out_channels, -1, k)
        self.weight.grad = self.weight.grad.reshape(self.weight.data.shape)

    def forward(self, x):
        self._check_array(x)
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise self._shape_error(f"(N, {self.in_channels}, L)", x)
        return super().forward(x[:, :, None, :])[:, :, 0, :]

    def backward(self, dy, need_input_grad=True):
        self._check_array(dy, "dy")
        y_shape = self._saved()[3]
        self._check_dy(dy, (y_shape[0], y_shape[1], y_shape[3]))
        dx = super().backward(dy[:, :, None, :], need_input_grad)
        return None if dx is None else dx[:, :, 0, :]

    def extra_repr(self):
        s = f"{self.in_channels}→{self.out_channels}, kernel_size={self.kernel_size[1]}"
        if self.stride[1] != 1:
            s += f", stride={self.stride[1]}"
        if isinstance(self.padding, str):
            s += f", padding={self.padding!r}" if self.padding != "valid" else ""
        elif self.padding[1]:
            s += f", padding={self.padding[1]}"
        s += f", dilation={self.dilation[1]}" if self.dilation[1] != 1 else ""
        return s + self._common_repr().replace(f", dilation={self.dilation}", "")
