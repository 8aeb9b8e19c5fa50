"""Runs gpunet.bench.host_overhead (the logic ships in the package, so `gpunet bench host_overhead` works installed).

    python scripts/bench_host_overhead.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.host_overhead import main

if __name__ == "__main__":
    sys.exit(main())
