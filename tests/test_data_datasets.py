"""Dataset readers, checksums, search order, offline downloads and safe archives.

MNIST and Fashion-MNIST are the real files in ../shared/datasets (GPUNET_DATA, set by
conftest). CIFAR-10 is written by the tests in the exact binary format. Downloads use
file:// URLs, so nothing here needs a network.
"""
import gzip
import hashlib
import io
import os
import tarfile

import numpy as np
import pytest

import gpunet as gn
from conftest import data_root
from gpunet.data import cifar, digits, fetch, idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
SESSION_DATA = os.environ.get("GPUNET_DATA")  # before `isolated` clears it


def shared(name):
    """data_root(name) for the GPUNET_DATA the session started with (skips when absent)."""
    with pytest.MonkeyPatch.context() as mp:
        if SESSION_DATA:
            mp.setenv("GPUNET_DATA", SESSION_DATA)
        return data_root(name)


@pytest.fixture(scope="module")
def mnist_train():
    data_root("mnist")
    return gn.data.load("mnist", "train", download=False)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No GPUNET_DATA, HOME in tmp (so the cache is empty), no system folders."""
    monkeypatch.delenv("GPUNET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fetch, "SYSTEM_DIRS", ())
    return tmp_path


def link_split(src_dir, dst_dir, split="test"):
    """Symlink one split's two real IDX files into dst_dir (no 10 MB copies)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for base in idx.FILES[split]:
        os.symlink(src_dir / f"{base}.gz", dst_dir / f"{base}.gz")
    return dst_dir


def real_bytes(name, base):
    return gzip.decompress((shared(name) / f"{base}.gz").read_bytes())


# ---------------------------------------------------------------- MNIST family

def test_mnist_train(mnist_train):
    ds = mnist_train
    assert (ds.name, ds.split, len(ds)) == ("mnist", "train", 60000)
    assert ds.x.shape == (60000, 28, 28) and ds.x.dtype == np.uint8
    assert ds.y.shape == (60000,) and ds.y.dtype == np.int64
    assert np.bincount(ds.y).tolist() == MNIST_TRAIN_COUNTS
    assert round(float(ds.x.mean()), 2) == 33.32
    assert ds.classes == tuple("0123456789")


def test_mnist_test():
    shared("mnist")
    ds = gn.data.load("mnist", "test")
    assert ds.x.shape == (10000, 28, 28) and ds.y.dtype == np.int64
    assert round(float(ds.x.mean()), 2) == 33.79


