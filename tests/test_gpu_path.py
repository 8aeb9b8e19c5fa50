"""The CuPy path's device rules, on the CPU through a faithful stand-in, and on a real GPU.

`fake_cupy` (this folder) keeps the CuPy 14 behaviours these tests depend on: a Device
context restores from a stack kept on its own object, arrays belong to one GPU and an
operation on another GPU's array raises, a peer copy is queued on the destination's
stream only, RandomState cannot be copied, and NVRTC/cuRAND failures raise what CuPy
raises. What it cannot show (real stream timing, peer access, the real compiler) is in
the `gpu`-marked tests at the end, which run where a GPU is usable.
"""
import copy
import sys

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend, losses, nn, optim
from gpunet.parallel import DataParallel
from gpunet.parallel.comm import Communicator

import fake_cupy


@pytest.fixture
def fake_gpu(monkeypatch):
    """Two fake GPUs behind gpunet's real probe: `import cupy` gets `fake_cupy`."""
    fake_cupy.reset(devices=2)
    monkeypatch.delenv("GPUNET_FORCE_CPU", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(backend, "_devices", {})
    monkeypatch.setattr(backend, "_status_cache", None)  # restored afterwards
    return fake_cupy


def probe():
    return backend.gpu_status(refresh=True)


class OrderedComm(Communicator):
    """A sum over replicas that runs each buffer's ops on its own device (the rule under test
    is the engine's, not a communicator's)."""
    name = "ordered"

    def all_reduce(self, buffers, op="sum"):
        self.called_on = fake_cupy.current()
        total = sum(backend.to_numpy(b) for b in buffers)
        for b in buffers:
            dev = backend.device_of(b)
            with dev:
                b[...] = dev.asarray(total)


def dropout_mlp():  # Tanh, not ReLU: ReLU's backward launches a raw kernel on a GPU
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3))


# ------------------------------------------------------------------ the stand-in itself

def test_fake_random_state_refuses_copies_like_cupys(fake_gpu):
    with pytest.raises(TypeError, match="cannot pickle '_thread.lock' object"):
        copy.deepcopy(fake_cupy.RandomState(0))


def test_probe_passes_on_a_working_fake_gpu(fake_gpu):
    status = probe()
    assert status.available is True and status.missing is None
    assert "compiled with NVRTC" in status.reason
    compiles = [e for e in fake_cupy.log if e[0] == "compile"]
    assert compiles == [("compile", "gpunet_probe", backend.KERNEL_OPTIONS)]
    assert ("launch", "gpunet_probe", 0) in fake_cupy.log
    assert gn.is_gpu_available() is True  # cached: no second compile
    assert len([e for e in fake_cupy.log if e[0] == "compile"]) == 1


# ------------------------------------------------------------------ device contexts

def test_device_context_nests(fake_gpu):
    """`with dev:` inside `with dev:` (an op inside a replica's step) restores each level."""
    probe()
    d1 = gn.device("cuda:1")
    with d1:
        with d1:
            assert fake_cupy.current() == 1
        assert fake_cupy.current() == 1
    assert fake_cupy.current() == 0


# ------------------------------------------------------------------ defect: Dropout replicas

def test_data_parallel_with_dropout_on_gpus_whose_rng_cannot_be_copied(fake_gpu):
    probe()
    model, loss = dropout_mlp(), losses.MSE()
    dp = DataParallel(model, loss, optim.SGD(model.parameters(), lr=0.1), ["cuda:0", "cuda:1"],
                      comm=OrderedComm(), seed=3)
    gens = [r.model[2].generator for r in dp.replicas]
    assert dp.replicas[0].model is model
    assert [g.device.name for g in gens] == ["cuda:0", "cuda:1"]
    assert gens[0] is not gens[1] and gens[0].seed != gens[1].seed
    assert all(isinstance(g.rng, fake_cupy.RandomState) for g in gens)


def test_a_model_whose_dropout_already_has_a_gpu_generator_can_be_replicated_again(fake_gpu):
    """A second engine over the same model copies a Dropout that holds a device generator."""
    probe()
    model, loss = dropout_mlp(), losses.MSE()
    opt = optim.SGD(model.parameters(), lr=0.1)
    DataParallel(model, loss, opt, ["cuda:0", "cuda:1"], comm=OrderedComm())
    dp = DataParallel(model, loss, opt, ["cuda:0", "cuda:1"], comm=OrderedComm())
    assert dp.replicas[1].model[2].generator.device.name == "cuda:1"


def test_generator_copy_on_a_gpu_restarts_its_seed(fake_gpu):
    probe()
    g = gn.device("cuda:1").generator(11)
    first = backend.to_numpy(g.uniform((5,)))
    c = copy.deepcopy(g)
    assert c is not g and c.rng is not g.rng and c.device is g.device and c.seed == 11
    np.testing.assert_array_equal(backend.to_numpy(c.uniform((5,))), first)


