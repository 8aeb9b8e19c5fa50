"""Runs gpunet.bench.parallel (the logic ships in the package, so `gpunet bench parallel` works installed).

    python scripts/bench_parallel.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.parallel import main

if __name__ == "__main__":
    sys.exit(main())
