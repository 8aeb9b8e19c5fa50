"""Hostile use of `gpunet train` and friends: the run folder and the OS, two runs on one
folder, resume, names and paths, config files, degenerate flags, and the CLI's last line
of defence. Each refused command exits 2 with one `error:` line (1 for a bug in gpunet,
with the traceback in a file), prints no traceback, and leaves every file in the run
folder byte-identical.

Most cases call `gpunet.cli.main` in-process on the bundled digits set (a 16-unit MLP, one
epoch: about a second); the file-size limit and the FIFO run in a subprocess.
"""
import errno
import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet import checkpoint, fileio
from gpunet.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--quiet", "--no-doctor", "--device", "cpu", "--hidden", "16", "--epochs", "1", "--batch-size", "64"]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """gpunet(*args) -> (exit code, the whole output as one line) in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("GPUNET_FORCE_CPU", "1")

    def run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return code, " ".join((out.out + out.err).split())
    return run


def files(folder: Path) -> dict:
    """Every file under `folder` with its bytes' hash (and every folder)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def refused(code, out, *needles, exit_code=2):
    assert code == exit_code, out
    assert "Traceback" not in out, out
    assert out.count("error:") == 1, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in: {out}"


@pytest.fixture
def trained(cli, tmp_path):
    """A finished 1-epoch run at runs/r (checkpoints, metrics, history)."""
    code, out = cli("train", *SMALL, "--name", "r")
    assert code == 0, out
    return tmp_path / "runs" / "r"


# ---------------------------------------------------------------- the run folder and the OS

def test_out_is_a_file(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    refused(*cli("train", *SMALL, "--out", "afile"), "afile", "expected a folder", "existing file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("failure", [(errno.ENOSPC, "No space left on device"),
                                     (errno.EROFS, "Read-only file system"),
                                     (errno.EACCES, "Permission denied")])
def test_a_failed_write_names_the_path_and_the_os_reason_and_keeps_the_checkpoint(cli, trained, monkeypatch,
                                                                                  failure):
    before = files(trained)
    real_fsync = os.fsync

    def fail(fd):  # the one write function's fsync: a full disk, a read-only or locked folder
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".checkpoint-"):
            raise OSError(failure[0], failure[1])
        return real_fsync(fd)
    monkeypatch.setattr(fileio.os, "fsync", fail)  # os.fsync inside the one write function
    code, out = cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2")
    refused(code, out, "checkpoint-", failure[1], "cannot write")
    after = files(trained)
    for name in ("checkpoint-last.npz", "checkpoint-best.npz"):
        assert after[name] == before[name]  # the last good checkpoint is intact
    assert not [n for n in after if n.endswith(".tmp")]


def test_a_folder_where_a_run_file_goes_is_an_error_naming_it(cli, trained):
    (trained / "history.json").unlink()
    (trained / "history.json").mkdir()  # something else stands where the file goes
    ckpt = (trained / "checkpoint-last.npz").read_bytes()
    code, out = cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2")
    refused(code, out, "history.json", "Is a directory")
    assert checkpoint.read_checkpoint(trained / "checkpoint-last.npz")[0]["meta"]["epoch"] == 2
    assert ckpt != (trained / "checkpoint-last.npz").read_bytes()


def test_a_name_too_long_for_the_file_system(cli, tmp_path):
    refused(*cli("train", *SMALL, "--out", "o" * 300), "File name too long")
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit_is_an_error_not_a_killed_process(tmp_path):
    """RLIMIT_FSIZE: the kernel's SIGXFSZ would kill the process; gpunet reports EFBIG instead."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
    env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="400", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "gpunet", "train", *SMALL, "--name", "big", "--hidden", "64"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    out = " ".join((r.stdout + r.stderr).split())
    refused(r.returncode, out, "File too large", "checkpoint-")
    run = tmp_path / "runs" / "big"
    assert not list(run.glob(".*.tmp"))


# ---------------------------------------------------------------- two runs, one folder

