"""Runs gpunet.bench.optim (the logic ships in the package, so `gpunet bench optim` works installed).

    python scripts/bench_optim.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.optim import main

if __name__ == "__main__":
    sys.exit(main())
