"""2-d convolution (cross-correlation, as in PyTorch) by im2col and one GEMM.

    x (N, C, H, W), W (O, C, kh, kw), b (O,) -> y (N, O, Ho, Wo)
    y[n, o, ho, wo] = b[o] + Σ_{c,i,j} W[o, c, i, j] · xpad[n, c, sh·ho + i, sw·wo + j]

With K = C·kh·kw and L = N·Ho·Wo, im2col gives cols (K, L), and
    forward:  Y = W2 (O, K) @ cols (K, L)
    backward: dW2 = dY (O, L) @ cols.T,  db = Σ_L dY,  dcols = W2.T @ dY -> col2im -> dx
(Chellapilla et al. 2006; Caffe). cols is kept for backward in training mode (K× the
input's size: it trades memory for skipping a second im2col); in eval mode only x is
kept and backward rebuilds cols.
"""
from __future__ import annotations

from . import init as _init
from ._layer import RegularizedLayer, boolean, int_pair, positive_int
from ._window import col2im, im2col, out_size
from .module import Parameter


class Conv2d(RegularizedLayer):
    """NCHW convolution; weight (out_channels, in_channels, kh, kw), bias (out_channels,).

    kernel_size, stride and padding take an int or an (h, w) pair; padding is zeros.
    init defaults to "glorot_uniform" with PyTorch fans (fan_in = in_channels·kh·kw).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="glorot_uniform", bias_init="zeros", kernel_regularizer=None,
                 activity_regularizer=None):
        super().__init__()
        self.in_channels = positive_int("Conv2d", "in_channels", in_channels)
        self.out_channels = positive_int("Conv2d", "out_channels", out_channels)
        self.kernel_size = int_pair("Conv2d", "kernel_size", kernel_size)
        self.stride = int_pair("Conv2d", "stride", stride)
        self.padding = int_pair("Conv2d", "padding", padding, minimum=0)
        has_bias = boolean("Conv2d", "bias", bias)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.weight = Parameter(_init.initialize(init, shape, arg="init"))
        self.bias = Parameter(_init.initialize(bias_init, (self.out_channels,), arg="bias_init")) \
            if has_bias else None
        self._init_regularizers(kernel_regularizer, activity_regularizer)
        self._cache = None

    def _check_input(self, x):
        self._check_array(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise self._shape_error(f"(N, {self.in_channels}, H, W)", x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise self._shape_error(f"H + 2·{ph} >= {kh} and W + 2·{pw} >= {kw} (the kernel must fit)", x)
        self._check_float(x, self.weight.dtype)

    def _cols(self, x, Ho, Wo):
        """The (K, N·Ho·Wo) GEMM operand, in the layer's reused buffer."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out = self._scratch("cols", (self.in_channels * kh * kw, x.shape[0] * Ho * Wo), x.dtype)
        return im2col(x, kh, kw, sh, sw, ph, pw, out=out).reshape(out.shape)

    def forward(self, x):
        self._check_input(x)
        xp = self.device.xp
        N, _, H, W = x.shape
        Ho = out_size(H, self.kernel_size[0], self.stride[0], self.padding[0])
        Wo = out_size(W, self.kernel_size[1], self.stride[1], self.padding[1])
        cols = self._cols(x, Ho, Wo)                              # (K, N·Ho·Wo)
        y = self._scratch("y", (self.out_channels, cols.shape[1]), x.dtype)
        xp.matmul(self.weight.data.reshape(self.out_channels, -1), cols, out=y)  # (O, N·Ho·Wo)
        if self.bias is not None:
            y += self.bias.data[:, None]
        y = xp.ascontiguousarray(y.reshape(self.out_channels, N, Ho, Wo).transpose(1, 0, 2, 3))
        # Training keeps cols for dW; eval keeps x only (backward, if asked, rebuilds cols).
        self._cache = (None, cols, x.shape, y.shape) if self.training else (x, None, x.shape, y.shape)
        return self._keep_output(y)

    def backward(self, dy, need_input_grad=True):
        """dx, or None when need_input_grad=False (the first layer: no dcols GEMM, no col2im)."""
        x, cols, x_shape, y_shape = self._saved()
        self._check_dy(dy, y_shape)
        xp = self.device.xp
        N, _, Ho, Wo = y_shape
        if cols is None:
            cols = self._cols(x, Ho, Wo)
        dy = self._activity_dy(dy)
        dy2 = self._scratch("dy", (self.out_channels, N, Ho, Wo), dy.dtype)
        dy2[...] = dy.transpose(1, 0, 2, 3)
        dy2 = dy2.reshape(self.out_channels, -1)                           # (O, L)
        self.weight.grad += (dy2 @ cols.T).reshape(self.weight.shape)
        self._add_kernel_grad()
        if self.bias is not None:
            self.bias.grad += dy2.sum(axis=1)
        if not need_input_grad:
            return None
        dcols = self._scratch("dcols", cols.shape, dy.dtype)
        xp.matmul(self.weight.data.reshape(self.out_channels, -1).T, dy2, out=dcols)  # (K, L)
        dcols = dcols.reshape(self.in_channels, *self.kernel_size, N, Ho, Wo)
        return col2im(dcols, x_shape, *self.stride, *self.padding)

    def extra_repr(self):
        s = f"{self.in_channels}→{self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s + self._regularizer_repr()
