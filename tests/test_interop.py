"""safetensors and ONNX in PyTorch's names and layouts; DLPack without a copy."""
from __future__ import annotations

import os

import numpy as np
import pytest

import gpunet as gn
from gpunet import interop, models

torch = pytest.importorskip("torch", reason="the PyTorch checks need torch: pip install torch")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra: pip install '.[test]'")

ZOO = {  # gpunet model, the torch.nn equivalent (same indices), one sample's shape
    "mlp": (lambda: models.mlp([64, 32, 16, 10], dropout=0.25),
            lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.25), torch.nn.Linear(32, 16), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.25), torch.nn.Linear(16, 10)), (1, 8, 8)),
    "small_cnn": (lambda: models.small_cnn(1, 10, 8, width=4, hidden=16),
                  lambda: torch.nn.Sequential(
                      torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                      torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                      torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 16),
                      torch.nn.ReLU(), torch.nn.Linear(16, 10)), (1, 8, 8)),
    "tf_cifar10_cnn": (lambda: models.tf_cifar10_cnn(10),
                       lambda: torch.nn.Sequential(
                           torch.nn.Conv2d(3, 64, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1),
                           torch.nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0),
                           torch.nn.Conv2d(64, 64, 5, padding=2), torch.nn.ReLU(),
                           torch.nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0), torch.nn.MaxPool2d(3, 2, 1),
                           torch.nn.Flatten(), torch.nn.Linear(2304, 384), torch.nn.ReLU(),
                           torch.nn.Linear(384, 192), torch.nn.ReLU(), torch.nn.Linear(192, 10)), (3, 24, 24)),
}


def _trained_state(model, shape):
    """A few BatchNorm statistics updates so running_mean/var are not their defaults."""
    x = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
    model.train()
    model.forward(x)
    model.eval()
    return x


@pytest.mark.parametrize("name", sorted(ZOO))
def test_safetensors_loads_into_torch_and_back(name, tmp_path):
    gn.manual_seed(0)
    ours, theirs, shape = ZOO[name][0](), ZOO[name][1](), ZOO[name][2]
    x = _trained_state(ours, shape)
    path = interop.save_safetensors(ours, tmp_path / "m.safetensors")
    from safetensors.torch import load_file
    theirs.load_state_dict(load_file(str(path)), strict=True)  # every name and shape matches
    theirs.eval()
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), ref, rtol=1e-4, atol=1e-5)
    # back: torch's own weights, perturbed, into a fresh gpunet model
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.01)
        ref = theirs(torch.from_numpy(x)).numpy()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "t.safetensors"))
    gn.manual_seed(1)
    back = ZOO[name][0]()
    interop.load_safetensors(back, tmp_path / "t.safetensors")
    back.eval()
    np.testing.assert_allclose(back.forward(x), ref, rtol=1e-4, atol=1e-5)


def test_safetensors_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = interop.save_safetensors(models.mlp([4, 2]), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_safetensors_bad_file_changes_nothing(tmp_path):
    model = models.mlp([4, 3, 2])
    before = [p.data.copy() for p in model.parameters()]
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(gn.CheckpointError, match="not a readable safetensors file"):
        interop.load_safetensors(model, tmp_path / "bad.safetensors")
    interop.save_safetensors(models.mlp([4, 5, 2]), tmp_path / "other.safetensors")
    with pytest.raises(gn.CheckpointError):
        interop.load_safetensors(model, tmp_path / "other.safetensors")
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_onnx_export_matches_forward_in_onnxruntime(name, tmp_path):
    gn.manual_seed(0)
    model, shape = ZOO[name][0](), ZOO[name][2]
    x = _trained_state(model, shape)
    path = interop.export_onnx(model, tmp_path / "m.onnx", shape)
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-4, atol=1e-5)
    got3 = sess.run(["logits"], {"input": x[:3]})[0]  # the batch axis is dynamic
    np.testing.assert_allclose(got3, model.forward(x[:3]), rtol=1e-4, atol=1e-5)


def test_onnx_export_refuses_an_unknown_layer(tmp_path):
    model = gn.nn.Sequential(gn.nn.Flatten(), gn.nn.Embedding(4, 2))
    with pytest.raises(gn.GpunetValueError, match="layer 1 expected one of .* got Embedding"):
        interop.export_onnx(model, tmp_path / "m.onnx", (4,))
    assert not (tmp_path / "m.onnx").exists()


def test_dlpack_shares_parameters_and_outputs_without_copy():
    model = models.mlp([4, 3, 2])
    p = model.parameters()[0]
    t = torch.from_dlpack(p)
    p.data[0, 0] = 42.0  # in place on gpunet's side: torch sees it (same memory)
    assert t[0, 0].item() == 42.0 and tuple(t.shape) == p.shape
    out = model.forward(np.ones((2, 4), np.float32))
    t_out = torch.from_dlpack(out)
    assert t_out.data_ptr() == out.ctypes.data


def test_torch_device_objects_are_understood():
    assert gn.device(torch.device("cpu")).name == "cpu"
    model = models.mlp([4, 2]).to(torch.device("cpu"))
    assert model.device.name == "cpu"
    if not gn.is_gpu_available():
        with pytest.raises(gn.DeviceError, match="device 'cuda:0': no usable GPU"):
            models.mlp([4, 2]).to(torch.device("cuda:0"))


ONNX_ONLY = {  # models without a hand-built torch twin: checked against onnxruntime only
    "resnet8 (Residual, ZeroPad2d, global pooling)": (lambda: models.resnet8(1, 10, 28), (1, 28, 28)),
    "grouped, dilated, asymmetric 'same' conv; ceil_mode pools": (
        lambda: gn.nn.Sequential(gn.nn.Conv2d(2, 4, 3, padding="same", dilation=2, groups=2),
                                 gn.nn.ReLU(), gn.nn.MaxPool2d(3, stride=2, ceil_mode=True),
                                 gn.nn.Conv2d(4, 4, 2, padding="same"),
                                 gn.nn.AvgPool2d(2, padding=1, count_include_pad=False, ceil_mode=True),
                                 gn.nn.Flatten(), gn.nn.Linear(36, 5)), (2, 9, 9)),
}


@pytest.mark.parametrize("name", sorted(ONNX_ONLY))
def test_onnx_export_of_the_newer_layers_matches_forward(name, tmp_path):
    gn.manual_seed(0)
    build, shape = ONNX_ONLY[name]
    model = build()
    x = _trained_state(model, shape)
    path = interop.export_onnx(model, tmp_path / "m.onnx", shape)
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["logits"], {"input": x})[0], model.forward(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer,match", [
    (lambda: gn.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='zeros'"),
    (lambda: gn.nn.LocalResponseNorm(4), "odd size"),
])
def test_onnx_export_refuses_what_onnx_would_compute_differently(layer, match, tmp_path):
    model = gn.nn.Sequential(layer(), gn.nn.Flatten())
    with pytest.raises(gn.GpunetValueError, match=match):
        interop.export_onnx(model, tmp_path / "m.onnx", (1, 6, 6))
    assert not (tmp_path / "m.onnx").exists()
