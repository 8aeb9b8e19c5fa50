"""Sliding-window helpers shared by Conv2d and the pools (NCHW, xp-only, no scatter-add).

A window layer with kernel (kh, kw), stride (sh, sw) and padding (ph, pw) over an
H×W input has Ho = (H + 2·ph − kh) // sh + 1 outputs per column (Wo alike). For the
kernel offset (i, j), the input element that every output (ho, wo) reads is
padded[..., i + sh·ho, j + sw·wo]: one strided slice. Looping over the kh·kw
offsets therefore gathers (im2col) or scatters (col2im) with plain slice copies
and slice adds, which are exact with overlapping windows and run as a handful of
large copies on both NumPy and CuPy.

    im2col: x (N, C, H, W) -> cols (C, kh, kw, N, Ho, Wo), i.e. a (C·kh·kw, N·Ho·Wo) GEMM operand
    col2im: the adjoint, summing the contributions of overlapping windows
"""
from __future__ import annotations

from .. import backend


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def offset_view(a, i, j, Ho, Wo, sh, sw):
    """a[..., i + sh·ho, j + sw·wo] for every (ho, wo): a strided view, no copy."""
    return a[..., i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]


def pad_hw(x, ph, pw, value=0.0):
    """x padded by (ph, pw) on the last two axes with `value`; x itself when no padding."""
    if ph == 0 and pw == 0:
        return x
    xp = backend.xp_of(x)
    *lead, H, W = x.shape
    out = xp.full((*lead, H + 2 * ph, W + 2 * pw), value, dtype=x.dtype)
    out[..., ph:ph + H, pw:pw + W] = x
    return out


def crop_hw(a, ph, pw, H, W):
    """The inverse of pad_hw for gradients: the interior, as a contiguous array."""
    if ph == 0 and pw == 0 and a.shape[-2:] == (H, W):
        return a
    return backend.xp_of(a).ascontiguousarray(a[..., ph:ph + H, pw:pw + W])


def im2col(x, kh, kw, sh, sw, ph, pw):
    """x (N, C, H, W) -> cols (C, kh, kw, N, Ho, Wo) with cols[c, i, j, n] = padded x[n, c] window (i, j)."""
    xp = backend.xp_of(x)
    N, C, H, W = x.shape
    Ho, Wo = out_size(H, kh, sh, ph), out_size(W, kw, sw, pw)
    # Channel-major so that cols reshapes to the (C·kh·kw, N·Ho·Wo) GEMM operand without a copy.
    xt = pad_hw(x.transpose(1, 0, 2, 3), ph, pw)
    cols = xp.empty((C, kh, kw, N, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = offset_view(xt, i, j, Ho, Wo, sh, sw)
    return cols


def col2im(dcols, x_shape, sh, sw, ph, pw):
    """The adjoint of im2col: dcols (C, kh, kw, N, Ho, Wo) -> dx (N, C, H, W), overlaps summed."""
    xp = backend.xp_of(dcols)
    N, C, H, W = x_shape
    _, kh, kw, _, Ho, Wo = dcols.shape
    dxt = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            # Sequential slice adds: exact where windows overlap (no scatter-add needed).
            view = offset_view(dxt, i, j, Ho, Wo, sh, sw)
            view += dcols[:, i, j]  # in place through the view (no self-assigning setitem)
    return xp.ascontiguousarray(dxt[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3))