def test_generator_copy_on_the_cpu_continues_the_stream():
    g = gn.device("cpu").generator(7)
    g.uniform((3,))
    c = copy.deepcopy(g)
    assert c is not g and c.rng is not g.rng
    np.testing.assert_array_equal(c.uniform((6,)), g.uniform((6,)))
    assert not np.array_equal(c.uniform((6,)), gn.device("cpu").generator(7).uniform((6,)))


# ------------------------------------------------------------------ defect: cross-device order

def test_peer_copy_waits_for_the_source_and_holds_it_back(fake_gpu):
    probe()
    d0, d1 = gn.device("cuda:0"), gn.device("cuda:1")
    a = d0.asarray(np.arange(8.0))[::2]  # strided: made contiguous on the source first
    fake_cupy.log.clear()
    b = d1.asarray(a)
    order = [e for e in fake_cupy.log if e[0] in ("copy", "record", "wait", "peer_copy")]
    ready, done = order[1][2], order[4][2]
    assert order == [("copy", 0, 0),         # strided: made contiguous on the source's stream
                     ("record", 0, ready),   # on the source's stream, after its pending work
                     ("wait", 1, ready),     # the destination's stream waits for it
                     ("peer_copy", 1, 0),    # the copy, queued on the destination's stream
                     ("record", 1, done),
                     ("wait", 0, done)]      # the source's later work waits for the copy
    assert b.device.id == 1 and fake_cupy.current() == 0
    np.testing.assert_array_equal(backend.to_numpy(b), np.arange(0.0, 8.0, 2.0))


def test_same_device_asarray_adds_no_events(fake_gpu):
    probe()
    d1 = gn.device("cuda:1")
    a = d1.asarray(np.ones(3))
    fake_cupy.log.clear()
    assert d1.asarray(a) is a
    assert [e for e in fake_cupy.log if e[0] in ("record", "wait")] == []


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_reduce_scales_each_replica_on_its_own_device(fake_gpu, reduce):
    """Unequal shards (2 + 1) take both scaling passes; each must run with its GPU current."""
    probe()
    fake_cupy.log.clear()
    model = nn.Sequential(nn.Linear(3, 2))
    dp = DataParallel(model, losses.MSE(), optim.SGD(model.parameters(), lr=0.1), ["cuda:0", "cuda:1"],
                      reduce=reduce, comm=OrderedComm())
    g = [np.arange(8.0, dtype=np.float32) + 1, np.full(8, 10.0, dtype=np.float32)]
    for r, v in zip(dp.replicas, g):
        with r.device:
            r.flat_grad[...] = r.device.asarray(v)
    dp._reduce([2, 1])
    want = (g[0] * (2 * 2 / 3) + g[1] * (1 * 2 / 3)) / (2 if reduce == "mean" else 1)
    for r in dp.replicas:
        np.testing.assert_allclose(backend.to_numpy(r.flat_grad), want, rtol=1e-6)
    scalings = [e for e in fake_cupy.log if e[:2] == ("kernel", "multiply")]
    assert len(scalings) == (4 if reduce == "mean" else 2)
    assert all(e[2] == e[3][0] for e in scalings)  # the current device is the array's


def test_train_step_keeps_replica_zeros_sums_on_its_device(fake_gpu):
    """Replica 0 on cuda:1 while cuda:0 is the process's current device."""
    probe()
    model = dropout_mlp()
    dp = DataParallel(model, losses.MSE(), optim.SGD(model.parameters(), lr=0.1), ["cuda:1", "cuda:0"],
                      comm=OrderedComm())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
    loss, correct = dp.train_step(x, y)
    assert loss.device.id == 1 and correct.device.id == 1 and fake_cupy.current() == 0
    assert dp.comm.called_on == 1  # the communicator runs with replica 0's device current
    assert np.isfinite(backend.to_numpy(loss))
    dp.check_replicas()


# ------------------------------------------------------------------ defect: the probe compiles

NVRTC_MISSING = "CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared object file: " \
                "No such file or directory"
HEADER_MISSING = ('/tmp/tmpab12/kern.cu(1): catastrophic error: cannot open source file "cuda_fp16.h"\n'
                  '1 catastrophic error detected in the compilation of "/tmp/tmpab12/kern.cu".')


