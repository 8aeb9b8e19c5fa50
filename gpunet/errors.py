"""gpunet's error classes.

Every error gpunet raises on bad input is a ``GpunetError`` and also a standard
``ValueError`` or ``TypeError``, so ``except ValueError`` keeps working for callers
who do not know gpunet's classes. Messages name the argument, what was expected
and what was received (Keras style).
"""


class GpunetError(Exception):
    """Base class of every error gpunet raises on purpose."""


class GpunetValueError(GpunetError, ValueError):
    """An argument has the right type but a bad value."""


class GpunetTypeError(GpunetError, TypeError):
    """An argument has the wrong type."""


class ShapeError(GpunetValueError):
    """An array reached a layer or loss with a shape it cannot take."""


class DeviceError(GpunetValueError):
    """A device was asked for that does not exist or cannot be used here."""


class DataError(GpunetValueError):
    """A dataset file is missing, truncated, corrupted or fails its checksum."""


class CheckpointError(GpunetValueError):
    """A checkpoint is unreadable, torn, unsafe, or does not fit the model."""


class NonFiniteError(GpunetValueError):
    """NaN or Inf met where checks are on (inputs, loss or gradients)."""


class DistributedError(GpunetError, RuntimeError):
    """A multi-process job cannot go on: a rank missed a collective's timeout, the ranks
    disagree (code, config, weights), or a rank failed. `ranks` names the ranks at fault;
    `reporter` is the rank that reports it (None: the rank that raised); `exit_code` is
    the job's (2 for bad input that every rank sees alike)."""

    def __init__(self, message, ranks=(), reporter=None, exit_code=1):
        super().__init__(message)
        self.ranks, self.reporter, self.exit_code = tuple(ranks), reporter, int(exit_code)


class RunFolderError(GpunetError, OSError):
    """A file or folder could not be written or read: names the path and the OS's reason.

    Also an ``OSError``, so callers that catch ``OSError`` keep working."""

    def __init__(self, message: str, errno_: int | None = None):
        OSError.__init__(self, message)
        self.os_errno = errno_

    def __str__(self):
        return self.args[0] if self.args else ""


def describe_os_error(e: OSError, action: str = "", path=None) -> str:
    """One line: '<action> <path>: <the OS's reason> [Errno N]' for any OSError."""
    import errno as _errno
    where = path if path is not None else (e.filename if e.filename is not None else "?")
    reason = e.strerror or str(e) or type(e).__name__
    code = f" [{_errno.errorcode.get(e.errno, e.errno)}]" if e.errno else ""
    extra = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{action + ' ' if action else ''}{where}{extra}: {reason}{code}"
