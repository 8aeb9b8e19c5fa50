"""Sliding-window helpers shared by Conv2d and the pools (NCHW, xp-only, no scatter-add).

A window layer with kernel (kh, kw), stride (sh, sw), padding (ph, pw) and dilation
(dh, dw) over an H×W input has Ho = (H + 2·ph − dh·(kh − 1) − 1) // sh + 1 outputs per
column (Wo alike). For the kernel offset (i, j), the input element that every output
(ho, wo) reads is padded[..., dh·i + sh·ho, dw·j + sw·wo]: one strided slice. Looping over the kh·kw
offsets therefore gathers (im2col) or scatters (col2im) with plain slice copies
and slice adds, which are exact with overlapping windows and run as a handful of
large copies on both NumPy and CuPy.

    im2col: x (N, C, H, W) -> cols (C, kh, kw, N, Ho, Wo), i.e. a (C·kh·kw, N·Ho·Wo) GEMM operand
    col2im: the adjoint, summing the contributions of overlapping windows
    pad_mode / unpad_mode: explicit (possibly asymmetric) reflect, replicate or circular
        padding by an index gather, and its adjoint as two small one-hot GEMMs
"""
from __future__ import annotations

import numpy as np

from .. import backend


def out_size(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def offset_view(a, i, j, Ho, Wo, sh, sw):
    """a[..., i + sh·ho, j + sw·wo] for every (ho, wo): a strided view, no copy."""
    return a[..., i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]


def pad_hw(x, ph, pw, value=0.0, eh=0, ew=0):
    """x padded by (ph, pw) on the last two axes with `value` (and eh, ew more rows and columns
    at the bottom and right: ceil_mode's last windows); x itself when no padding."""
    if ph == 0 and pw == 0 and eh == 0 and ew == 0:
        return x
    xp = backend.xp_of(x)
    *lead, H, W = x.shape
    out = xp.full((*lead, H + 2 * ph + eh, W + 2 * pw + ew), value, dtype=x.dtype)
    out[..., ph:ph + H, pw:pw + W] = x
    return out


def crop_hw(a, ph, pw, H, W):
    """The inverse of pad_hw for gradients: the interior, as a contiguous array."""
    if ph == 0 and pw == 0 and a.shape[-2:] == (H, W):
        return a
    return backend.xp_of(a).ascontiguousarray(a[..., ph:ph + H, pw:pw + W])


def _column_span(j, sw, pw, W, Wo):
    """For kernel column j: the outputs wo whose input column j + sw·wo − pw lies in [0, W),
    as (wo_lo, wo_hi, w_lo); outputs wo_lo..wo_hi-1 read columns w_lo, w_lo + sw, ..."""
    wo_lo = max(0, -(-(pw - j) // sw))              # ceil((pw − j) / sw), at least 0
    wo_hi = min(Wo, (W - 1 - j + pw) // sw + 1)
    return wo_lo, max(wo_lo, wo_hi), j + sw * wo_lo - pw


def _zero_border(a, r0, r1, c0, c1, step=1):
    """Zero a (..., R, Cw) outside rows r0:r1:step and columns c0:c1 (what a copy into that
    window leaves unwritten), instead of filling all of it."""
    a[..., :r0, :] = 0
    a[..., r1:, :] = 0
    if step > 1:  # the rows skipped between r0 and r1
        for k in range(1, step):
            a[..., r0 + k:r1:step, :] = 0
    a[..., :, :c0] = 0
    a[..., :, c1:] = 0


def pad_index(size, before, after, mode):
    """The source index of each padded position -before .. size+after-1 (PyTorch's modes):
    reflect mirrors without repeating the edge, replicate repeats it, circular wraps."""
    i = np.arange(-before, size + after)
    if mode == "reflect":
        i = np.abs(i)
        i = np.where(i >= size, 2 * (size - 1) - i, i)
    elif mode == "replicate":
        i = np.clip(i, 0, size - 1)
    else:  # circular
        i = np.mod(i, size)
    return i


def pad_mode(x, pads, mode):
    """x (..., H, W) padded by pads = (top, bottom, left, right) in `mode`
    ("zeros", "reflect", "replicate", "circular"), as a new array."""
    top, bottom, left, right = pads
    xp = backend.xp_of(x)
    *lead, H, W = x.shape
    if mode == "zeros":
        out = xp.zeros((*lead, H + top + bottom, W + left + right), dtype=x.dtype)
        out[..., top:top + H, left:left + W] = x
        return out
    rows = xp.asarray(pad_index(H, top, bottom, mode))
    cols = xp.asarray(pad_index(W, left, right, mode))
    return xp.take(xp.take(x, rows, axis=-2), cols, axis=-1)


def unpad_mode(d, pads, mode, H, W):
    """The adjoint of pad_mode: d (..., Hp, Wp) -> (..., H, W), each padded position's
    gradient added to its source. For the index modes this is P_h.T @ d @ P_w with one-hot
    P (padded × source), two small GEMMs instead of a scatter-add (none in NumPy and CuPy alike)."""
    top, bottom, left, right = pads
    xp = backend.xp_of(d)
    if mode == "zeros":
        return xp.ascontiguousarray(d[..., top:top + H, left:left + W])
    ph = np.equal.outer(pad_index(H, top, bottom, mode), np.arange(H)).astype(d.dtype)
    pw = np.equal.outer(pad_index(W, left, right, mode), np.arange(W)).astype(d.dtype)
    return xp.matmul(xp.matmul(xp.asarray(ph.T), d), xp.asarray(pw))


def im2col(x, kh, kw, sh, sw, ph, pw, out=None, dh=1, dw=1):
    """x (N, C, H, W) -> cols (C, kh, kw, N, Ho, Wo) with cols[c, i, j, n] = padded x[n, c] window (i, j).

    Two stages, so that most copying runs over long contiguous spans: for each kernel column
    j, xj (C, N, Hp, Wo) gathers the input columns dw·j + sw·wo (transpose, padding and shift in
    one strided copy: rows of Wo); then each row offset i is a slice xj[:, :, dh·i + sh·ho] whose
    (Ho, Wo) block is contiguous when sh = 1. A direct copy per (i, j) would move every
    element in rows of only Wo, which NumPy runs far below memory speed.
    `out`: a contiguous array of cols' size to write into (the layer's reused buffer), or a
    (C, kh, kw, N, Ho, Wo) view, e.g. one batch chunk of a larger buffer.
    """
    xp = backend.xp_of(x)
    N, C, H, W = x.shape
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    xt = x.transpose(1, 0, 2, 3)
    shape = (C, kh, kw, N, Ho, Wo)
    if out is None:
        cols = xp.empty(shape, dtype=x.dtype)
    else:
        cols = out if out.ndim == 6 else out.reshape(shape)
    xj = xp.empty((C, N, H + 2 * ph, Wo), dtype=x.dtype)
    for j in range(kw):
        lo, hi, w0 = _column_span(dw * j, sw, pw, W, Wo)
        _zero_border(xj, ph, ph + H, lo, hi)  # the padding only: the rest is overwritten
        xj[:, :, ph:ph + H, lo:hi] = xt[:, :, :, w0:w0 + sw * (hi - lo - 1) + 1:sw]
        for i in range(kh):
            cols[:, i, j] = xj[:, :, dh * i:dh * i + sh * (Ho - 1) + 1:sh]
    return cols


def col2im(dcols, x_shape, sh, sw, ph, pw, dh=1, dw=1, out=None):
    """The adjoint of im2col: dcols (C, kh, kw, N, Ho, Wo) -> dx (N, C, H, W), overlaps summed.

    The same two stages in reverse: per kernel column j, the kh row offsets add into
    dxj (C, N, Hp, Wo) over contiguous spans, then dxj's in-bounds columns add into dx.
    Sequential slice adds are exact where windows overlap (no scatter-add needed).
    `out`: a zeroed (N, C, H, W) array (or view) to add into.
    """
    xp = backend.xp_of(dcols)
    N, C, H, W = x_shape
    _, kh, kw, _, Ho, Wo = dcols.shape
    dx = xp.zeros((N, C, H, W), dtype=dcols.dtype) if out is None else out
    dxt = dx.transpose(1, 0, 2, 3)  # a view: dx is written in NCHW directly
    dxj = xp.empty((C, N, H + 2 * ph, Wo), dtype=dcols.dtype)
    for j in range(kw):
        lo, hi, w0 = _column_span(dw * j, sw, pw, W, Wo)
        if hi <= lo:
            continue
        rows = sh * (Ho - 1) + 1                       # the rows offset i = 0 writes
        dxj[:, :, 0:rows:sh] = dcols[:, 0, j]          # written, not added: no zero fill first
        _zero_border(dxj, 0, rows, 0, Wo, step=sh)
        for i in range(1, kh):
            view = dxj[:, :, dh * i:dh * i + rows:sh]
            view += dcols[:, i, j]  # in place through the view (no self-assigning setitem)
        target = dxt[:, :, :, w0:w0 + sw * (hi - lo - 1) + 1:sw]
        target += dxj[:, :, ph:ph + H, lo:hi]
    return dx
