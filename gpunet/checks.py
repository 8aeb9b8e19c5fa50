"""Process-wide switches: runtime checks.

Checks (NaN/Inf scans of inputs, soft-target row sums) cost a device sync or a
reduction per call, so they are off by default and on in tests and in `doctor`.

    gn.set_checks(True)          # globally
    with gn.checks():            # for a block
        loss_fn.forward(logits, y)
"""
import contextlib

_checks = False


def checks_enabled() -> bool:
    return _checks


def set_checks(enabled: bool) -> None:
    global _checks
    _checks = bool(enabled)


@contextlib.contextmanager
def checks(enabled: bool = True):
    global _checks
    previous = _checks
    _checks = bool(enabled)
    try:
        yield
    finally:
        _checks = previous
