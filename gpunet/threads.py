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

The count is set through threadpoolctl, which talks to the BLAS library NumPy loaded
(OpenBLAS, MKL or BLIS). GPU runs are unaffected: CuPy does not use these threads.
"""
from __future__ import annotations

from .argcheck import non_negative_int

AUTO_THREADS = 1
_limits = None  # the threadpoolctl limiter that set the current count (kept so it stays applied)


def resolve_threads(requested: int) -> int:
    """The thread count `requested` stands for (0: AUTO_THREADS)."""
    requested = non_negative_int("threads", "threads", requested)
    return requested or AUTO_THREADS


def set_threads(requested: int = 0) -> int:
    """Set NumPy's BLAS thread count; returns the count now in effect (0 requests AUTO_THREADS)."""
    global _limits
    n = resolve_threads(requested)
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=n, user_api="blas")
    return n


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
