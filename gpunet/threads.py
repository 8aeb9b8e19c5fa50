"""CPU threads for BLAS, chosen on purpose instead of left to the library's default.

OpenBLAS starts one thread per core. gpunet's zoo models multiply small matrices (an MLP
layer at batch 64 is a 64×784 by 784×512 GEMM, well under a millisecond), where waking and
joining threads costs about as much as the work, and on a shared machine an idle-spinning
BLAS thread takes a core another process needs: the main MNIST command took 5–30 s with
OpenBLAS's default on a busy 2-core machine and 1.6 s with one thread. So on the CPU gpunet
uses one BLAS thread unless told otherwise (`--threads N`, or `gn.set_threads(N)`);
`gpunet bench train --threads N` measures any choice on your machine.

    set_threads(n)      n >= 1: n CPU threads (BLAS at one, GEMMs split over the n workers);
                        0: gpunet's choice (AUTO_THREADS)
    blas_info()         {"threads": int or None, "library": str}
    workers()           how many threads gpunet's own CPU work uses
    parallel_chunks(fn, n, min_chunk)
                        fn(lo, hi) over [0, n) split into workers() contiguous chunks
    matmul(a, b, out, linear=False)
                        a @ b (NumPy); with split GEMMs on, large ones cut into workers()
                        single-threaded BLAS calls (rows, columns or the batch axis); a
                        Linear layer's mid-sized ones one call on BLAS's threads; else one call

Beyond BLAS, the layers' own NumPy work (im2col, pooling, normalisation, element-wise
passes) runs over batch chunks on the same number of threads: NumPy releases the GIL
inside its loops, so chunks of one large array run truly in parallel. With one thread the
function is called once, on the caller's thread, with nothing added.

With set_threads(n), n >= 2, BLAS itself stays at one thread and gpunet splits its large
GEMMs over its n workers (`matmul`): each chunk is one single-threaded BLAS call on a
worker. OpenBLAS's own threads spin-wait for ~0.1 s after each multithreaded GEMM
(OPENBLAS_THREAD_TIMEOUT, read only when the library loads), taking the core that the
layers' chunked NumPy/Numba passes between the GEMMs need (README, Performance: small_cnn
at 2 threads). An MLP's GEMMs are too small for
a ~0.1 ms hand-off to a worker and have no chunked passes around, so a Linear layer's
products under LINEAR_SPLIT_MIN_FLOPS run as one call on BLAS's threads (see `matmul`).
Without set_threads (the library's own count) every GEMM is one call.

The count is set through threadpoolctl, which talks to the BLAS library NumPy loaded
(OpenBLAS, MKL or BLIS). GPU runs are unaffected: CuPy does not use these threads.
"""
from __future__ import annotations

import threading
import time

from .argcheck import non_negative_int

AUTO_THREADS = 1
_limits = None  # the threadpoolctl limiter that set the current count (kept so it stays applied)
_workers = None  # gpunet's own CPU thread count: set_threads' count, else the BLAS count read once
_pool = None     # (size, ThreadPoolExecutor) for parallel_chunks, made on first use
_pool_lock = threading.Lock()
_split = False   # set_threads(n >= 2): BLAS at one thread, `matmul` splits over the workers
_blas_ctl = False  # threadpoolctl's BLAS controller, looked up on first use
_blas_awake_until = 0.0  # perf_counter time until which BLAS's threads may still spin
SPLIT_MIN_FLOPS = 1 << 25  # 2·m·n·k from this up: split over the workers (a hand-off costs ~0.1 ms)
BLAS_MIN_FLOPS = 1 << 22   # a Linear's from this up to its split: one call on BLAS's threads
SPIN_S = 0.1               # how long OpenBLAS's threads spin after a call (2^28 cycles by default)
LINEAR_SPLIT_MIN_FLOPS = 1 << 27  # Linear's split floor (its GEMMs are mostly next to other GEMMs)


