"""Benchmarks that ship with the package (scripts/ is not inside the wheel).

    train   gpunet against PyTorch on the same training workloads (gpunet.bench.train)

`gpunet bench train|kernels|loader|parallel` runs them; kernels, loader and parallel
live in the source tree's scripts/ only.
"""
