"""Hostile input to the Python API: checkpoints (validated in full before anything is
assigned; bounded before anything is decompressed), dataset archives (CRC and header
bounds), weight sharing in a Sequential, degenerate calls, and messages that must say
what was expected and what was received.
"""
import gzip
import io
import struct
import tarfile
import zipfile

import numpy as np
import pytest

import gpunet as gn
from gpunet import checkpoint, losses, nn, optim
from gpunet.testing import numeric_grad
from gpunet.data import cifar, idx


def small(dtype="float32"):
    gn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to("cpu", dtype=dtype)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(dtype)
    y = np.arange(8) % 3
    loss = losses.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    opt.step()
    return model, opt


def state(model, opt):
    """Bytes of the weights, grads and the optimizer's step, lr and buffers."""
    sd = opt.state_dict()
    return ({k: np.asarray(v).tobytes() for k, v in model.state_dict().items()},
            {k: p.grad.tobytes() for k, p in model.named_parameters()},
            (sd["step"], float(opt.lr), {k: np.asarray(v).tobytes() for k, v in sd["buffers"].items()}))


def saved(tmp_path, edit=None, meta_edit=None, **meta):
    """A checkpoint of small(), its arrays changed by edit(arrays) (or its JSON by meta_edit)."""
    model, opt = small()
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1, global_step=3, **meta)
    if edit or meta_edit:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if edit:
            edit(arrays)
        if meta_edit:
            import json
            header = json.loads(arrays["__meta__"].tobytes())
            meta_edit(header)
            arrays["__meta__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        np.savez(path, **arrays)
    return path


def refused_load(path, match, trainer=False):
    model, opt = small()
    model2, opt2 = small()
    opt2.step()  # a different state, so a partial load would show
    before = state(model2, opt2)
    with pytest.raises(gn.CheckpointError, match=match):
        if trainer:
            t = gn.Trainer(model2, losses.SoftmaxCrossEntropy(), opt2, device="cpu", doctor=False)
            t.resume(path)
            assert (t.epoch, t.global_step) == (0, 0)
        else:
            gn.load_checkpoint(path, model2, opt2)
    after = state(model2, opt2)
    assert after == before  # nothing was assigned


# ---------------------------------------------------------------- checkpoints

def _set(key, fn):
    def edit(arrays):
        arrays[key] = fn(arrays[key])
    return edit


@pytest.mark.parametrize("edit,match", [
    (_set("model/0.weight", lambda a: a.astype(np.int64)), r"0\.weight: expected a float32 array, got dtype int64"),
    (_set("model/0.weight", lambda a: a.astype(np.complex64)), r"0\.weight: expected a float32 .*complex64"),
    (_set("model/0.weight", lambda a: a.astype(bool)), r"0\.weight: .*got dtype bool"),
    (_set("model/0.bias", lambda a: np.array(["ab"] * a.size)), r"0\.bias.*expected a numeric array, got dtype <U2"),
    (_set("model/2.bias", lambda a: np.where(np.arange(a.size) == 1, np.nan, a)), r"2\.bias: expected finite"),
    (_set("model/2.weight", lambda a: np.full(a.shape, np.inf, a.dtype)), r"2\.weight: expected finite"),
    (_set("model/0.weight", lambda a: a.astype(np.float64) * 1e300), r"0\.weight: values up to .* overflow float32"),
    (_set("optim/1.momentum_buffer", lambda a: np.full(a.shape, np.nan, a.dtype)), r"buffer 1\.momentum_buffer: expected finite"),
    (_set("optim/0.momentum_buffer", lambda a: a.astype(np.float64) * 1e300), r"buffer 0\.momentum_buffer: values overflow"),
    (_set("optim/0.momentum_buffer", lambda a: a.astype(np.int32)), r"buffer 0\.momentum_buffer: expected a floating array"),
    (_set("model/2.weight", lambda a: a[:2]), r"2\.weight: expected shape \(3, 5\), got \(2, 5\)"),
])
def test_checkpoint_is_validated_in_full_before_anything_is_assigned(tmp_path, edit, match):
    refused_load(saved(tmp_path, edit), match)


@pytest.mark.parametrize("meta,match", [
    ({"epoch": "1"}, r"epoch: expected a non-negative int"),
    ({"epoch": -1}, r"epoch: expected a non-negative int"),
    ({"global_step": 2.5}, r"global_step"),
    ({"history": {"loss": 1}}, r"history: expected a list"),
    ({"history": [1, 2]}, r"history: expected a list of epoch records"),
    ({"rng": "seed"}, r"rng: expected a JSON object"),
    ({"rng": {"state": {"bit_generator": "MT19937", "state": 3}}}, r"rng: expected a PCG64 state"),
    ({"batch_in_epoch": 2, "accumulators": None}, r"accumulators"),
    ({"config": [1]}, r"config: expected a JSON object"),
])
def test_trainer_resume_checks_the_meta_schema_before_assigning(tmp_path, meta, match):
    path = saved(tmp_path, meta_edit=lambda h: h["meta"].update(meta))
    refused_load(path, match, trainer=True)


def test_trainer_resume_with_another_schedule_changes_nothing(tmp_path):
    from gpunet.optim.schedules import StepLR
    model, opt = small()
    t = gn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, device="cpu", doctor=False, schedule=StepLR(2))
    path = t.save(tmp_path / "c.npz")
    model2, opt2 = small()
    opt2.step()
    before = state(model2, opt2)
    t2 = gn.Trainer(model2, losses.SoftmaxCrossEntropy(), opt2, device="cpu", doctor=False, schedule=StepLR(5))
    with pytest.raises(gn.CheckpointError, match=r"scheduler: .*schedule: expected .*'step_size': 5"):
        t2.resume(path)
    assert state(model2, opt2) == before and t2.scheduler.t == 0


