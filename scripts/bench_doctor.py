"""Runs gpunet.bench.doctor (the logic ships in the package, so `gpunet bench doctor` works installed).

    python scripts/bench_doctor.py --help
"""
from __future__ import annotations

import sys

from gpunet.bench.doctor import main

if __name__ == "__main__":
    sys.exit(main())
