"""The README's performance tables as markdown, from a committed `gpunet bench train` JSON.

    python scripts/perf_table.py benchmarks/results/train-cpu-<cpu>-<date>.json

The logic lives in gpunet.bench.perf_table (scripts/ is not inside the wheel).
"""
from __future__ import annotations

import sys

from gpunet.bench.perf_table import main

if __name__ == "__main__":
    sys.exit(main())