def test_optimizer_step_count_out_of_range_is_refused(tmp_path):
    path = saved(tmp_path, meta_edit=lambda h: h["optimizer"].update(step=10**30))
    refused_load(path, r"step: expected an int in \[0, 2\^63\)")


@pytest.mark.parametrize("header,match", [
    ([1, 2], r"metadata to be a JSON object, got list"),
    ({"format": "gpunet-checkpoint", "version": 1, "meta": [1]}, r"'meta' to be a JSON object"),
    ({"format": "gpunet-checkpoint", "version": 1, "optimizer": 3}, r"'optimizer' to be a JSON object"),
])
def test_checkpoint_metadata_of_the_wrong_shape(tmp_path, header, match):
    path = saved(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    import json
    arrays["__meta__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)
    refused_load(path, match)


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_decompression_bomb_is_refused_from_the_declared_size(tmp_path):
    """64 MiB of zeros deflate to ~64 KiB; the model needs 15 floats there: refused unread."""
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["model/0.bias.npy"] = _npy(np.zeros(16 << 20, np.float32))
    _zip(path, members)
    assert path.stat().st_size < 1 << 20
    refused_load(path, r"model/0\.bias\.npy' declares \d+ bytes uncompressed, expected at most \d+ .*bomb")


def test_npy_header_that_lies_about_its_shape_is_refused_before_allocating(tmp_path):
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = members["model/0.bias.npy"]
    header = data[:data.index(b"\n") + 1].replace(b"(5,)", b"(10000000000000,)").ljust(len(data) - 20)
    members["model/0.bias.npy"] = header[:-1] + b"\n" + data[len(header):]
    _zip(path, members)
    refused_load(path, r"0\.bias'.*declares shape \(10000000000000,\)")


@pytest.mark.parametrize("content,match", [
    (b"hello, I am a text file\n", r"expected a \.npz \(zip\) archive, got a file that is not one \(it starts with b'hello, I"),
    (b"", r"not one \(it starts with b''\)"),
])
def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path, content, match):
    path = tmp_path / "c.npz"
    path.write_bytes(content)
    refused_load(path, match)
    with pytest.raises(gn.CheckpointError) as e:
        gn.load_checkpoint(path, small()[0])
    assert "pickle" not in str(e.value) and "None" not in str(e.value)


def test_a_pickle_inside_the_archive_names_its_member(tmp_path):
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["model/0.bias.npy"] = _npy(np.array([{"a": 1}] * 5, dtype=object))
    _zip(path, members)
    refused_load(path, r"member 'model/0\.bias': expected plain arrays only, got a pickled object")


def test_a_folder_or_fifo_as_checkpoint(tmp_path):
    import os
    os.mkfifo(tmp_path / "fifo.npz")
    (tmp_path / "dir.npz").mkdir()
    refused_load(tmp_path / "fifo.npz", "expected a regular file")
    refused_load(tmp_path / "dir.npz", "expected a regular file, got a folder")


def test_load_state_dict_is_atomic_and_takes_lists(tmp_path):
    model, opt = small()
    before = state(model, opt)
    bad = {k: np.asarray(v).tolist() for k, v in model.state_dict().items()}
    bad["2.bias"] = [[1, 2], [3]]  # ragged: not an array
    with pytest.raises(gn.CheckpointError, match=r"2\.bias: expected an array"):
        model.load_state_dict(bad)
    with pytest.raises(gn.CheckpointError, match=r"expected a dict of arrays, got list"):
        model.load_state_dict([1, 2])
    assert state(model, opt) == before
    good = {k: np.asarray(v).tolist() for k, v in model.state_dict().items()}
    model.load_state_dict(good)
    assert state(model, opt) == before


def test_a_float64_checkpoint_that_fits_loads_exactly_into_float32(tmp_path):
    model, opt = small("float64")
    path = gn.save_checkpoint(tmp_path / "c.npz", model, opt)
    model32, opt32 = small("float32")
    gn.load_checkpoint(path, model32, opt32)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(model32.state_dict()[k], v.astype(np.float32))


# ---------------------------------------------------------------- datasets

def _labels_idx(n=10):
    return struct.pack(">IIxxxx", idx.LABELS_MAGIC, n)[:8] + bytes(i % 10 for i in range(n))


def test_idx_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(struct.pack(">I3I", idx.IMAGES_MAGIC, 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(gn.DataError, match=r"x\.gz: header declares 4294967295x4294967295x4294967295 elements"
                                           r".*refused before allocating"):
        idx.read_idx(path, idx.IMAGES_MAGIC)


def test_idx_decompression_stops_at_the_size_the_header_declares(tmp_path, monkeypatch):
    """10 labels declared, 64 MiB of zeros after them: refused after reading 11 bytes of the body."""
    path = tmp_path / "y.gz"
    path.write_bytes(gzip.compress(_labels_idx(10) + bytes(64 << 20), compresslevel=1))
    produced = []
    real = idx.gz.Gunzip._step

    def step(self, room):
        out = real(self, room)
        produced.append(len(out))
        return out
    monkeypatch.setattr(idx.gz.Gunzip, "_step", step)
    with pytest.raises(gn.DataError, match=r"y\.gz: has trailing bytes: its header declares 18 bytes"):
        idx.read_idx(path, idx.LABELS_MAGIC)
    assert sum(produced) <= 19


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:-8] + bytes([b[-8] ^ 1]) + b[-7:], "CRC-32 or length mismatch"),
    (lambda b: b[:-4] + struct.pack("<I", 999), "CRC-32 or length mismatch"),
    (lambda b: b[:-3], "truncated gzip file"),
    (lambda b: b[:10] + bytes([b[10] ^ 0xFF]) + b[11:], "corrupted|CRC"),
])
def test_idx_gzip_damage_names_the_file(tmp_path, damage, match):
    path = tmp_path / "labels.gz"
    path.write_bytes(damage(gzip.compress(_labels_idx(10))))
    with pytest.raises(gn.DataError, match=match) as e:
        idx.read_idx(path, idx.LABELS_MAGIC)
    assert str(path) in str(e.value)


