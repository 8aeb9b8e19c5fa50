"""Device selection, the GPU probe, transfers, dtypes and seeding."""
import numpy as np
import pytest

import gpunet as gn
from gpunet import backend


def test_cpu_device():
    dev = gn.device("cpu")
    assert dev.xp is np and dev.name == "cpu" and dev.is_gpu is False
    assert gn.device("cpu") is dev  # cached: one generator per device
    dev.synchronize()  # a no-op on the CPU, must not raise


def test_auto_without_gpu_is_cpu(monkeypatch):
    monkeypatch.setenv("GPUNET_FORCE_CPU", "1")
    backend.gpu_status(refresh=True)
    try:
        assert gn.is_gpu_available() is False
        assert gn.device("auto").name == "cpu"
    finally:
        monkeypatch.delenv("GPUNET_FORCE_CPU")
        backend.gpu_status(refresh=True)


@pytest.mark.parametrize("missing,needle", [
    ("cupy", "CuPy is not importable"),
    ("driver", "no NVIDIA driver"),
    ("device", "no CUDA device"),
])
def test_cuda_without_gpu_names_what_is_missing(monkeypatch, missing, needle):
    """Each of the three missing pieces gives one clear DeviceError with the install hint."""
    class FakeRuntime:
        def driverGetVersion(self):
            if missing == "driver":
                raise RuntimeError("cudaErrorInsufficientDriver")
            return 13000

        def getDeviceCount(self):
            return 0

    class FakeCupy:
        __version__ = "14.0.0"
        cuda = type("cuda", (), {"runtime": FakeRuntime()})()

    def fake_import():
        if missing == "cupy":
            raise ImportError("No module named 'cupy'")
        return FakeCupy

    monkeypatch.setattr(backend, "_import_cupy", fake_import)
    status = backend.gpu_status(refresh=True)
    try:
        assert status.available is False and status.missing == missing
        assert gn.is_gpu_available() is False
        with pytest.raises(gn.DeviceError) as e:
            gn.device("cuda")
        msg = str(e.value)
        assert needle in msg and "'cuda'" in msg
        if missing != "device":
            assert "pip install cupy-cuda12x" in msg and 'pip install ".[cuda12]"' in msg
        assert isinstance(e.value, ValueError)
    finally:
        monkeypatch.undo()
        backend.gpu_status(refresh=True)


def test_is_gpu_available_never_raises(monkeypatch):
    def explode():
        raise OSError("libcuda.so: cannot open shared object file")
    monkeypatch.setattr(backend, "_import_cupy", explode)
    backend.gpu_status(refresh=True)
    try:
        assert gn.is_gpu_available() is False
    finally:
        monkeypatch.undo()
        backend.gpu_status(refresh=True)


@pytest.mark.parametrize("bad", ["gpu:x", "gpu", "cuda:", "cuda:-1", "cpu:0", "tpu", ""])
def test_invalid_device_name_lists_valid_forms(bad):
    with pytest.raises(ValueError) as e:
        gn.device(bad)
    msg = str(e.value)
    assert repr(bad) in msg and '"cpu"' in msg and '"cuda:N"' in msg and '"auto"' in msg


def test_device_wrong_type():
    with pytest.raises(TypeError, match="got int 3"):
        gn.device(3)


@pytest.mark.gpu
def test_cuda_index_out_of_range():
    n = len(gn.gpu_status().devices)
    with pytest.raises(gn.DeviceError, match=f"got {n}"):
        gn.device(f"cuda:{n}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_transfer_round_trip_keeps_values_and_dtype(dev, dtype):
    host = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    on_dev = dev.asarray(host)
    assert backend.xp_of(on_dev) is dev.xp and on_dev.dtype == dtype
    back = dev.to_host(on_dev)
    assert isinstance(back, np.ndarray) and back.dtype == dtype
    np.testing.assert_array_equal(back, host)
    assert backend.device_of(on_dev) == dev


def test_transfer_casts_on_request(dev):
    x = dev.asarray(np.array([1.5, 2.25]), dtype=np.float32)
    assert x.dtype == np.float32


def test_resolve_dtype():
    assert backend.resolve_dtype(None) == np.float32
    assert backend.resolve_dtype("float64") == np.float64
    with pytest.raises(ValueError, match="expected float32 or float64, got 'float16'"):
        backend.resolve_dtype("float16")


def test_device_rng_is_seeded_and_reproducible(dev):
    dev.seed(123)
    a = dev.to_host(dev.uniform((1000,), np.float32))
    dev.seed(123)
    b = dev.to_host(dev.uniform((1000,), np.float32))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and 0.0 <= a.min() and a.max() < 1.0
    assert abs(a.mean() - 0.5) < 0.05  # 1000 U(0,1) draws: sd of the mean is 0.009
    c = dev.to_host(dev.uniform((1000,), np.float64))
    assert not np.array_equal(a, c.astype(np.float32))


def test_manual_seed_resets_host_and_devices():
    gn.manual_seed(7)
    a = backend.host_rng().standard_normal(5)
    d = gn.device("cpu").uniform((5,))
    gn.manual_seed(7)
    np.testing.assert_array_equal(a, backend.host_rng().standard_normal(5))
    np.testing.assert_array_equal(d, gn.device("cpu").uniform((5,)))
    with pytest.raises(ValueError, match="seed"):
        gn.manual_seed(-1)


def test_cpu_rng_state_round_trip():
    dev = gn.device("cpu")
    state = dev.rng_state()
    a = dev.uniform((4,))
    dev.set_rng_state(state)
    np.testing.assert_array_equal(a, dev.uniform((4,)))


def test_raw_module_needs_gpu():
    with pytest.raises(gn.DeviceError, match="need a GPU"):
        gn.device("cpu").raw_module("relu")


def test_checks_switch():
    assert gn.checks_enabled() is False
    with gn.checks():
        assert gn.checks_enabled() is True
    assert gn.checks_enabled() is False


@pytest.mark.gpu
def test_memory_info_counts_this_devices_pool():
    dev = gn.device("cuda")
    before = dev.memory_info()["used_bytes"]
    with dev:
        keep = dev.xp.zeros(1 << 20, dtype=dev.xp.float64)   # 8 MiB
    assert dev.memory_info()["used_bytes"] - before >= keep.nbytes
    assert gn.device("cpu").memory_info() == {}
