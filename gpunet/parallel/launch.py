"""`gpunet launch`: one process per rank, watched until all finish or one fails.

    gpunet launch --nproc 2 -- gpunet train --dataset mnist --device cuda

Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (and
GPUNET_LAUNCHED=1), and OMP/OpenBLAS/MKL thread counts of cores/nproc unless already set. Only rank 0's standard output is shown; every rank's standard
error is. If any rank exits non-zero, the others are stopped (SIGTERM, then SIGKILL
after a grace period) and the launcher exits non-zero naming the rank. A global
`timeout` bounds the whole run, so nothing hangs forever.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ..errors import GpunetValueError


def resolve_command(cmd):
    """`gpunet ...` runs through this interpreter (the same installation as the launcher)."""
    if not cmd:
        raise GpunetValueError("launch: expected a command after --, e.g. -- gpunet train ...; got none")
    return [sys.executable, "-m", "gpunet", *cmd[1:]] if cmd[0] == "gpunet" else list(cmd)


def rank_env(local_rank, nproc, nnodes, node_rank, host, port):
    env = dict(os.environ)
    # N ranks on one machine: give each an equal share of the cores for BLAS/OpenMP threads
    # (unless the user chose), so ranks do not oversubscribe the CPU and spin against each other.
    share = str(max(1, (os.cpu_count() or 1) // nproc))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, share)
    env.update(RANK=str(node_rank * nproc + local_rank), WORLD_SIZE=str(nnodes * nproc),
               LOCAL_RANK=str(local_rank), MASTER_ADDR=host, MASTER_PORT=str(port), GPUNET_LAUNCHED="1")
    return env


def _stop(procs, grace):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(cmd, nproc, nnodes=1, node_rank=0, host="127.0.0.1", port=29500, timeout=None, grace=10.0,
           log=print) -> int:
    """Run `cmd` once per local rank; return 0 when all succeed, else the failing rank's code."""
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise GpunetValueError(f"launch: expected nproc >= 1, nnodes >= 1 and 0 <= node_rank < nnodes, "
                               f"got nproc={nproc}, nnodes={nnodes}, node_rank={node_rank}")
    argv = resolve_command(cmd)
    procs = []
    for i in range(nproc):
        quiet = (node_rank * nproc + i) != 0
        procs.append(subprocess.Popen(argv, env=rank_env(i, nproc, nnodes, node_rank, host, port),
                                      stdout=subprocess.DEVNULL if quiet else None))
    start = time.monotonic()
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                rank = node_rank * nproc + i
                _stop(procs, grace)
                log(f"gpunet launch: rank {rank} exited with code {code}; stopped the other ranks")
                return code if code > 0 else 1
            if all(c == 0 for c in codes):
                return 0
            if timeout is not None and time.monotonic() - start > timeout:
                _stop(procs, grace)
                log(f"gpunet launch: timed out after {timeout:g}s; stopped every rank")
                return 124
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs, grace)
        log("gpunet launch: interrupted; stopped every rank")
        return 130
