"""The bad-input catalogue, part 2: dataset files, archives, checkpoints, configs and the Trainer.

Same rules and helpers as part 1 (test_bad_input.py): a gpunet ValueError/TypeError
subclass, a message naming argument / expected / received, and no change to weights,
optimizer state, trainer counters or any file under the test's folder.
"""
import functools
import gzip
import io
import os
import struct
import tarfile
import zipfile

import numpy as np
import pytest

import gpunet as gn
from gpunet.cli import recipe
from gpunet.callbacks import ModelCheckpoint
from gpunet.data import fetch
from gpunet.errors import CheckpointError, DataError, DeviceError, GpunetTypeError, GpunetValueError
from test_bad_input import C, World, mlp_world, run_case

CE = gn.losses.SoftmaxCrossEntropy


# ---------------------------------------------------------------- worlds with files

def idx_bytes(arr, magic_type=0x08):
    return struct.pack(">HBB", 0, magic_type, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def idx_world(root, dev, damage):
    """root/mnist holds a (non-canonical) test split; `damage` spoils the images file."""
    folder = root / "mnist"
    folder.mkdir()
    images = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 3], np.uint8))))
    data = gzip.compress(images)
    name = "t10k-images-idx3-ubyte.gz"
    if damage == "gzip-cut":
        data = data[: len(data) // 2]
    elif damage == "magic":
        data = gzip.compress(b"\0\0\x08\x04" + images[4:])
    elif damage == "body-cut":
        data, name = images[:-100], "t10k-images-idx3-ubyte"
    (folder / name).write_bytes(data)  # damage == "none": valid structure, but not MNIST's checksum
    return World(root, dev)


def _tar(path, name, kind=tarfile.REGTYPE, link=""):
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("data/ok.bin")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        bad = tarfile.TarInfo(name)
        bad.type, bad.linkname = kind, link
        tar.addfile(bad, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return path


def tar_world(root, dev, name, kind=tarfile.REGTYPE, link=""):
    _tar(root / "a.tar.gz", name, kind, link)
    (root / "out").mkdir()
    return World(root, dev)


def ckpt_world(root, dev):
    """mlp_world plus checkpoints that do not fit it, a torn one and one with a pickle."""
    w = mlp_world(root, dev)
    gn.manual_seed(1)
    other = gn.models.mlp([16, 6, 10])
    gn.save_checkpoint(root / "other-arch.npz", other, gn.optim.SGD(other.parameters(), lr=0.1, momentum=0.9))
    gn.save_checkpoint(root / "adam.npz", w.m, gn.optim.Adam(w.m.parameters()))
    gn.save_checkpoint(root / "weights-only.npz", w.m)
    blob = (root / "good.npz").read_bytes()
    (root / "torn.npz").write_bytes(blob[: len(blob) * 2 // 3])
    (root / "pickle.npz").write_bytes(blob)
    with zipfile.ZipFile(root / "pickle.npz", "a") as z:
        buf = io.BytesIO()
        np.save(buf, np.array([{"payload": 1}], dtype=object), allow_pickle=True)
        z.writestr("model/evil.npy", buf.getvalue())
    np.savez(root / "plain.npz", weight=np.zeros(3))
    return w


def trainer_world(root, dev, devices=None):
    """ckpt_world with a Trainer that has finished one epoch (run/checkpoint-last.npz exists)."""
    w = ckpt_world(root, dev)
    rng = np.random.default_rng(0)
    w.extra["data"] = gn.data.Dataset(rng.integers(0, 256, (48, 4, 4), dtype=np.uint8), np.arange(48) % 10,
                                      classes=[str(i) for i in range(10)])
    kw = {"devices": devices} if devices else {"device": dev}
    w.trainer = gn.Trainer(w.m, CE(), w.opt, callbacks=[ModelCheckpoint(root / "run", monitor="loss")], **kw)
    w.trainer.fit(w.extra["data"], epochs=1, batch_size=15 if devices else 16)
    return w


def dataset(n=48, bad_label=None, classes=10):
    rng = np.random.default_rng(1)
    y = np.arange(n) % classes
    if bad_label is not None:
        y[5] = bad_label
    return gn.data.Dataset(rng.integers(0, 256, (n, 4, 4), dtype=np.uint8), y, classes=[str(i) for i in range(classes)])


def config_world(root, dev, text, suffix=".toml"):
    (root / f"c{suffix}").write_text(text)
    return World(root, dev)


def _load_mnist(w):
    return gn.data.load("mnist", "test", root=w.root, download=False)


def _resolve(w, suffix=".toml"):
    return recipe.resolve({}, w.root / f"c{suffix}")


P = functools.partial  # a world with arguments
EXPR = "__import__('os').system('touch pwned')"
TAR = "a.tar.gz"

CATALOGUE = [
    # dataset files: corrupted or truncated
    C("idx-truncated-gzip", P(idx_world, damage="gzip-cut"), _load_mnist, DataError, "t10k-images-idx3-ubyte.gz", "gzip", "truncated"),
    C("idx-wrong-magic", P(idx_world, damage="magic"), _load_mnist, DataError, "t10k-images-idx3-ubyte.gz", "expected 0x00000803", "got 0x00000804"),
    C("idx-truncated-body", P(idx_world, damage="body-cut"), _load_mnist, DataError, "t10k-images-idx3-ubyte", "expected 2368 bytes", "got 2268"),
    C("idx-checksum", P(idx_world, damage="none"), _load_mnist, DataError, "t10k-images-idx3-ubyte.gz", "expected SHA-256", "checksum mismatch"),
    C("dataset-empty", "none", lambda w: gn.data.DataLoader(gn.data.Dataset(np.zeros((0, 4, 4), np.uint8), np.zeros(0, int)), 4), DataError, "dataset", "at least one sample", "empty dataset"),
    C("dataset-lengths", "none", lambda w: gn.data.Dataset(np.zeros((4, 2, 2)), np.zeros(3, int)), DataError, "x and y", "same length N", "y (3,)"),
    C("dataset-float-labels", "none", lambda w: gn.data.Dataset(np.zeros((3, 2, 2)), np.zeros(3)), DataError, "y", "integer labels", "float64"),
    C("batch-size-zero", "none", lambda w: gn.data.DataLoader(dataset(), 0), GpunetValueError, "batch_size", "int >= 1", "got 0"),
    C("batch-size-over-drop-last", "none", lambda w: gn.data.DataLoader(dataset(), 49, drop_last=True), GpunetValueError, "batch_size", "<= 48", "got 49"),
    # archives: every member is checked before anything is written
    C("tar-dotdot", P(tar_world, name="data/../../evil"), lambda w: fetch.safe_extract(w.root / TAR, w.root / "out"), DataError, "data/../../evil", "'..'", "unsafe archive member"),
    C("tar-backslash-dotdot", P(tar_world, name="data\\..\\..\\evil"), lambda w: fetch.safe_extract(w.root / TAR, w.root / "out"), DataError, "evil", "'..'", "unsafe archive member"),
    C("tar-absolute", P(tar_world, name="/tmp/gpunet-evil"), lambda w: fetch.safe_extract(w.root / TAR, w.root / "out"), DataError, "/tmp/gpunet-evil", "absolute path", "unsafe archive member"),
    C("tar-symlink", P(tar_world, name="data/l", kind=tarfile.SYMTYPE, link="/etc/passwd"), lambda w: fetch.safe_extract(w.root / TAR, w.root / "out"), DataError, "data/l", "link", "/etc/passwd"),
    C("tar-fifo", P(tar_world, name="data/fifo", kind=tarfile.FIFOTYPE), lambda w: fetch.safe_extract(w.root / TAR, w.root / "out"), DataError, "data/fifo", "FIFO", "unsafe archive member"),
    C("tar-block-device", P(tar_world, name="data/sda", kind=tarfile.BLKTYPE), lambda w: fetch.safe_extract(w.root / TAR, w.root / "out"), DataError, "data/sda", "device", "unsafe archive member"),
    C("tar-not-an-archive", "none", lambda w: fetch.safe_extract(w.root / "keep.txt", w.root), DataError, "keep.txt", "tar archive", "not a readable"),
    # checkpoints
    C("ckpt-other-architecture", ckpt_world, lambda w: gn.load_checkpoint(w.root / "other-arch.npz", w.m, w.opt), CheckpointError, "1.weight", "expected shape (8, 16)", "got (6, 16)"),
    C("ckpt-other-optimizer", ckpt_world, lambda w: gn.load_checkpoint(w.root / "adam.npz", w.m, w.opt), CheckpointError, "optimizer state", "expected type 'SGD'", "got 'Adam'"),
    C("ckpt-no-optimizer-state", ckpt_world, lambda w: gn.load_checkpoint(w.root / "weights-only.npz", w.m, w.opt), CheckpointError, "optimizer", "no optimizer state", "an optimizer was given"),
    C("ckpt-truncated", ckpt_world, lambda w: gn.load_checkpoint(w.root / "torn.npz", w.m, w.opt), CheckpointError, "torn.npz", "complete", "truncated or corrupted"),
    C("ckpt-pickle", ckpt_world, lambda w: gn.load_checkpoint(w.root / "pickle.npz", w.m, w.opt), CheckpointError, "model/evil", "plain arrays", "pickle"),
    C("ckpt-not-gpunet", ckpt_world, lambda w: gn.load_checkpoint(w.root / "plain.npz", w.m, w.opt), CheckpointError, "plain.npz", "__meta__", "not a gpunet checkpoint"),
    C("ckpt-missing", ckpt_world, lambda w: gn.load_checkpoint(w.root / "nope.npz", w.m, w.opt), CheckpointError, "nope.npz", "file", "not found"),
    C("ckpt-load-state-dict-keys", ckpt_world, lambda w: w.m.load_state_dict({"1.weight": np.zeros((8, 16))}), CheckpointError, "missing keys", "'1.bias'", "load_state_dict"),
    # configs are data: a Python expression is a string and fails validation
    C("config-expression", P(config_world, text=f'lr = "{EXPR}"\n'), _resolve, GpunetValueError, "lr", "expected float", "str"),
    C("config-expression-json", P(config_world, text=f'{{"epochs": "{EXPR}"}}', suffix=".json"), lambda w: _resolve(w, ".json"), GpunetValueError, "epochs", "expected int", "str"),
    C("config-unknown-key", P(config_world, text='[train]\nlearning_rate = 0.1\n'), _resolve, GpunetValueError, "learning_rate", "'lr'", "unknown keys"),
    C("config-float-epochs", P(config_world, text='epochs = 2.5\n'), _resolve, GpunetValueError, "epochs", "expected int", "2.5"),
    C("config-bool-lr", P(config_world, text='lr = true\n'), _resolve, GpunetValueError, "lr", "expected float", "bool"),
    C("config-lr-range", P(config_world, text='lr = -0.5\n'), _resolve, GpunetValueError, "lr", "> 0", "-0.5"),
    C("config-momentum-range", P(config_world, text='momentum = 1.0\n'), _resolve, GpunetValueError, "momentum", "[0, 1)", "1.0"),
    C("config-dropout-range", P(config_world, text='dropout = 1.0\n'), _resolve, GpunetValueError, "dropout", "[0, 1)", "1.0"),
    C("config-bad-toml", P(config_world, text='lr = 0.1 +\n'), _resolve, GpunetValueError, "c.toml", "TOML", "not valid"),
    # the Trainer: a failed fit or resume leaves weights, optimizer, counters and the run folder alone
    C("dataset-label-beyond-classes", "none", lambda w: dataset(bad_label=10), DataError, "y", "[0, 10)", "got 10 at index 5"),
    C("dataset-label-negative", "none", lambda w: gn.data.Dataset(np.zeros((3, 2, 2)), np.array([0, -1, 1])), DataError, "y", ">= 0", "got -1 at index 1"),
    C("fit-more-classes-than-outputs", trainer_world, lambda w: w.trainer.fit(dataset(classes=12), epochs=2, batch_size=48), GpunetValueError, "class labels", "[0, 10)", "got 1"),
    C("fit-batch-size-zero", trainer_world, lambda w: w.trainer.fit(w.extra["data"], epochs=2, batch_size=0), GpunetValueError, "batch_size", "int >= 1", "got 0"),
    C("fit-epochs", trainer_world, lambda w: w.trainer.fit(w.extra["data"], epochs=0), GpunetValueError, "epochs", "positive int", "got 0"),
    C("fit-not-a-dataset", trainer_world, lambda w: w.trainer.fit(np.zeros((4, 16)), epochs=2), GpunetTypeError, "data", "gn.data.Dataset", "ndarray"),
    C("fit-replicas-divide-batch", P(trainer_world, devices=["cpu"] * 3), lambda w: w.trainer.fit(w.extra["data"], epochs=2, batch_size=64), GpunetValueError, "batch_size", "divisible by the 3 replicas", "got 64"),
    C("resume-other-architecture", trainer_world, lambda w: w.trainer.resume(w.root / "other-arch.npz"), CheckpointError, "1.weight", "expected shape (8, 16)", "got (6, 16)"),
    C("resume-torn", trainer_world, lambda w: w.trainer.resume(w.root / "torn.npz"), CheckpointError, "torn.npz", "complete", "truncated or corrupted"),
    C("trainer-devices-bad", "mlp", lambda w: gn.Trainer(w.m, CE(), w.opt, devices=["cpu", "gpu:1"]), DeviceError, "device", '"cuda:N"', "'gpu:1'"),
]


@pytest.mark.parametrize("case", CATALOGUE)
def test_bad_input_io(case, tmp_path):
    run_case(case, tmp_path)


def test_unsafe_tar_writes_nothing_anywhere(tmp_path, monkeypatch):
    """Beyond the folder: the absolute-path and '..' members never land outside it either."""
    monkeypatch.chdir(tmp_path)
    for name in ("../escape-1", "/tmp/gpunet-escape-2"):
        archive = _tar(tmp_path / "x.tar.gz", name)
        with pytest.raises(DataError):
            fetch.safe_extract(archive, tmp_path / "deep" / "out")
    assert not (tmp_path / "escape-1").exists() and not (tmp_path / "deep" / "escape-1").exists()
    assert not (tmp_path.parent / "escape-1").exists()
    assert not os.path.exists("/tmp/gpunet-escape-2")
