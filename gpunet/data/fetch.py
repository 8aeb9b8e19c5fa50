"""Finding dataset files on disk, downloading them, and unpacking archives safely.

Search order for dataset `<name>` (the first folder that holds a complete split wins):

    1. root=            the folder itself, then root/<name>/
    2. $GPUNET_DATA/<name>
    3. ~/.cache/gpunet/<name>          (where downloads go)
    4. /usr/share/datasets/<name>      (Debian's dataset-* packages, e.g. dataset-fashion-mnist)
    5. download from the canonical source into 3 (when download=True)

A download streams into a hidden temp file in the cache folder, is checked against its
checksum, and only then renamed into place with `os.replace` (atomic on POSIX), so an
interrupted or corrupt download never leaves a file that looks complete. Archives are
unpacked member by member after every member passes `check_member` (no absolute paths,
no `..`, no links, no devices), into a temp folder renamed into place at the end.

Every failure raises `DataError` naming the file or URL and what went wrong.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from ..errors import DataError

# Module-level so that tests (and unusual systems) can change them.
SYSTEM_DIRS = ("/usr/share/datasets",)
CHUNK = 1 << 20
TIMEOUT_S = 30


def cache_root() -> Path:
    return Path.home() / ".cache" / "gpunet"


def candidate_dirs(name: str, root=None) -> list[Path]:
    """The folders searched for dataset `name`, in order (see the module docstring)."""
    dirs = []
    if root is not None:
        root = Path(root).expanduser()
        dirs += [root, root / name]
    env = os.environ.get("GPUNET_DATA")
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(cache_root() / name)
    dirs += [Path(d) / name for d in SYSTEM_DIRS]
    return dirs


def locate(name: str, root, probe, fetch=None, hint: str = ""):
    """Return `probe(folder)` for the first searched folder where it is not a string.

    `probe(folder)` returns what the reader needs (paths) when the folder holds the
    split, or a string saying what is missing. `fetch(cache_folder)` downloads into the
    cache and is tried last; its DataError text is kept for the final message.
    """
    if root is not None and Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise DataError(f"dataset {name!r}: root expected a folder holding the files, got a file: {root}")
    searched = [] if os.environ.get("GPUNET_DATA") else ["$GPUNET_DATA: not set"]
    for folder in candidate_dirs(name, root):
        found = probe(folder) if folder.is_dir() else "no such folder"
        if not isinstance(found, str):
            return found
        searched.append(f"{folder}: {found}")
    if fetch is None:
        searched.append("download: not attempted (download=False; download=True fetches from the canonical source)")
    else:
        cache = cache_root() / name
        existed = cache.exists()
        try:
            fetch(cache)
        except DataError as e:
            searched.append(f"download into {cache}: failed: {e}")
            if not existed:  # leave no empty folder behind
                _remove_empty_dirs(cache, stop=cache_root().parent)
        else:
            found = probe(cache)
            if not isinstance(found, str):
                return found
            searched.append(f"download into {cache}: finished but {found}")
    raise DataError(
        f"dataset {name!r}: files not found. Searched, in order:\n  - " + "\n  - ".join(searched)
        + f"\nProvide the files{(' (' + hint + ')') if hint else ''} by one of: "
        f"load(..., root='/folder/with/files'); setting GPUNET_DATA=/folder holding {name}/; "
        f"or copying them into {cache_root() / name}.")


def _remove_empty_dirs(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


# ---------------------------------------------------------------- checksums

@dataclasses.dataclass(frozen=True)
class Checksum:
    """An expected digest. `gunzip=True`: the digest is of the decompressed bytes."""
    algorithm: str
    hexdigest: str
    gunzip: bool = False

    def of_file(self, path: Path) -> str:
        h = hashlib.new(self.algorithm)
        try:
            with open(path, "rb") as raw:
                stream = gzip.GzipFile(fileobj=raw) if self.gunzip else raw
                for block in iter(lambda: stream.read(CHUNK), b""):
                    h.update(block)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: unreadable{' gzip' if self.gunzip else ''} file "
                            f"({type(e).__name__}: {e})") from e
        return h.hexdigest()

    def verify(self, path: Path, label=None) -> None:
        got = self.of_file(path)
        if got != self.hexdigest.lower():
            what = "decompressed bytes" if self.gunzip else "bytes"
            raise DataError(f"{label or path}: checksum mismatch: expected {self.algorithm} of the "
                            f"{what} = {self.hexdigest}, got {got}")


# ---------------------------------------------------------------- download

def _progress():
    """A rich progress bar with size, rate and ETA (import kept local: rich is only needed here)."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=True)


def download(url: str, dest, checksum: Checksum | None = None, progress: bool = True) -> Path:
    """Fetch `url` (http(s):// or file://) to `dest`; verify `checksum` before the rename.

    On any failure the temp file is removed and `dest` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, progress)
        if checksum is not None:
            checksum.verify(Path(tmp), label=f"download of {url}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, out, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            bar = _progress() if progress else None
            task = bar.add_task(url.rsplit("/", 1)[-1], total=total) if bar else None
            if bar:
                bar.start()
            try:
                got = 0
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    got += len(block)
                    if bar:
                        bar.update(task, advance=len(block))
            finally:
                if bar:
                    bar.stop()
    except OSError as e:  # URLError, HTTPError, timeouts and socket errors are all OSErrors
        raise DataError(f"download of {url} failed ({type(e).__name__}: {e})") from e
    if total is not None and got != total:
        raise DataError(f"download of {url} is truncated: expected {total} bytes, got {got}")


def download_first(urls, dest, checksum: Checksum | None = None, progress: bool = True) -> Path:
    """Try each mirror in turn; raise one DataError listing every failure."""
    errors = []
    for url in urls:
        try:
            return download(url, dest, checksum, progress)
        except DataError as e:
            errors.append(str(e))
    raise DataError(f"{Path(dest).name}: every source failed: " + "; ".join(errors))


# ---------------------------------------------------------------- archives

def check_member(member: tarfile.TarInfo, archive) -> None:
    """Refuse anything but plain files and folders with relative, `..`-free paths."""
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        problem = "an absolute path"
    elif ".." in parts:
        problem = "a '..' path component"
    elif member.issym() or member.islnk():
        problem = f"a link (to {member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        problem = "a device, FIFO or other special file"
    else:
        return
    raise DataError(f"{archive}: unsafe archive member {name!r}: {problem}; refusing the archive")


def open_tar(archive) -> tarfile.TarFile:
    """Open a tar (any compression) and check every member before anything is read.
    A gzipped tar's CRC-32 is checked first (tarfile alone stops at the tar's end marker)."""
    from .gz import verify_gzip
    verify_gzip(archive)
    try:
        tar = tarfile.open(archive, "r:*")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: not a readable tar archive ({type(e).__name__}: {e})") from e
    try:
        for m in members:
            check_member(m, archive)
    except DataError:
        tar.close()
        raise
    return tar


def safe_extract(archive, dest) -> list[Path]:
    """Unpack `archive` into `dest`; returns the top-level paths created.

    Members go to a temp folder inside `dest` first, then each top-level entry is renamed
    into place, so a failure part way leaves nothing half-written in `dest`.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        with open_tar(archive) as tar:
            for m in tar.getmembers():
                target = tmp / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        tops = sorted(tmp.iterdir())
        for top in tops:
            final = dest / top.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(top, final)
        return [dest / t.name for t in tops]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: extraction failed ({type(e).__name__}: {e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
