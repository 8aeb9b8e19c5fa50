"""An exclusive lock on a run folder, so two processes never write one run at once.

`lock_run_folder(folder)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on the folder itself (a
directory file descriptor), so the lock adds no file to the run folder and the folder's
bytes stay the same when a run is refused. A second process gets RunFolderError naming
the folder and the holding process's pid (read from /proc/locks on Linux). The OS drops
the lock when the holder exits, even on SIGKILL, so a lock never outlives its run.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import RunFolderError, describe_os_error

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented in docs/reliability.md)
    fcntl = None


class RunLock:
    """Holds the lock while its file descriptor is open; `release()` drops it."""

    def __init__(self, folder, fd):
        self.folder, self.fd = Path(folder), fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def holder_pid(fd) -> str:
    """The pid holding a flock on the file behind `fd`, from /proc/locks ("unknown" elsewhere)."""
    try:
        st = os.fstat(fd)
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if "FLOCK" in parts and ident in parts and "->" not in parts:
                    return parts[parts.index(ident) - 1]
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def lock_run_folder(folder) -> RunLock:
    folder = Path(folder)
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise RunFolderError(describe_os_error(e, "cannot lock the run folder", folder), e.errno) from e
    if fcntl is None:
        return RunLock(folder, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = holder_pid(fd)
        os.close(fd)
        raise RunFolderError(f"run folder {folder} is in use by another gpunet process (pid {pid}); "
                             f"wait for it to finish, or use another --name") from None
    except OSError as e:
        os.close(fd)
        raise RunFolderError(describe_os_error(e, "cannot lock the run folder", folder), e.errno) from e
    return RunLock(folder, fd)
