"""Embedding: a lookup table of rows, y = W[idx].

    idx (*) integer in [0, num_embeddings), W (num_embeddings, embedding_dim) -> y (*, embedding_dim)
    dW[r] += Σ_{k : idx_k = r} dy_k     (only the rows looked up are touched)

The gradient must sum the contributions of repeated indices. `ufunc.at` is not
portable across NumPy and CuPy, so backward (1) maps the indices to their distinct
rows with `unique(return_inverse=True)`, (2) sums each (row, column) bin with one
`bincount` over the flattened bins inv·D + d (weights dy, float64 accumulation,
loop-free on both backends), and (3) adds the (U, D) result into W.grad[rows], where
the rows are distinct so a fancy-index add is exact. On GPU bincount accumulates with
atomics, so the float64 summation order (not the result beyond rounding) may vary, and
unique/bincount size their outputs from the data: one device sync per backward.

padding_idx (PyTorch's): that row starts at zeros and gets no gradient from lookups, so a
padding token maps to a fixed zero vector (the kernel_regularizer, like weight decay in
the optimizer, still acts on it).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import GpunetTypeError, GpunetValueError
from . import init as _init
from ._layer import RegularizedLayer, positive_int
from .module import Parameter


class Embedding(RegularizedLayer):
    """Rows of `weight` (num_embeddings, embedding_dim) looked up by integer indices.

    init defaults to N(0, 1) as in PyTorch (`init.normal(0.0, 1.0)`).
    Indices are range-checked on every forward: an out-of-range index raises
    GpunetValueError instead of silently reading another row (on GPU this costs one sync).
    """

    def __init__(self, num_embeddings, embedding_dim, init=None, kernel_regularizer=None,
                 activity_regularizer=None, padding_idx=None):
        super().__init__()
        self.num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            n = self.num_embeddings
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
                    or not -n <= padding_idx < n:
                raise GpunetValueError(f"Embedding: padding_idx expected an int in [-{n}, {n}) or None, "
                                       f"got {padding_idx!r}")
            padding_idx = int(padding_idx) % n
        self.padding_idx = padding_idx
        init = _init.normal(0.0, 1.0) if init is None else init
        self.weight = Parameter(_init.initialize(init, (self.num_embeddings, self.embedding_dim), arg="init"))
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0
        self._init_regularizers(kernel_regularizer, activity_regularizer)
        self._cache = None

    def _check_indices(self, idx):
        self._check_array(idx)
        if idx.dtype.kind not in "iu":
            raise GpunetTypeError(f"{self!r} expected integer indices, got dtype {idx.dtype}")
        xp = backend.xp_of(idx)
        bad = (idx < 0) | (idx >= self.num_embeddings)
        if bool(bad.any()):  # sync: reading out of range would silently return another row
            first = int(xp.flatnonzero(bad)[0])
            where = tuple(int(i) for i in np.unravel_index(first, idx.shape))
            raise GpunetValueError(f"{self!r} expected indices in [0, {self.num_embeddings}), got "
                                   f"{int(idx.reshape(-1)[first])} at position {where} "
                                   f"({int(bad.sum())} out of range)")

    def forward(self, idx):
        self._check_indices(idx)
        y = backend.xp_of(idx).take(self.weight.data, idx, axis=0)
        self._cache = idx
        return self._keep_output(y)

    def backward(self, dy, need_input_grad=True):
        idx = self._saved()
        D = self.embedding_dim
        self._check_dy(dy, (*idx.shape, D))
        dy = self._activity_dy(dy)
        xp = backend.xp_of(dy)
        rows, inv = xp.unique(idx.reshape(-1), return_inverse=True)
        bins = (inv.reshape(-1, 1) * D + xp.arange(D)).reshape(-1)
        sums = xp.bincount(bins, weights=dy.reshape(-1), minlength=rows.size * D).reshape(rows.size, D)
        if self.padding_idx is not None:
            sums[rows == self.padding_idx] = 0
        self.weight.grad[rows] += sums.astype(self.weight.dtype, copy=False)
        self._add_kernel_grad()
        return None  # indices have no gradient

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}{self._regularizer_repr()}"