def test_second_run_on_a_locked_folder_refuses_naming_the_holder(cli, trained):
    from gpunet.runlock import lock_run_folder
    before = files(trained)
    lock = lock_run_folder(trained)  # another run holds it
    try:
        refused(*cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2"), "in use", str(os.getpid()))
    finally:
        lock.release()
    assert files(trained) == before
    assert cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2")[0] == 0  # released: it runs


def test_two_fresh_runs_with_one_name_get_two_folders(tmp_path):
    from gpunet.cli.train import make_run_dir
    from gpunet.cli.recipe import TrainConfig
    cfg = TrainConfig(out=str(tmp_path), name="same")
    assert make_run_dir(cfg) != make_run_dir(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same", "same-2"]


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("flags,needles", [
    (["--batch-size", "32"], ["batch_size", "64", "32"]),
    (["--dtype", "float64"], ["dtype", "float32", "float64"]),
    (["--hidden", "32"], ["hidden", "'16'", "'32'"]),
    (["--optimizer", "adam"], ["optimizer", "sgd", "adam"]),
    (["--seed", "3"], ["seed"]),
])
def test_resume_that_changes_the_run_is_refused_and_changes_nothing(cli, trained, flags, needles):
    before = files(trained)
    refused(*cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2", *flags), "--resume", *needles)
    assert files(trained) == before


def test_resume_checks_the_checkpoint_config_when_config_json_is_gone(cli, trained):
    (trained / "config.json").unlink()
    before = files(trained)
    refused(*cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2", "--hidden", "32"),
            "checkpoint", "hidden")
    assert files(trained) == before


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_resume_without_a_readable_checkpoint_stops_unless_restart(cli, trained, damage):
    last = trained / "checkpoint-last.npz"
    if damage == "missing":
        last.unlink()
    elif damage == "garbage":
        last.write_text("not a checkpoint\n")
    else:
        last.write_bytes(last.read_bytes()[:-100])
    before = files(trained)
    refused(*cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2"), "checkpoint-last.npz",
            "--restart", "Nothing was changed")
    assert files(trained) == before  # checkpoint-best and metrics are not overwritten
    code, out = cli("train", *SMALL, "--name", "r", "--resume", "--restart", "--epochs", "2")
    assert code == 0 and "starting the run over" in out, out
    assert checkpoint.read_checkpoint(last)[0]["meta"]["epoch"] == 2


def test_restart_alone_is_refused(cli, tmp_path):
    refused(*cli("train", *SMALL, "--restart"), "--restart", "--resume")
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_finished_run_says_so_and_writes_nothing(cli, trained):
    before = files(trained)
    code, out = cli("train", *SMALL, "--name", "r", "--resume")
    assert code == 0 and "finished" in out and "1 of 1 epochs" in out, out
    assert files(trained) == before


def test_a_refused_resume_keeps_config_json(cli, trained):
    """A mistyped flag on --resume used to rewrite config.json first, making the run unresumable."""
    saved = (trained / "config.json").read_bytes()
    refused(*cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2", "--lr", "-1"), "lr")
    refused(*cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2", "--batch-size", "7"), "batch_size")
    assert (trained / "config.json").read_bytes() == saved
    assert cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2")[0] == 0


# ---------------------------------------------------------------- --name and paths

@pytest.mark.parametrize("name", ["..", "../escape", "ABSOLUTE", "a/b", ".", "x\\y", " pad"])
def test_a_name_cannot_leave_out(cli, tmp_path, name):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    name = str(outside) if name == "ABSOLUTE" else name
    refused(*cli("train", *SMALL, "--name", name), "name", "one folder name inside --out")
    assert list(tmp_path.iterdir()) == []
    assert not outside.exists() and not (tmp_path.parent / "escape").exists()


# ---------------------------------------------------------------- config files

def test_top_level_keys_are_kept_next_to_a_train_table(cli, tmp_path):
    (tmp_path / "c.toml").write_text('epochs = 1\nhidden = "8"\n[train]\nlr = 0.01\n')
    code, out = cli("train", "--quiet", "--no-doctor", "--device", "cpu", "--config", "c.toml", "--name", "c")
    assert code == 0, out
    saved = json.loads((tmp_path / "runs" / "c" / "config.json").read_text())
    assert (saved["epochs"], saved["hidden"], saved["lr"]) == (1, "8", 0.01)


@pytest.mark.parametrize("name,text,needles", [
    ("both.toml", 'lr = 0.1\n[train]\nlr = 0.2\n', ["['lr']", "both"]),
    ("list.json", "[1, 2]", ["expected a table", "list"]),
    ("null.json", "null", ["expected a table", "NoneType"]),
    ("scalar.json", "3", ["expected a table", "int"]),
    ("train.toml", "train = 3\n", ["[train]", "table", "int"]),
    ("train.json", '{"train": [1]}', ["[train]", "table", "list"]),
    ("bytes.toml", b"lr = \xff\xfe\n", ["UTF-8"]),
    ("deep.json", "[" * 100000, ["not valid JSON"]),
    ("huge.toml", "#" * (2 << 20), ["at most", "bytes"]),
])
def test_config_file_of_the_wrong_shape(cli, tmp_path, name, text, needles):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(*cli("train", *SMALL, "--config", name), name, *needles)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("special", ["/dev/zero", "folder"])
def test_config_that_is_a_device_or_a_folder(cli, tmp_path, special):
    (tmp_path / "folder").mkdir()
    refused(*cli("train", *SMALL, "--config", special), "expected a regular file")


def test_config_that_is_a_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "c.toml")
    env = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="400", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "gpunet", "train", *SMALL, "--config", "c.toml"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    refused(r.returncode, " ".join((r.stdout + r.stderr).split()), "c.toml", "FIFO")


# ---------------------------------------------------------------- degenerate flags

@pytest.mark.parametrize("argv,needles", [
    (["train", *SMALL, "--hidden", "32,²"], ["hidden", "'32,²'"]),
    (["train", *SMALL, "--hidden", "99999999999"], ["hidden"]),
    (["train", *SMALL, "--seed", "-1"], ["seed", "-1"]),
    (["train", *SMALL, "--lr", "1e400"], ["lr", "inf"]),
    (["train", *SMALL, "--dataset", "mnist", "--data-root", "afile"], ["root", "got a file"]),
    (["compare", "--dataset", "digits", "--replicas", "0"], ["--replicas", "'0'"]),
    (["compare", "--dataset", "digits", "--replicas", "1,x"], ["--replicas", "'1,x'"]),
    (["compare", "--dataset", "digits", "--replicas", ""], ["--replicas"]),
    (["compare", "--dataset", "digits", "--epochs", "0"], ["--epochs"]),
    (["launch", "--timeout", "-1", "--", "train"], ["--timeout", "-1"]),
    (["launch", "--grace", "nan", "--", "train"], ["--grace", "nan"]),
    (["launch", "--nproc", "0", "--", "train"], ["--nproc"]),
])
def test_degenerate_flags_get_a_clear_error(cli, tmp_path, argv, needles):
    (tmp_path / "afile").write_text("x")
    refused(*cli(*argv), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# ---------------------------------------------------------------- the last line of defence

def _boom(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


def test_an_unexpected_error_is_one_line_with_a_traceback_file_in_the_run_folder(cli, trained, monkeypatch):
    import gpunet.cli.train as train_cli
    monkeypatch.setattr(train_cli, "write_curves", _boom)
    code, out = cli("train", *SMALL, "--name", "r", "--resume", "--epochs", "2")
    refused(code, out, "RuntimeError: boom", "error-traceback.txt", "--debug", exit_code=1)
    assert "second line" not in out
    text = (trained / "error-traceback.txt").read_text()
    assert "Traceback" in text and "_boom" in text


def test_an_unexpected_error_before_the_run_folder_goes_to_a_temp_file(cli, tmp_path, monkeypatch):
    import gpunet.cli.recipe as rc
    monkeypatch.setattr(rc, "datasets", _boom)
    code, out = cli("train", *SMALL)
    refused(code, out, "RuntimeError: boom", "gpunet-traceback-", exit_code=1)
    where = Path(out[out.index("full traceback in ") + len("full traceback in "):].split(";")[0])
    assert "Traceback" in where.read_text()
    where.unlink()
    assert not (tmp_path / "runs").exists()


def test_debug_prints_the_traceback(cli, monkeypatch):
    import gpunet.cli.recipe as rc
    monkeypatch.setattr(rc, "datasets", _boom)
    code, out = cli("train", *SMALL, "--debug")
    assert code == 1 and "Traceback" in out and "_boom" in out, out


def test_an_os_error_anywhere_is_one_line_with_exit_code_2(cli, monkeypatch):
    import gpunet.cli.recipe as rc

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/mnist")
    monkeypatch.setattr(rc, "datasets", denied)
    refused(*cli("train", *SMALL), "/data/mnist", "Permission denied")


@pytest.mark.parametrize("config,needles", [
    ([1, 2], ["saved run config", "JSON object", "list"]),
    ({"hidden": 5}, ["saved run config is invalid", "hidden", "expected str"]),
    ({"dtype": "float16"}, ["saved run config is invalid", "dtype"]),
])
def test_evaluate_checks_the_saved_config(cli, trained, config, needles):
    import json as _json
    import zipfile
    path = trained / "checkpoint-last.npz"
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with np.load(path) as z:
        header = _json.loads(z["__meta__"].tobytes())
    header["meta"]["config"] = config
    import io as _io
    buf = _io.BytesIO()
    np.save(buf, np.frombuffer(_json.dumps(header).encode(), np.uint8))
    members["__meta__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    refused(*cli("evaluate", str(path)), *needles)
