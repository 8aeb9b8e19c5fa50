"""CPU threads for BLAS, chosen on purpose instead of left to the library's default.

OpenBLAS starts one thread per core. gpunet's zoo models multiply small matrices (an MLP
layer at batch 64 is a 64×784 by 784×512 GEMM, well under a millisecond), where waking and
joining threads costs about as much as the work, and on a shared machine an idle-spinning
BLAS thread takes a core another process needs: the main MNIST command took 5–30 s with
OpenBLAS's default on a busy 2-core machine and 1.6 s with one thread. So on the CPU gpunet
uses one BLAS thread unless told otherwise (`--threads N`, or `gn.set_threads(N)`);
`gpunet bench train --threads N` measures any choice on your machine.

    set_threads(n)      n >= 1: that many BLAS threads; 0: gpunet's choice (AUTO_THREADS)
    blas_info()         {"threads": int or None, "library": str}
    workers()           how many threads gpunet's own CPU work uses (= the BLAS count)
    parallel_chunks(fn, n, min_chunk)
                        fn(lo, hi) over [0, n) split into workers() contiguous chunks

Beyond BLAS, the layers' own NumPy work (im2col, pooling, normalisation, element-wise
passes) runs over batch chunks on the same number of threads: NumPy releases the GIL
inside its loops, so chunks of one large array run truly in parallel. With one thread the
function is called once, on the caller's thread, with nothing added.

The count is set through threadpoolctl, which talks to the BLAS library NumPy loaded
(OpenBLAS, MKL or BLIS). GPU runs are unaffected: CuPy does not use these threads.
"""
from __future__ import annotations

import threading

from .argcheck import non_negative_int

AUTO_THREADS = 1
_limits = None  # the threadpoolctl limiter that set the current count (kept so it stays applied)
_workers = None  # gpunet's own CPU thread count: set_threads' count, else the BLAS count read once
_pool = None     # (size, ThreadPoolExecutor) for parallel_chunks, made on first use
_pool_lock = threading.Lock()


def resolve_threads(requested: int) -> int:
    """The thread count `requested` stands for (0: AUTO_THREADS)."""
    requested = non_negative_int("threads", "threads", requested)
    return requested or AUTO_THREADS


def set_threads(requested: int = 0) -> int:
    """Set NumPy's BLAS thread count; returns the count now in effect (0 requests AUTO_THREADS)."""
    global _limits, _workers
    n = resolve_threads(requested)
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=n, user_api="blas")
    _workers = n
    return n


def workers() -> int:
    """Threads for gpunet's own CPU work: set_threads' count, else NumPy's BLAS count (>= 1)."""
    global _workers
    if _workers is None:
        _workers = max(1, blas_info()["threads"] or 1)
    return _workers


def _executor(size):
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != size:
            from concurrent.futures import ThreadPoolExecutor
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = (size, ThreadPoolExecutor(max_workers=size, thread_name_prefix="gpunet-cpu"))
        return _pool[1]


def chunk_bounds(n: int, parts: int) -> list:
    """[(lo, hi), ...]: [0, n) cut into `parts` contiguous chunks as even as possible."""
    parts = max(1, min(parts, n))
    step, extra = divmod(n, parts)
    bounds, lo = [], 0
    for i in range(parts):
        hi = lo + step + (i < extra)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def parallel_chunks(fn, n: int, min_chunk: int = 1, parts: int | None = None) -> list:
    """[fn(lo, hi) for each chunk]: [0, n) over workers() threads, no chunk under min_chunk.

    The first chunk runs on the caller's thread; the others on a persistent pool. An
    exception in any chunk is raised here after all chunks have finished.
    """
    parts = workers() if parts is None else parts
    parts = max(1, min(parts, n // max(1, min_chunk)))
    if parts == 1:
        return [fn(0, n)]
    bounds = chunk_bounds(n, parts)
    pool = _executor(parts - 1)
    futures = [pool.submit(fn, lo, hi) for lo, hi in bounds[1:]]
    first, error = None, None
    try:
        first = fn(*bounds[0])
    except BaseException as e:  # noqa: BLE001 - re-raised once the other chunks are done
        error = e
    results = [first]
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as e:  # noqa: BLE001
            error = error or e
    if error is not None:
        raise error
    return results


def blas_info() -> dict:
    """NumPy's BLAS library and its current thread count (None when it cannot be read)."""
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                return {"threads": int(info["num_threads"]),
                        "library": f"{info.get('internal_api')} {info.get('version')}"}
    except Exception as e:  # noqa: BLE001 - reported, never fatal
        return {"threads": None, "library": f"unreadable ({type(e).__name__}: {e})"}
    return {"threads": None, "library": "no BLAS library found by threadpoolctl"}
