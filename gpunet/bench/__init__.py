"""Benchmarks, all inside the package so `gpunet bench NAME` works from an installed wheel.

    train     gpunet against PyTorch on the same training workloads (gpunet.bench.train)
    kernels   the CUDA kernels against their NumPy twins (gpunet.bench.kernels)
    loader    DataLoader throughput next to an MLP step (gpunet.bench.loader)
    parallel  data-parallel overhead at N=1 and N simulated replicas (gpunet.bench.parallel)
    doctor    LiveDoctor's overhead on a training run (gpunet.bench.doctor)

Each module has `main(argv) -> int`; scripts/bench_<name>.py in a checkout call the same.
Shared helpers: host.py (device name, load average), torch_twin.py (the PyTorch side).
"""
