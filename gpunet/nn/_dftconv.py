"""Stride-1 convolution in the frequency domain, with the small 2-d DFTs done as matrix products.

For a stride-1, dilation-1 convolution with zero padding (top t, bottom b, left l, right r)
and the circular DFT of size Ph × Pw (ω = e^(−2πi/P) on each axis),

    X̂[f] = Σ_m x[m] ω^(f·m)            (x at its own positions m ∈ [0, H) × [0, W))
    Ŵ[f] = Σ_i w[i] ω^(−f·(i − p))     (p = (t, l): the padding becomes a phase)
    y[h]  = (1/P) Σ_f ω^(−f·h) Σ_c X̂[n, c, f] Ŵ[o, c, f]                 h ∈ [0, Ho)
    dx[m] = (1/P) Σ_f ω^(−f·m) Σ_o D̂[n, o, f] conj(Ŵ[o, c, f]),    D̂ = DFT of dy at h
    dW[i] = (1/P) Σ_f ω^(−f·(i − p)) Σ_n X̂[n, c, f] conj(D̂[n, o, f])

are exact (no wrap-around) when Ph ≥ H + max(t, b) and Ph ≥ kh (Pw alike): every index
difference that occurs then lies strictly between −P and P. Per frequency the channel sums
are complex GEMMs, (N, C) @ (C, O) and the like: 8·F·N·C·O flops per pass with
F = Ph·(Pw//2 + 1) frequencies (the real input's half spectrum), against
2·N·Ho·Wo·C·O·kh·kw for im2col + GEMM: 9× fewer for 64→64 5×5 on 12×12, 3.7× for 3×3 on 14×14.

The transforms are so small (P ≤ ~40) that each axis is one real or complex GEMM with a
precomputed DFT matrix rather than an FFT (NumPy's FFT costs microseconds per tiny image):
    analysis   a (B, R, Cc) -> (F, B):   a @ Mw (Cc, 2·Fw) real, then Mh (Ph, R) @ · complex
    synthesis  (F, B) -> (B, R', Cc'):   Sh (R', Ph) @ · complex, then · @ Sw (2·Fw, Cc') real
where the real GEMMs read and write complex numbers as (re, im) pairs, and Sw folds the
Hermitian half spectrum back into real values. Conjugated spectra come for free from the
conjugated matrices (the signals are real). Only x's spectrum (F, N, C) is kept for
backward, a fraction of im2col's columns.

Threads: the transposes run over image chunks on gpunet's worker threads, and the GEMMs
split over them too (threads.matmul, BLAS single-threaded per chunk): BLAS's own threads,
spinning after each product, took the second core from the chunked passes around.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import threads

_COMPLEX = {np.dtype("float32"): np.complex64, np.dtype("float64"): np.complex128}


def dft_size(size, before, after, k):
    """The smallest DFT length without wrap-around for an axis of `size` padded by (before, after)."""
    return max(size + max(before, after), k)


@functools.lru_cache(maxsize=128)
def _matrix(kind, P, n, start, conj, dtype):
    """One DFT matrix (NumPy), for positions start .. start + n − 1 of a length-P transform.

    "Mw" (n, 2·Fw) real, "Mh" (P, n) complex: analysis, ω^(f·pos) (conj: ω^(−f·pos));
    "Sh" (n, P) complex, "Sw" (2·Fw, n) real: synthesis, (1/P)·ω^(−f·pos) (conj: ω^(+f·pos)),
    Sw weighting each half-spectrum term as its Hermitian pair (×2 but for 0 and P/2).
    """
    pos = start + np.arange(n)
    sign = 1.0 if conj else -1.0        # analysis exponent sign; synthesis uses the opposite
    if kind in ("Mh", "Sh"):
        f = np.arange(P)
        phase = 2j * np.pi * np.mod(np.outer(f, pos), P) / P   # (P, n); exact integer reduction first
        m = np.exp(sign * phase) if kind == "Mh" else (np.exp(-sign * phase) / P).T
        return m.astype(_COMPLEX[np.dtype(dtype)])
    Fw = P // 2 + 1
    theta = 2 * np.pi * np.mod(np.outer(pos, np.arange(Fw)), P) / P  # (n, Fw)
    if kind == "Mw":                                      # e^(sign·iθ) = cos θ + sign·i sin θ
        m = np.stack([np.cos(theta), sign * np.sin(theta)], axis=-1).reshape(n, 2 * Fw)
        return m.astype(dtype)
    weight = np.full(Fw, 2.0)
    weight[0] = 1.0
    if P % 2 == 0:
        weight[-1] = 1.0
    # Re(z·e^(−sign·iθ)) = re·cos θ + sign·im·sin θ
    m = np.stack([np.cos(theta), sign * np.sin(theta)], axis=-1) * weight[None, :, None] / P
    return np.ascontiguousarray(m.reshape(n, 2 * Fw).T).astype(dtype)


def matrices(xp, kind, P, n, start, conj, dtype):
    m = _matrix(kind, P, n, start, conj, np.dtype(dtype).name)
    return m if xp is np else xp.asarray(m)


def matmul(xp, a, b, out=None):
    """a @ b: on NumPy over gpunet's workers when it splits GEMMs (threads.matmul)."""
    return threads.matmul(a, b, out=out) if xp is np else xp.matmul(a, b, out=out)


