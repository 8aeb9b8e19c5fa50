"""Host overhead of one fused cross-entropy call (and one ReLU backward) on the GPU wrapper path.

Runs the real wrappers (gpunet/ops) against a null CuPy: arrays are NumPy arrays that gpunet
takes for CuPy arrays, and a kernel launch does nothing, so what is timed is gpunet's own
Python work per call (argument checks, dispatch, flags, launch configuration, the small
array ops the wrapper issues) with NumPy standing in for CuPy's array calls. Next to it, the
same call with the kernels folder looked up on every call (the behaviour before it was
cached) and the cost of that lookup alone. Median of --repeats batches of --calls calls.

    gpunet bench host_overhead [--json-out benchmarks/results/<date>-cpu-host-overhead.json]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
import types

import numpy as np

import gpunet as gn
from gpunet.bench import progress
from gpunet import backend, ops
from gpunet.bench.host import cpu_count, cpu_model, load_average, write_json
from gpunet.ops import _kernels

LIMIT_US = 30.0


class ndarray(np.ndarray):
    """A NumPy array gpunet takes for a CuPy array on GPU 0."""
    __module__ = "cupy"
    device = types.SimpleNamespace(id=0)

    @property
    def data(self):   # CuPy keeps its MemoryPointer; building NumPy's __array_interface__ costs ~1 µs
        d = self.__dict__.get("_data")
        if d is None:
            d = self._data = types.SimpleNamespace(ptr=self.__array_interface__["data"][0])
        return d

    def get(self):
        return np.asarray(self)


def _dev(a):
    return a.view(ndarray) if isinstance(a, np.ndarray) else np.asarray(a).view(ndarray)


class _NullFunction:
    def __call__(self, grid, block, args, **kw):
        pass


class _NullModule:
    def __init__(self, **kw):
        pass

    def compile(self):
        return self

    def get_function(self, name):
        return _NullFunction()


def null_cupy():
    m = types.ModuleType("cupy")
    m.__version__ = "null"
    for name in ("empty", "full", "zeros", "asarray", "ascontiguousarray", "count_nonzero"):
        setattr(m, name, (lambda f: lambda *a, **k: _dev(f(*a, **k)))(getattr(np, name)))
    m.int64, m.int32, m.uint32 = np.int64, np.int32, np.uint32
    m.RawModule = _NullModule

    class Device:
        def __init__(self, i=0):
            self.id = i

        def __enter__(self):
            return self

        def __exit__(self, *e):
            return False
    m.cuda = types.SimpleNamespace(Device=Device, runtime=types.SimpleNamespace(
        driverGetVersion=lambda: 12080, getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"null", "totalGlobalMem": 2**34, "major": 9, "minor": 0}))
    m.random = types.SimpleNamespace(RandomState=lambda seed: None)
    return m


def per_call_us(fn, calls, repeats, clock=time.thread_time):
    """Median over `repeats` batches of the per-call time. The default clock is this thread's
    CPU time, which a busy shared machine does not inflate the way it inflates wall time."""
    for _ in range(calls):
        fn()
    times = []
    for _ in range(repeats):
        t = clock()
        for _ in range(calls):
            fn()
        times.append((clock() - t) / calls * 1e6)
    return statistics.median(times)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpunet bench host_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--json-out", default=None, help="write the results as JSON to this file", metavar="FILE")
    p.add_argument("--calls", type=int, default=2000, help="calls per timed batch")
    p.add_argument("--repeats", type=int, default=21, help="timed batches; the median is kept")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    saved = backend._import_cupy, backend._status_cache, dict(backend._devices), backend._toolchain_problem
    fake = null_cupy()
    backend._import_cupy = lambda: fake
    backend._status_cache = None
    backend._toolchain_problem = lambda cupy: None  # a null CuPy compiles nothing: only host work is timed
    _kernels.reset_caches()
    try:
        return run(args)
    finally:   # leave the process as it was (tests call main)
        backend._import_cupy, backend._status_cache, backend._toolchain_problem = saved[0], saved[1], saved[3]
        backend._devices.clear()
        backend._devices.update(saved[2])
        _kernels.reset_caches()


def run(args):
    gn.device("cuda")
    x = _dev(np.random.default_rng(0).standard_normal((128, 10)).astype(np.float32))
    y = _dev(np.random.default_rng(0).integers(0, 10, 128))
    g = _dev(np.empty_like(x))
    cases = {
        "softmax_cross_entropy (deferred, out=)": lambda: ops.softmax_cross_entropy(x, y, out=g,
                                                                                    check_labels="deferred"),
        "softmax_cross_entropy_eval (deferred)": lambda: ops.softmax_cross_entropy_eval(x, y, check_labels="deferred"),
        "relu_backward (out=)": lambda: ops.relu_backward(g, x, out=g),
    }
    rows = []
    for i, (name, fn) in enumerate(cases.items()):
        progress("host_overhead", i + 1, len(cases), name)
        cached = per_call_us(fn, args.calls, args.repeats)
        wall = per_call_us(fn, args.calls, args.repeats, clock=time.perf_counter)
        real_root = _kernels.kernels_root
        _kernels.kernels_root = backend.kernels_dir          # the folder looked up on every call
        try:
            uncached = per_call_us(fn, args.calls // 4, args.repeats)
        finally:
            _kernels.kernels_root = real_root
        rows.append({"call": name, "host_us_per_call": cached, "wall_us_per_call": wall,
                     "host_us_per_call_folder_lookup_each_call": uncached,
                     "ratio_uncached_over_cached": uncached / cached})
        print(f"{name:42s} {cached:7.1f} µs CPU, {wall:7.1f} µs wall  (folder looked up per call: "
              f"{uncached:7.1f} µs CPU)")
    lookup = per_call_us(backend.kernels_dir, 200, args.repeats)
    print(f"{'backend.kernels_dir() alone':42s} {lookup:7.1f} µs")
    ce = rows[0]["host_us_per_call"]
    results = {"benchmark": "host-overhead", "device": f"CPU: {cpu_model()}", "cpu_count": cpu_count(), "load_average": load_average(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "versions": dict(backend.versions(), gpunet=gn.__version__),
               "method": "gpunet's GPU wrappers against a null CuPy (NumPy arrays, no-op launches); "
                         "host_us_per_call is thread CPU time (time.thread_time), wall_us_per_call wall time; median of "
                         f"{args.repeats} batches of {args.calls} calls (folder-lookup variant: {args.calls // 4})",
               "limit_us": LIMIT_US, "rows": rows, "kernels_dir_lookup_us": lookup,
               "fused_ce_within_limit": ce < LIMIT_US}
    if args.json_out:
        write_json(args.json_out, results, indent=2)
        print(f"wrote {args.json_out}")
    if ce >= LIMIT_US:
        print(f"bench_host_overhead: fused CE host overhead {ce:.1f} µs is over the {LIMIT_US} µs limit",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