def _cifar_archive(path, records=2, corrupt=None):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in (*cifar.FILES["train"], *cifar.FILES["test"]):
            rec = rng.integers(0, 256, (records, cifar.RECORD), dtype=np.uint8)
            rec[:, 0] %= 10
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = rec.nbytes
            tar.addfile(info, io.BytesIO(rec.tobytes()))
    data = gzip.compress(buf.getvalue())
    path.write_bytes(corrupt(data) if corrupt else data)
    return path


def test_cifar_archive_loads(tmp_path):
    _cifar_archive(tmp_path / cifar.ARCHIVE)
    x, y, _ = cifar.load_cifar10("test", root=tmp_path, download=False)
    assert x.shape == (2, 3, 32, 32) and y.shape == (2,)


@pytest.mark.parametrize("corrupt,match", [
    (lambda b: b[:-8] + struct.pack("<I", struct.unpack("<I", b[-8:-4])[0] ^ 1) + b[-4:], "CRC-32"),
    (lambda b: b[:-6], "truncated gzip file"),
    (lambda b: b[:len(b) // 2], "truncated gzip file"),
])
def test_cifar_archive_damage_is_a_crc_or_truncation_error_not_a_missing_member(tmp_path, corrupt, match):
    path = _cifar_archive(tmp_path / cifar.ARCHIVE, corrupt=corrupt)
    with pytest.raises(gn.DataError, match=match) as e:
        cifar.load_cifar10("test", root=tmp_path, download=False)
    assert str(path) in str(e.value) and "missing" not in str(e.value)


def test_dataset_labels_of_uint64_are_shown_as_they_are(tmp_path):
    y = np.array([1, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(gn.DataError, match=r"got 18446744073709551615 at index 1 \(1 bad; dtype uint64\)"):
        gn.data.Dataset(np.zeros((2, 2, 2), np.uint8), y)
    with pytest.raises(gn.DataError, match=r"got 18446744073709551615 at index 1 \(1 bad; dtype uint64\)"):
        gn.data.Dataset(np.zeros((2, 2, 2), np.uint8), y, classes=["a", "b", "c"])


# ---------------------------------------------------------------- weight sharing

def _shared_models():
    gn.manual_seed(1)
    lin = nn.Linear(4, 4)
    yield "linear x3", nn.Sequential(lin, nn.Tanh(), lin, nn.ReLU(), lin), (5, 4)
    gn.manual_seed(2)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    yield "conv x2 + pool", nn.Sequential(conv, nn.ReLU(), conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()), (2, 2, 4, 4)
    gn.manual_seed(3)
    block = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid())
    yield "nested block x2", nn.Sequential(block, nn.Linear(3, 3), block), (4, 3)
    gn.manual_seed(4)
    bn = nn.BatchNorm1d(3)
    yield "batchnorm x2", nn.Sequential(nn.Linear(3, 3), bn, nn.Tanh(), bn), (6, 3)


@pytest.mark.parametrize("name,model,shape", list(_shared_models()), ids=[m[0] for m in _shared_models()])
@pytest.mark.parametrize("params_only", [False, True])
def test_a_module_used_twice_gets_the_gradient_of_every_use(name, model, shape, params_only):
    model.to("cpu", dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    out_shape = model.forward(x).shape
    w = rng.standard_normal(out_shape)

    def f():
        return float((model.forward(x) * w).sum())
    model.zero_grad()
    model.forward(x)
    if params_only:  # the Trainer's path: no dx for the batch
        model.backward(w, need_input_grad=False)
    else:
        dx = model.backward(w)
        np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-7)
    assert len(model.parameters()) < sum(len(m._params) for m in model.modules())  # really shared
    for pname, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(f, p.data), rtol=1e-6, atol=1e-7, err_msg=pname)


def test_weight_sharing_matches_pytorch():
    torch = pytest.importorskip("torch")
    gn.manual_seed(5)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin).to("cpu", dtype="float64")
    t = torch.nn.Linear(4, 4).double()
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(lin.weight.data))
        t.bias.copy_(torch.from_numpy(lin.bias.data))
    x = np.random.default_rng(0).standard_normal((3, 4))
    tx = torch.from_numpy(x)
    t(torch.relu(t(tx))).sum().backward()
    model.zero_grad()
    model.forward(x)
    model.backward(np.ones((3, 4)))
    np.testing.assert_allclose(lin.weight.grad, t.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.bias.grad, t.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- degenerate calls and messages

def test_zero_row_batch_with_a_mean_loss_is_refused():
    loss = losses.SoftmaxCrossEntropy()
    with pytest.raises(gn.ShapeError, match=r"at least one row.*got logits \(0, 3\)"):
        loss.forward(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    with pytest.raises(gn.ShapeError, match=r"at least one row for reduction='mean'"):
        gn.ops.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64))