@pytest.mark.parametrize("split,n,mean", [("train", 60000, 72.94), ("test", 10000, 73.15)])
def test_fashion_mnist(split, n, mean):
    shared("fashion-mnist")
    ds = gn.data.load("fashion-mnist", split)
    assert ds.x.shape == (n, 28, 28) and ds.x.dtype == np.uint8
    assert np.bincount(ds.y).tolist() == [n // 10] * 10
    assert round(float(ds.x.mean()), 2) == mean
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shared_files_match_canonical_checksums(name):
    for base, digest in idx.SHA256[name].items():
        assert hashlib.sha256(real_bytes(name, base)).hexdigest() == digest, base


def test_raw_idx_files_read_like_gzipped(isolated):
    root = isolated / "raw"
    root.mkdir()
    for base in idx.FILES["test"]:
        (root / base).write_bytes(real_bytes("mnist", base))
    raw = gn.data.load("mnist", "test", root=root, download=False)
    gz = gn.data.load("mnist", "test", root=shared("mnist"), download=False)
    assert np.array_equal(raw.x, gz.x) and np.array_equal(raw.y, gz.y)


# ---------------------------------------------------------------- bad files

def write_labels_variant(root, raw: bytes):
    """A root with the real test images and a doctored labels file."""
    link_split(shared("mnist"), root)
    labels = root / "t10k-labels-idx1-ubyte.gz"
    labels.unlink()
    labels.write_bytes(gzip.compress(raw))
    return labels


@pytest.mark.parametrize("doctor,problem", [
    (lambda b: b[:-10], "truncated"),
    (lambda b: b + b"\0", "trailing bytes"),
    (lambda b: b"\0\0\x08\x03" + b[4:], "wrong magic number"),
    (lambda b: b[:8] + bytes([(b[8] + 1) % 10]) + b[9:], "checksum mismatch"),
    (lambda b: b[:3], "truncated"),
])
def test_bad_idx_file_names_file_and_problem(isolated, doctor, problem):
    labels = write_labels_variant(isolated / "bad", doctor(real_bytes("mnist", "t10k-labels-idx1-ubyte")))
    with pytest.raises(gn.DataError, match=problem) as e:
        gn.data.load("mnist", "test", root=labels.parent, download=False)
    assert str(labels) in str(e.value)


def test_truncated_gzip_is_a_data_error(isolated):
    root = isolated / "bad"
    link_split(shared("mnist"), root)
    images = root / "t10k-images-idx3-ubyte.gz"
    data = images.read_bytes()
    images.unlink()
    images.write_bytes(data[: len(data) // 2])
    with pytest.raises(gn.DataError, match="truncated gzip") as e:
        gn.data.load("mnist", "test", root=root, download=False)
    assert str(images) in str(e.value)


def test_empty_folder_names_every_place_and_the_fix(isolated):
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(gn.DataError) as e:
        gn.data.load("fashion-mnist", "train", root=empty, download=False)
    msg = str(e.value)
    assert f"{empty}: missing train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in msg
    assert str(isolated / "home" / ".cache" / "gpunet" / "fashion-mnist") in msg
    assert "GPUNET_DATA" in msg and "root=" in msg


def test_parse_idx_generic_types():
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    data = b"\0\0\x0c\x02" + np.array([2, 3], ">u4").tobytes() + arr.tobytes()
    out = idx.parse_idx(data, "mem")
    assert out.dtype == np.int32 and out.dtype.isnative and np.array_equal(out, arr)


# ---------------------------------------------------------------- search order

def test_candidate_dirs_order(isolated, monkeypatch):
    monkeypatch.setenv("GPUNET_DATA", str(isolated / "env"))
    monkeypatch.setattr(fetch, "SYSTEM_DIRS", (str(isolated / "sys"),))
    got = fetch.candidate_dirs("mnist", isolated / "r")
    assert got == [isolated / "r", isolated / "r" / "mnist", isolated / "env" / "mnist",
                   isolated / "home" / ".cache" / "gpunet" / "mnist", isolated / "sys" / "mnist"]


def test_root_beats_env_beats_cache(isolated, monkeypatch):
    """Each later place holds a corrupt copy: loading succeeds only if the earlier one wins."""
    good = shared("mnist")
    bad_bytes = real_bytes("mnist", "t10k-labels-idx1-ubyte")[:-1]
    env_dir = write_labels_variant(isolated / "env" / "mnist", bad_bytes).parent
    cache_dir = write_labels_variant(isolated / "home" / ".cache" / "gpunet" / "mnist", bad_bytes).parent
    root = link_split(good, isolated / "root" / "mnist").parent  # found through root/<name>/
    monkeypatch.setenv("GPUNET_DATA", str(isolated / "env"))
    assert len(gn.data.load("mnist", "test", root=root, download=False)) == 10000
    with pytest.raises(gn.DataError, match=str(env_dir)):
        gn.data.load("mnist", "test", download=False)
    monkeypatch.delenv("GPUNET_DATA")
    with pytest.raises(gn.DataError, match=str(cache_dir)):
        gn.data.load("mnist", "test", download=False)
    monkeypatch.setattr(fetch, "SYSTEM_DIRS", (str(isolated / "sys"),))
    link_split(good, isolated / "sys" / "mnist")
    for f in cache_dir.iterdir():
        f.unlink()
    assert len(gn.data.load("mnist", "test", download=False)) == 10000  # system folder


def test_unknown_name_and_split():
    with pytest.raises(gn.GpunetValueError, match="'mnist', 'fashion-mnist', 'cifar10', 'digits'.*'imagenet'"):
        gn.data.load("imagenet")
    with pytest.raises(gn.GpunetValueError, match="split: expected 'train' or 'test', got 'val'"):
        gn.data.load("digits", split="val")


# ---------------------------------------------------------------- downloads (file://)

def serve_dir(isolated, files: dict):
    """A folder of files to download from; returns its file:// base URL."""
    srv = isolated / "srv"
    srv.mkdir(exist_ok=True)
    for name, data in files.items():
        (srv / name).write_bytes(data)
    return srv.as_uri() + "/"


def test_download_idx_via_file_url(isolated, monkeypatch):
    files = {f"{b}.gz": (shared("mnist") / f"{b}.gz").read_bytes() for b in idx.FILES["test"]}
    url = serve_dir(isolated, files)
    monkeypatch.setitem(idx.MIRRORS, "mnist", [(isolated / "nowhere").as_uri() + "/", url])
    ds = gn.data.load("mnist", "test")
    assert len(ds) == 10000 and round(float(ds.x.mean()), 2) == 33.79
    cache = isolated / "home" / ".cache" / "gpunet" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)  # no temp files left


def test_failed_download_reports_every_place(isolated, monkeypatch):
    monkeypatch.setitem(idx.MIRRORS, "fashion-mnist", [(isolated / "offline").as_uri() + "/"])
    with pytest.raises(gn.DataError) as e:
        gn.data.load("fashion-mnist", "test", root=isolated / "mine")
    msg = str(e.value)
    for place in (isolated / "mine", isolated / "mine" / "fashion-mnist", "$GPUNET_DATA: not set",
                  "download into", (isolated / "offline").as_uri(), "GPUNET_DATA=", "root="):
        assert str(place) in msg
    assert not (isolated / "home" / ".cache" / "gpunet").exists()  # no empty folder left behind


def test_download_with_bad_checksum_leaves_nothing(isolated, monkeypatch):
    raw = bytearray(real_bytes("mnist", "t10k-labels-idx1-ubyte"))
    raw[-1] = (raw[-1] + 1) % 10
    files = {"t10k-images-idx3-ubyte.gz": (shared("mnist") / "t10k-images-idx3-ubyte.gz").read_bytes(),
             "t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(raw))}
    monkeypatch.setitem(idx.MIRRORS, "mnist", [serve_dir(isolated, files)])
    with pytest.raises(gn.DataError, match="checksum mismatch") as e:
        gn.data.load("mnist", "test")
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value)
    cache = isolated / "home" / ".cache" / "gpunet" / "mnist"
    assert [p.name for p in cache.iterdir()] == ["t10k-images-idx3-ubyte.gz"]  # verified one only


def test_download_is_atomic(isolated):
    url = serve_dir(isolated, {"blob": b"hello"})
    dest = isolated / "cache" / "blob"
    good = fetch.Checksum("sha256", hashlib.sha256(b"hello").hexdigest())
    fetch.download(url + "blob", dest, good, progress=False)
    assert dest.read_bytes() == b"hello"
    (isolated / "srv" / "blob").write_bytes(b"evil!")
    with pytest.raises(gn.DataError, match="checksum mismatch"):
        fetch.download(url + "blob", dest, good, progress=False)
    assert dest.read_bytes() == b"hello"  # the old file is untouched
    assert [p.name for p in dest.parent.iterdir()] == ["blob"]
    with pytest.raises(gn.DataError, match="failed"):
        fetch.download(url + "missing", isolated / "cache" / "x", progress=False)
    assert [p.name for p in dest.parent.iterdir()] == ["blob"]


# ---------------------------------------------------------------- CIFAR-10 (binary)

def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    data = b"".join(bytes([y[i]]) + x[i].tobytes() for i in range(n))  # x[i] is C-order: channel-major
    return x, y.astype(np.int64), data


def write_cifar(folder, meta=None, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, fname in enumerate(cifar.FILES["train"] + cifar.FILES["test"]):
        x, y, data = cifar_batch(n + (fname == "test_batch.bin"), seed=i)
        (folder / fname).write_bytes(data)
        out[fname] = (x, y)
    if meta is not None:
        (folder / cifar.META).write_text(meta)
    return out


def make_tar(path, entries):
    """entries: (TarInfo, bytes-or-None) pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_cifar_dir_layout_and_pixel_order(isolated):
    batches = write_cifar(isolated / "root" / cifar.FOLDER)
    train = gn.data.load("cifar10", "train", root=isolated / "root", download=False)
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == np.uint8 and train.y.dtype == np.int64
    assert np.array_equal(train.x, np.concatenate([batches[f][0] for f in cifar.FILES["train"]]))
    assert np.array_equal(train.y, np.concatenate([batches[f][1] for f in cifar.FILES["train"]]))
    raw = (isolated / "root" / cifar.FOLDER / "data_batch_1.bin").read_bytes()
    assert train.y[0] == raw[0]
    assert np.array_equal(train.x[0, 0].ravel(), np.frombuffer(raw[1:1025], np.uint8))       # red plane
    assert np.array_equal(train.x[0, 2].ravel(), np.frombuffer(raw[2049:3073], np.uint8))    # blue plane
    test = gn.data.load("cifar10", "test", root=isolated / "root", download=False)
    assert len(test) == 4 and test.classes == cifar.CLASSES


def test_cifar_meta_and_flat_folder(isolated):
    names = "\n".join(f"class{i}" for i in range(10)) + "\n\n"
    write_cifar(isolated / "r" / "cifar10", meta=names)
    ds = gn.data.load("cifar10", "test", root=isolated / "r", download=False)
    assert ds.classes == tuple(f"class{i}" for i in range(10))


def test_cifar_reads_tar_in_place(isolated):
    batches = write_cifar(isolated / "src" / cifar.FOLDER)
    root = isolated / "root"
    root.mkdir()
    with tarfile.open(root / cifar.ARCHIVE, "w:gz") as tar:
        tar.add(isolated / "src" / cifar.FOLDER, arcname=cifar.FOLDER)
    ds = gn.data.load("cifar10", "test", root=root, download=False)
    assert np.array_equal(ds.x, batches["test_batch.bin"][0])
    assert sorted(p.name for p in root.iterdir()) == [cifar.ARCHIVE]  # nothing extracted


@pytest.mark.parametrize("cut,problem", [(1, "truncated"), (None, "label 12")])
def test_cifar_bad_batch(isolated, cut, problem):
    folder = isolated / "r" / cifar.FOLDER
    write_cifar(folder)
    path = folder / "test_batch.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-cut] if cut else bytes([12]) + data[1:])
    with pytest.raises(gn.DataError, match=problem) as e:
        gn.data.load("cifar10", "test", root=isolated / "r", download=False)
    assert str(path) in str(e.value)


def _member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("info,problem", [
    (_member("../evil"), "'..'"),
    (_member("cifar-10-batches-bin/../../evil"), "'..'"),
    (_member("/tmp/gpunet-evil"), "absolute path"),
    (_member("cifar-10-batches-bin/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (_member("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "data_batch_1.bin"), "link"),
    (_member("cifar-10-batches-bin/dev", tarfile.CHRTYPE), "device"),
])
def test_unsafe_tar_is_refused(isolated, info, problem):
    root = isolated / "root"
    root.mkdir()
    payload = b"x" if info.isreg() else None
    archive = make_tar(root / cifar.ARCHIVE, [(_member(f"{cifar.FOLDER}/test_batch.bin"),
                                               cifar_batch(1, 0)[2]), (info, payload)])
    with pytest.raises(gn.DataError, match=f"unsafe archive member.*{problem}") as e:
        gn.data.load("cifar10", "test", root=root, download=False)
    assert str(archive) in str(e.value)
    dest = isolated / "out" / "deep"
    with pytest.raises(gn.DataError, match="unsafe"):
        fetch.safe_extract(archive, dest)
    assert list(dest.iterdir()) == [] and not (isolated / "out" / "evil").exists()
    assert not os.path.exists("/tmp/gpunet-evil")


def test_cifar_download_checks_md5_and_extracts(isolated, monkeypatch):
    write_cifar(isolated / "src" / cifar.FOLDER, meta="\n".join("abcdefghij"))
    archive = isolated / "served.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(isolated / "src" / cifar.FOLDER, arcname=cifar.FOLDER)
    monkeypatch.setattr(cifar, "URLS", [archive.as_uri()])
    cache = isolated / "home" / ".cache" / "gpunet" / "cifar10"
    with pytest.raises(gn.DataError, match="checksum mismatch"):  # the real MD5 cannot match
        gn.data.load("cifar10", "train")
    assert not cache.exists()
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    ds = gn.data.load("cifar10", "train")
    assert len(ds) == 15 and ds.classes == tuple("abcdefghij")
    assert sorted(p.name for p in cache.iterdir()) == sorted([cifar.ARCHIVE, cifar.FOLDER])


# ---------------------------------------------------------------- digits (packaged)

def test_digits_packaged_and_split_fixed():
    train, test = gn.data.load("digits", "train"), gn.data.load("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.x.shape == (1437, 8, 8) and train.x.dtype == np.uint8 and train.y.dtype == np.int64
    assert train.x.max() == 255 and train.x.min() == 0
    rows_tr, rows_te = digits.split_indices("train"), digits.split_indices("test")
    assert np.array_equal(np.union1d(rows_tr, rows_te), np.arange(1797))
    assert rows_te[:5].tolist() == [6, 8, 14, 15, 25]          # pinned: the split never moves
    assert np.bincount(test.y, minlength=10).min() > 20           # every class in the test split
    assert (gn.data.load("digits", "train").x == train.x).all()