@pytest.mark.parametrize("cuda_version,error,missing,needles", [
    (12090, RuntimeError(NVRTC_MISSING), "nvrtc", ["NVRTC", "pip install nvidia-cuda-nvrtc-cu12", "libnvrtc.so.12"]),
    (13000, ImportError("libnvrtc.so.13: cannot open shared object file"), "nvrtc",
     ["pip install nvidia-cuda-nvrtc`", "CUDA 13"]),
    (12090, fake_cupy.CompileException(HEADER_MISSING), "headers",
     ["'cuda_fp16.h'", "pip install nvidia-cuda-runtime-cu12", "CUDA_PATH"]),
    (12090, fake_cupy.CompileException('kern.cu(1): error: identifier "half" is undefined'), "kernel",
     ['identifier "half" is undefined', "compiling a test kernel"]),
])
def test_probe_names_what_does_not_compile(fake_gpu, cuda_version, error, missing, needles):
    fake_cupy.reset(devices=2, cuda_version=cuda_version)

    def compile_fails(code, name, options):
        raise error
    fake_cupy.hooks["compile"] = compile_fails
    status = probe()
    assert status.available is False and status.missing == missing
    assert "2 CUDA device(s) visible, but" in status.reason
    for needle in needles:
        assert needle in status.reason
    assert gn.is_gpu_available() is False
    assert gn.device("auto").name == "cpu"
    with pytest.raises(gn.DeviceError) as e:
        gn.device("cuda")
    assert needles[0] in str(e.value)


@pytest.mark.parametrize("cuda_version,package", [(12090, "nvidia-curand-cu12"), (13000, "nvidia-curand`")])
def test_probe_names_missing_curand(fake_gpu, cuda_version, package):
    fake_cupy.reset(devices=1, cuda_version=cuda_version)
    fake_cupy.hooks["curand"] = RuntimeError("CuPy failed to load libcurand.so.10: OSError: libcurand.so.10: "
                                             "cannot open shared object file: No such file or directory")
    status = probe()
    assert status.available is False and status.missing == "curand"
    assert "cuRAND is missing" in status.reason and f"pip install {package}" in status.reason


def test_probe_refuses_a_kernel_that_computes_wrong_values(fake_gpu):
    fake_cupy.hooks["launch"] = lambda n: np.zeros(n)
    status = probe()
    assert status.available is False and status.missing == "kernel"
    assert "wrote wrong values" in status.reason


# ------------------------------------------------------------------ on a real GPU

@pytest.mark.gpu
def test_gpu_probe_compiles_and_launches_a_kernel():
    status = backend.gpu_status(refresh=True)
    assert status.available and "compiled with NVRTC" in status.reason
    import cupy
    assert backend._toolchain_problem(cupy) is None


@pytest.mark.gpu
def test_gpu_device_context_nests():
    import cupy
    dev = gn.device("cuda:0")
    before = cupy.cuda.runtime.getDevice()
    with dev:
        with dev:
            x = dev.asarray(np.ones(3, np.float32))
        x *= 2
    assert cupy.cuda.runtime.getDevice() == before
    np.testing.assert_array_equal(dev.to_host(x), np.full(3, 2.0, np.float32))


def _dropout_run(devices, steps=4):
    gn.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 5))
    dp = DataParallel(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                      devices, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 20)).astype(np.float32)
    y = rng.integers(0, 5, 32)
    losses_ = [float(backend.to_numpy(dp.train_step(x, y)[0])) for _ in range(steps)]
    return dp, losses_


@pytest.mark.gpu
def test_gpu_data_parallel_dropout_two_replicas_on_one_gpu():
    dp, losses_ = _dropout_run(["cuda:0", "cuda:0"])
    assert np.all(np.isfinite(losses_))
    dp.check_replicas()
    gens = [r.model[2].generator for r in dp.replicas]
    assert gens[0] is not gens[1]
    masks = [backend.to_numpy(g.uniform((1000,))) for g in gens]
    assert not np.array_equal(masks[0], masks[1])  # independent streams per replica


@pytest.mark.gpu
def test_gpu_data_parallel_dropout_on_distinct_gpus():
    if len(backend.gpu_status().devices) < 2:
        pytest.skip("needs 2 GPUs: replicas on distinct GPUs (peer copies, per-device streams)")
    dp, losses_ = _dropout_run(["cuda:0", "cuda:1"])
    assert np.all(np.isfinite(losses_))
    dp.check_replicas()


@pytest.mark.gpu
def test_gpu_peer_copy_sees_pending_work():
    """A long kernel queue on the source, then at once a copy to another GPU: the copy must
    wait for it (without the event, the copy may read the buffer half-written)."""
    if len(backend.gpu_status().devices) < 2:
        pytest.skip("needs 2 GPUs: a peer copy between distinct GPUs")
    d0, d1 = gn.device("cuda:0"), gn.device("cuda:1")
    with d0:
        a = d0.xp.zeros(1 << 24, dtype=np.float32)
        for _ in range(64):
            a += 1
    b = d1.asarray(a)
    with d0:
        a[...] = -1  # queued after the copy on the source: must not reach b
    np.testing.assert_array_equal(d1.to_host(b), np.full(1 << 24, 64, np.float32))