def resolve_threads(requested: int) -> int:
    """The thread count `requested` stands for (0: AUTO_THREADS)."""
    requested = non_negative_int("threads", "threads", requested)
    return requested or AUTO_THREADS


def set_threads(requested: int = 0) -> int:
    """Set gpunet's CPU thread count; returns the count now in effect (0 requests AUTO_THREADS).

    n = 1: one BLAS thread, no workers. n >= 2: n workers, BLAS at one thread per call, the
    large GEMMs split over the workers (`matmul`)."""
    global _limits, _workers, _split
    n = resolve_threads(requested)
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=1, user_api="blas")
    _workers, _split = n, n > 1
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


def split_gemms() -> bool:
    """True when `matmul` splits large GEMMs over the workers (set_threads(n), n >= 2)."""
    return _split and workers() > 1


def matmul(a, b, out=None, linear=False):
    """a @ b (NumPy arrays, as np.matmul, into out when given) over the workers.

    With split_gemms() and 2·m·n·k·batch >= SPLIT_MIN_FLOPS (LINEAR_SPLIT_MIN_FLOPS for a
    Linear layer's, linear=True): batched operands
    split over their first axis; 2-d ones over a's rows when m >= n, else over b's columns;
    each chunk is one single-threaded BLAS call writing its own block of the result, so the
    result equals one call's up to BLAS's blocking (float rounding). A Linear layer's smaller
    products from BLAS_MIN_FLOPS up (an MLP's: too small for ~0.1 ms hand-offs, and between
    other GEMMs, not chunked passes) run as one call on BLAS's threads (workers() of them,
    back to one afterwards), and so does any product while those threads may still spin
    (SPIN_S: a split would share its cores with them); the rest as one single-threaded call."""
    import numpy as np
    if not split_gemms() or a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    (m, k), n = a.shape[-2:], b.shape[-1]
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if a.ndim > 2 or b.ndim > 2 else ()
    flops = 2 * m * n * k * _prod(lead)
    if _blas_awake() or linear and BLAS_MIN_FLOPS <= flops < LINEAR_SPLIT_MIN_FLOPS:
        return _blas_threaded(a, b, out)
    if flops < (LINEAR_SPLIT_MIN_FLOPS if linear else SPLIT_MIN_FLOPS):
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(lead + (m, n), dtype=np.result_type(a.dtype, b.dtype))
    nd = out.ndim
    if nd > 2 and out.shape[0] >= workers():
        def part(lo, hi):
            np.matmul(a[lo:hi] if a.ndim == nd and a.shape[0] > 1 else a,
                      b[lo:hi] if b.ndim == nd and b.shape[0] > 1 else b, out=out[lo:hi])
        parallel_chunks(part, out.shape[0])
    elif m >= n:
        def part(lo, hi):
            np.matmul(a[..., lo:hi, :], b, out=out[..., lo:hi, :])
        parallel_chunks(part, m)
    else:
        def part(lo, hi):
            np.matmul(a, b[..., lo:hi], out=out[..., lo:hi])
        parallel_chunks(part, n)
    return out


def _blas_awake():
    return time.perf_counter() < _blas_awake_until


def _blas_threaded(a, b, out):
    """One np.matmul on BLAS's own threads (workers() of them), BLAS back at one thread after."""
    import numpy as np
    global _blas_awake_until
    ctl = _blas_controller()
    if ctl is None:
        return np.matmul(a, b, out=out)
    ctl.set_num_threads(workers())
    try:
        return np.matmul(a, b, out=out)
    finally:
        ctl.set_num_threads(1)
        _blas_awake_until = time.perf_counter() + SPIN_S


def _blas_controller():
    """threadpoolctl's controller of NumPy's BLAS (None when there is none), found once."""
    global _blas_ctl
    if _blas_ctl is False:
        from threadpoolctl import ThreadpoolController
        found = ThreadpoolController().select(user_api="blas").lib_controllers
        _blas_ctl = found[0] if found else None
    return _blas_ctl


def _prod(shape):
    r = 1
    for s in shape:
        r *= s
    return r


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
