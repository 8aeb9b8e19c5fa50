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