_BLOCK = 128  # images per transposed block: source and destination stay in cache

def _new(xp, scratch, name, shape, dtype):
    return xp.empty(shape, dtype=dtype) if scratch is None else scratch(name, shape, dtype)


def _to_last(xp, a, out):
    """a (B, R, Fw) -> out (R, Fw, B). On NumPy a blocked copy over the worker threads: a plain
    strided transpose runs ~3× slower, each written row reaching across all of a."""
    if xp is not np:
        out[...] = a.transpose(1, 2, 0)
        return out

    def copy(lo, hi):
        for b in range(lo, hi, _BLOCK):
            e = min(hi, b + _BLOCK)
            out[:, :, b:e] = a[b:e].transpose(1, 2, 0)
    threads.parallel_chunks(copy, a.shape[0], min_chunk=4 * _BLOCK)
    return out


def _from_last(xp, c, out):
    """c (R, Fw, B) -> out (B, R, Fw), over the worker threads on NumPy."""
    if xp is not np:
        out[...] = c.transpose(2, 0, 1)
        return out

    def copy(lo, hi):
        out[lo:hi] = c[:, :, lo:hi].transpose(2, 0, 1)
    threads.parallel_chunks(copy, c.shape[2], min_chunk=4 * _BLOCK)
    return out


def analysis(xp, a, P, start, conj=False, scratch=None, tag=""):
    """a (B, R, Cc) real -> its 2-d DFT (Ph, Fw, B) complex, a at positions start + (r, c).

    scratch(name, shape, dtype): where the work arrays and the result live (the layer's
    reused buffers, names prefixed by `tag`); fresh arrays without it."""
    (Ph, Pw), (r0, c0) = P, start
    B, R, Cc = a.shape
    Fw = Pw // 2 + 1
    dtype, ctype = a.dtype, _COMPLEX[np.dtype(a.dtype)]
    rows = _new(xp, scratch, tag + "rows", (B * R, 2 * Fw), dtype)
    matmul(xp, a.reshape(B * R, Cc), matrices(xp, "Mw", Pw, Cc, c0, conj, dtype), out=rows)
    moved = _to_last(xp, rows.view(ctype).reshape(B, R, Fw), _new(xp, scratch, tag + "moved", (R, Fw, B), ctype))
    spec = _new(xp, scratch, tag + "spec", (Ph, Fw * B), ctype)
    matmul(xp, matrices(xp, "Mh", Ph, R, r0, conj, dtype), moved.reshape(R, Fw * B), out=spec)
    return spec.reshape(Ph, Fw, B)


def synthesis(xp, z, P, size, start, conj=False, scratch=None, tag=""):
    """The real signal (B, R', Cc') (a fresh array) at positions start + (q, s) of the
    Hermitian spectrum whose half z (Ph, Fw, B) is given (conj: of conj(z))."""
    (Ph, Pw), (R, Cc), (q0, s0) = P, size, start
    _, Fw, B = z.shape
    ctype = z.dtype
    dtype = np.float32 if np.dtype(ctype) == np.complex64 else np.float64
    cols = _new(xp, scratch, tag + "cols", (R, Fw * B), ctype)
    matmul(xp, matrices(xp, "Sh", Ph, R, q0, conj, dtype), z.reshape(Ph, Fw * B), out=cols)
    moved = _from_last(xp, cols.reshape(R, Fw, B), _new(xp, scratch, tag + "back", (B, R, Fw), ctype))
    res = matmul(xp, moved.view(dtype).reshape(B * R, 2 * Fw), matrices(xp, "Sw", Pw, Cc, s0, conj, dtype))
    return res.reshape(B, R, Cc)
