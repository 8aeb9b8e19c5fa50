"""Transposed 2-d convolution: the adjoint of Conv2d with respect to its input.

    x (N, C, H, W), W (C, O/g, kh, kw), b (O,) -> y (N, O, Ho, Wo),  g = groups
    Ho = (H − 1)·sh − 2·ph + dh·(kh − 1) + oph + 1                      (Wo alike)
    y = conv2d_input_grad(x) + b: every input pixel scatters W[c] · x[n, c, h, w] onto
    the window at (sh·h − ph, sw·w − pw), overlaps summed.

It reuses Conv2d's two halves the other way round (as PyTorch and Caffe's Deconvolution do):
    forward:  cols = W3.T (g, O/g·kh·kw, C/g) @ x (g, C/g, N·H·W) -> col2im -> y
    backward: dcols = im2col(dy);  dx = W3 @ dcols,  dW = x @ dcols.T,  db = Σ dy
The output_padding rows and columns (bottom and right) are covered by no window: they hold
the bias only, as in PyTorch. Upsampling decoders (U-Net style, for segmentation with the
Dice loss) use it with kernel 2, stride 2.

Differences from PyTorch: padding_mode is zeros only (PyTorch too accepts nothing else), and
output_padding must be smaller than the stride (PyTorch also allows it below the dilation).
"""
from __future__ import annotations

from ..errors import GpunetValueError
from ._layer import int_pair
from ._window import col2im, im2col
from .conv import _ConvLayer, _gemm


class ConvTranspose2d(_ConvLayer):
    """NCHW transposed convolution; weight (in_channels, out_channels/groups, kh, kw), bias (out_channels,).

    kernel_size, stride, padding, output_padding and dilation take an int or an (h, w) pair.
    init defaults to "glorot_uniform" with PyTorch's fans of this weight layout
    (fan_in = out_channels/groups·kh·kw); "torch_default" draws PyTorch's default.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, init="glorot_uniform", bias_init=None,
                 kernel_regularizer=None, activity_regularizer=None):
        super().__init__()
        name = "ConvTranspose2d"
        self._init_sizes(name, in_channels, out_channels, kernel_size, stride, dilation, groups)
        self.padding = int_pair(name, "padding", padding, minimum=0)
        self.output_padding = int_pair(name, "output_padding", output_padding, minimum=0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise GpunetValueError(f"{name}: output_padding expected smaller than the stride {self.stride}, "
                                   f"got {output_padding!r}")
        self._init_parameters(name, (self.in_channels, self.out_channels // self.groups, *self.kernel_size),
                              bias, init, bias_init, kernel_regularizer, activity_regularizer)

    def _out_hw(self, H, W):
        return tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                     zip((H, W), self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding))

    def _check_input(self, x):
        self._check_array(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise self._shape_error(f"(N, {self.in_channels}, H, W)", x)
        if min(self._out_hw(*x.shape[2:])) < 1:
            raise self._shape_error(f"an output of at least 1×1 (padding {self.padding} crops "
                                    f"{self._out_hw(*x.shape[2:])})", x)
        self._check_float(x, self.weight.dtype)

    def _w3(self):
        """The weight as (g, C/g, O/g·kh·kw)."""
        return self.weight.data.reshape(self.groups, self.in_channels // self.groups, -1)

    def forward(self, x):
        self._check_input(x)
        xp = self.device.xp
        N, C, H, W = x.shape
        Ho, Wo = self._out_hw(H, W)
        g, L = self.groups, N * H * W
        x3 = xp.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(g, C // g, L)  # kept for dW
        K = self.out_channels // g * self.kernel_size[0] * self.kernel_size[1]
        cols = self._scratch("cols", (g, K, L), x.dtype)
        _gemm(xp, self._w3().transpose(0, 2, 1), x3, cols)               # (g, O/g·kh·kw, L)
        cols = cols.reshape(self.out_channels, *self.kernel_size, N, H, W)
        y = col2im(cols, (N, self.out_channels, Ho, Wo), *self.stride, *self.padding, *self.dilation)  # new
        if self.bias is not None:
            y += self.bias.data.reshape(1, -1, 1, 1)
        self._cache = (x3, x.shape, y.shape)
        return self._keep_output(y)

    def backward(self, dy, need_input_grad=True):
        """dx, or None when need_input_grad=False (then the dx GEMM is skipped)."""
        x3, x_shape, y_shape = self._saved()
        self._check_dy(dy, y_shape)
        xp = self.device.xp
        dy = self._activity_dy(dy)
        N, C, H, W = x_shape
        g, (kh, kw) = self.groups, self.kernel_size
        dcols = self._scratch("dcols", (self.out_channels * kh * kw, N * H * W), dy.dtype)
        im2col(dy, kh, kw, *self.stride, *self.padding, out=dcols, dh=self.dilation[0], dw=self.dilation[1])
        dcols3 = dcols.reshape(g, -1, N * H * W)                          # (g, O/g·kh·kw, L)
        self.weight.grad += _gemm(xp, x3, dcols3.transpose(0, 2, 1)).reshape(self.weight.shape)
        self._add_kernel_grad()
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        if not need_input_grad:
            return None
        dx = _gemm(xp, self._w3(), dcols3)                                # (g, C/g, L), a new array
        return xp.ascontiguousarray(dx.reshape(C, N, H, W).transpose(1, 0, 2, 3))

    def extra_repr(self):
        s = f"{self.in_channels}→{self.out_channels}, kernel_size={self.kernel_size}"
        for arg, default in (("stride", (1, 1)), ("padding", (0, 0)), ("output_padding", (0, 0)),
                             ("dilation", (1, 1))):
            if getattr(self, arg) != default:
                s += f", {arg}={getattr(self, arg)}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + self._regularizer_repr()
