"""Runs gpunet.bench.mpi (the logic ships in the package, so `gpunet bench mpi` works installed).

    python scripts/bench_mpi.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.mpi import main

if __name__ == "__main__":
    sys.exit(main())
