"""Runs gpunet.bench.loader (the logic ships in the package, so `gpunet bench loader` works installed).

    python scripts/bench_loader.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.loader import main

if __name__ == "__main__":
    sys.exit(main())
