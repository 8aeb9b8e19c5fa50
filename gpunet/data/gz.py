"""One gzip reader for every dataset archive: CRC-checked and bounded.

`Gunzip(path)` decompresses incrementally (all members of a multi-member file), so a
caller reads a format header first, computes the size that header declares, and then
asks for exactly that many bytes plus one: the output never grows past what the format
allows (a decompression bomb stops there). Reading to the end of the stream makes zlib
check every member's CRC-32 and length trailer. Every error is a DataError that names
the file and says what is wrong with it.
"""
from __future__ import annotations

import zlib
from pathlib import Path

from ..errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
_IN_CHUNK = 1 << 20
_OUT_CHUNK = 16 << 20


class Gunzip:
    """Incremental, bounded decompression of one .gz file (use as a context manager)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.f = open(self.path, "rb")
        except OSError as e:
            raise DataError(f"{self.path}: unreadable ({e.strerror or e})") from None
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""
        self.buf = bytearray()
        self.total = 0       # bytes produced so far (kept or discarded)
        self.done = False    # every member's trailer read and checked

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def _step(self, room: int) -> bytes:
        """Decompress up to `room` bytes; marks `done` at the end of the last member."""
        while True:
            if self.d.eof:
                rest = self.d.unused_data + self.pending + (b"" if self.pending else self.f.read(_IN_CHUNK))
                self.pending = b""
                while not rest.strip(b"\0"):  # the end (gzip allows zero padding)
                    more = self.f.read(_IN_CHUNK)
                    if not more:
                        self.done = True
                        return b""
                    rest = more
                self.d, self.pending = zlib.decompressobj(16 + zlib.MAX_WBITS), rest  # another member
            data = self.d.unconsumed_tail or self.pending
            if not data:
                data = self.f.read(_IN_CHUNK)
                if not data:
                    raise DataError(f"{self.path}: truncated gzip file: the stream ends after {self.total} "
                                    f"bytes, before its CRC-32 trailer")
            self.pending = b""
            try:
                out = self.d.decompress(data, min(room, _OUT_CHUNK))
            except zlib.error as e:
                what = ("CRC-32 or length mismatch (the file is corrupted)" if "check" in str(e) or
                        "length" in str(e) else f"corrupted gzip data ({e})")
                raise DataError(f"{self.path}: {what}") from None
            if out or self.d.eof:
                self.total += len(out)
                return out

    def fill(self, n: int) -> bytearray:
        """Keep decompressing until the buffer holds `n` bytes or the stream ends."""
        while len(self.buf) < n and not self.done:
            self.buf += self._step(n - len(self.buf))
        return self.buf

    def read_all(self, limit: int, what: str = "") -> bytes:
        """Every byte, refusing output past `limit` (then the file is refused, not read on)."""
        self.fill(limit + 1)
        if len(self.buf) > limit:
            raise DataError(f"{self.path}: decompresses to more than {limit} bytes{what}; refused")
        return bytes(self.buf)

    def verify(self) -> int:
        """Decompress to the end, discarding the output: checks every CRC. Returns the size."""
        while not self.done:
            self._step(_OUT_CHUNK)
        return self.total


def is_gzip(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as e:
        raise DataError(f"{path}: unreadable ({e.strerror or e})") from None


def verify_gzip(path) -> None:
    """Check the CRC-32 of every member of a .gz file (for archives read by tarfile, which
    stops at the tar's end marker and so may never reach the gzip trailer)."""
    if is_gzip(path):
        with Gunzip(path) as g:
            g.verify()
