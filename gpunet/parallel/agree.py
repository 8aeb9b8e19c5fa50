"""Ranks start, and stay, in agreement: digests of code and settings, parameter checksums.

    agree(comm, {"gpunet code": source_digest(), "config field 'lr'": 0.05, ...})
    compare_checksums(comm, checksum(arrays), "at the end of epoch 3")

Both gather one small fixed-size row per rank (timed, like every collective) and raise
DistributedError, reported by rank 0, naming every rank that differs from rank 0 and in
what.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import backend
from ..errors import DistributedError


def source_digest() -> str:
    """SHA-256 of gpunet's own Python sources: ranks must run the same code."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _digest(value) -> np.ndarray:
    text = json.dumps(value, sort_keys=True, default=repr)
    return np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.uint8)


def agree(comm, parts: dict) -> None:
    """Raise DistributedError (reported by rank 0) naming every rank whose `parts` differ
    from rank 0's, and in what. `parts` maps names to JSON-able values; the names
    themselves must be the same on every rank (they are fixed by gpunet's code)."""
    names = sorted(parts)
    row = np.concatenate([_digest(parts[k]) for k in names] or [np.zeros(8, np.uint8)])
    table = comm.allgather(row).reshape(comm.world_size, max(1, len(names)), 8)
    problems = []
    for r in range(1, comm.world_size):
        diff = [names[i] for i in range(len(names)) if not np.array_equal(table[r, i], table[0, i])]
        if diff:
            problems.append((r, diff))
    if problems:
        bad = [r for r, _ in problems]
        text = "; ".join(f"rank {r} differs from rank 0 in {', '.join(d)}" for r, d in problems)
        raise DistributedError(f"{text}: every rank must run the same gpunet code with the same settings",
                               ranks=bad, reporter=0)


def checksum(arrays) -> int:
    """A cheap exact fingerprint of arrays: Σ (i+1)·bits_i mod 2^64 over their bit patterns,
    computed where the arrays live (one number per array crosses to the host)."""
    total = 0
    for a in arrays:
        xp = backend.xp_of(a)
        flat = xp.ascontiguousarray(a).reshape(-1)
        bits = flat.view(xp.uint64 if flat.dtype.itemsize == 8 else xp.uint32).astype(xp.uint64)
        weights = xp.arange(1, bits.size + 1, dtype=xp.uint64)
        total = (total * 1_000_003 + int((bits * weights).sum())) % 2**64
    return total


def compare_checksums(comm, value: int, where: str) -> None:
    """Raise DistributedError (reported by rank 0) when any rank's checksum differs from rank 0's."""
    sums = comm.allgather(np.array([value], dtype=np.uint64)).reshape(-1)
    bad = [r for r in range(1, comm.world_size) if sums[r] != sums[0]]
    if bad:
        raise DistributedError(f"rank{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} hold different "
                               f"weights or optimizer state than rank 0 {where} (checksums "
                               f"{', '.join(f'{int(s):016x}' for s in sums)})", ranks=bad, reporter=0)