@pytest.mark.parametrize("kw,match", [
    ({"epochs": True}, r"Trainer.fit: epochs expected a positive int, got True \(bool\)"),
    ({"epochs": 2.0}, r"Trainer.fit: epochs expected a positive int, got 2\.0"),
    ({"epochs": 1, "batch_size": True}, r"Trainer.fit: batch_size expected an int >= 1, got True"),
])
def test_fit_refuses_bools_and_floats_as_counts(kw, match):
    model, opt = small()
    before = state(model, opt)
    data = gn.data.Dataset(np.zeros((8, 2, 3), np.uint8), np.arange(8) % 3)
    t = gn.Trainer(nn.Sequential(nn.Flatten(), model), losses.SoftmaxCrossEntropy(), opt, device="cpu",
                   doctor=False)
    with pytest.raises(gn.GpunetValueError, match=match):
        t.fit(data, **kw)
    assert state(model, opt) == before and t.epoch == 0


def test_labels_as_a_python_list_are_named_as_such():
    with pytest.raises(gn.GpunetTypeError, match=r"expected target to be a NumPy/CuPy array, got a Python list "
                                                 r"of 4 items"):
        losses.SoftmaxCrossEntropy().forward(np.zeros((4, 3), np.float32), [0, 1, 2, 0])


