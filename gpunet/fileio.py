"""Run-folder file I/O that never leaves a torn file: `atomic_write_bytes` and `append_bytes`.

The bytes go to a temp file in the same folder, which is fsync'ed and renamed over the
target; then the folder is fsync'ed. A crash at any moment leaves the old file or the
new one (checkpoints, run configs, histories, curves, experiment results). Every run-folder
file goes through one of these two functions, so an OS failure (disk full, file-size limit,
read-only or missing folder, a folder standing where the file goes, a name too long) is one
RunFolderError naming the path and the OS's reason, and the file already there keeps its bytes.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import RunFolderError, describe_os_error


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask_mode() -> int:
    """0o666 less the process umask: the mode open() would give a new file (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one.
    An OS failure raises RunFolderError; the temp file is removed and `path` keeps its bytes."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _umask_mode())  # mkstemp makes 0600; a run file follows the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise RunFolderError(describe_os_error(e, "cannot write", path), e.errno) from e
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_dir(path.parent)


def append_bytes(path, data: bytes) -> None:
    """Append `data` to `path` (a log such as metrics.jsonl); OS failures as in atomic_write_bytes."""
    path = Path(path)
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError as e:
        raise RunFolderError(describe_os_error(e, "cannot write", path), e.errno) from e


def regular_file(path, what: str, error=RunFolderError) -> os.stat_result:
    """The stat of `path` when it is a regular file; otherwise `error` naming what it is (a
    folder, a FIFO, a device, a socket) or why it cannot be read. Checked before opening,
    so a FIFO or a device never blocks a read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise error(f"{what} {path}: file not found ({e.strerror or e})") from None
    except OSError as e:
        raise error(f"{what} {path}: cannot read it: {e.strerror or e}") from None
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise error(f"{what} {path}: expected a regular file, got {kind}")
    return st
