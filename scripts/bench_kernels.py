"""Runs gpunet.bench.kernels (the logic ships in the package, so `gpunet bench kernels` works installed).

    python scripts/bench_kernels.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.kernels import main

if __name__ == "__main__":
    sys.exit(main())