def test_uint64_labels_out_of_range_are_shown_unwrapped():
    y = np.array([0, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(gn.GpunetValueError, match=r"got 18446744073709551615 \(dtype uint64\) at row 1"):
        losses.SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), y)


@pytest.mark.parametrize("dtype", ["float16", "complex64"])
def test_an_unsupported_input_dtype_hint_names_a_call_that_works(dtype):
    model, _ = small()
    with pytest.raises(gn.GpunetTypeError) as e:
        model.forward(np.zeros((2, 6), dtype))
    msg = str(e.value)
    assert f"got {dtype}" in msg and "x.astype('float32')" in msg and "model.to" not in msg


@pytest.mark.parametrize("which,bad,match", [
    ("val", lambda: gn.data.Dataset(np.zeros((4, 3, 3), np.uint8), np.arange(4) % 3), r"val: .*does not fit the model"),
    ("val", lambda: gn.data.Dataset(np.zeros((4, 2, 3), np.uint8), np.array([0, 1, 2, 7])),
     r"val: expected class labels in \[0, 3\) \(the model's outputs\), got 7 at index 3"),
    ("train", lambda: gn.data.Dataset(np.zeros((8, 2, 3), np.uint8), np.array([0, 1, 2, 0, 1, 2, 0, 5])),
     r"train: expected class labels in \[0, 3\) \(the model's outputs\), got 5 at index 7"),
])
def test_a_dataset_that_does_not_fit_is_refused_before_the_first_update(which, bad, match):
    """The bad label sits in the last batch: found mid-run it would come after 3 updates."""
    model, opt = small()
    net = nn.Sequential(nn.Flatten(), model)
    before = state(model, opt)
    good = gn.data.Dataset(np.zeros((8, 2, 3), np.uint8), np.arange(8) % 3)
    data = {"train": good, "val": good}
    data[which] = bad()
    t = gn.Trainer(net, losses.SoftmaxCrossEntropy(), opt, device="cpu", doctor=False)
    with pytest.raises(gn.GpunetError, match=match):
        t.fit(data["train"], epochs=1, batch_size=2, val=data["val"])
    assert state(model, opt) == before and t.epoch == 0 and t.global_step == 0
