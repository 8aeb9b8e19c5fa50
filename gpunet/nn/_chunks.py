"""Batch-chunked CPU work for the layers' own NumPy passes (not the GEMMs).

    over_batch(x, fn, min_chunk)   fn(lo, hi) on the batch rows [lo, hi) of x, over
                                   gpunet.threads.workers() threads on NumPy; one call
                                   fn(0, N) on CuPy (the GPU runs each pass as one kernel)

NumPy releases the GIL inside its loops, so chunks of one large array run truly in
parallel; every chunk writes its own rows of a preallocated output, so the results are
the same as one call over the whole batch, bit for bit.
"""
from __future__ import annotations

from .. import backend, threads

MIN_ELEMENTS = 1 << 16   # below this per chunk, waking a thread costs more than the work


def over_batch(x, fn, min_chunk=None):
    """[fn(lo, hi), ...] over contiguous chunks of x's first axis (one chunk on CuPy)."""
    N = x.shape[0]
    if backend.is_cupy_array(x) or N < 2 or threads.workers() == 1:
        return [fn(0, N)]
    per_row = max(1, x.size // max(1, N))
    if min_chunk is None:
        min_chunk = max(1, -(-MIN_ELEMENTS // per_row))
    return threads.parallel_chunks(fn, N, min_chunk)
