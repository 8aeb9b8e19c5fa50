"""Argument checks with one wording: "`owner: arg expected …, got …`".

Every constructor and entry point validates its arguments through these, so an error
names who refused (owner), which argument, what was expected and the value received.
Each returns the value normalised (int, float, bool, tuple) or raises GpunetValueError
(GpunetTypeError where the type itself is wrong: `number`, `boolean`).

    positive_int(owner, arg, value, minimum=1)   an int >= minimum
    integer(owner, arg, value, minimum=None)     an int (>= minimum), a wrong type named as such
    non_negative_int(owner, arg, value)          an int >= 0 (counts such as a schedule's t)
    int_pair(owner, arg, value, minimum=1)       an int or a pair of ints, as (h, w)
    real(owner, arg, value, low, high, ...)      a finite real in [low, high] (ends open on request)
    number(owner, arg, value, lo, hi, ...)       a real in a range (hyperparameters; a str is a type error)
    finite(owner, arg, value, positive=False)    a finite real (> 0 when positive)
    non_negative(owner, arg, value)              a finite real >= 0
    boolean(owner, arg, value)                   True or False
    one_of(owner, arg, value, choices)           one of the allowed values
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import GpunetTypeError, GpunetValueError


def positive_int(owner, arg, value, minimum=1) -> int:
    """An int >= minimum. A bool is not an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GpunetValueError(f"{owner}: {arg} expected an int >= {minimum}, got {value!r}")
    return int(value)


def integer(owner, arg, value, minimum=None) -> int:
    """An int (>= minimum when given); a value of another type is named with its type."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GpunetValueError(f"{owner}: {arg} expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise GpunetValueError(f"{owner}: {arg} expected an int >= {minimum}, got {value!r}")
    return int(value)


def non_negative_int(owner, arg, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise GpunetValueError(f"{owner}: {arg} expected a non-negative int, got {value!r}")
    return int(value)


def int_pair(owner, arg, value, minimum=1) -> tuple:
    """An int or a pair of ints (kernel_size, stride, padding) as a tuple (h, w)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise GpunetValueError(f"{owner}: {arg} expected an int or a pair of ints, got {value!r}")
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise GpunetValueError(f"{owner}: {arg} expected ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def real(owner, arg, value, low=-math.inf, high=math.inf, low_open=False, high_open=False) -> float:
    """A finite real in [low, high] (an end excluded when *_open)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low}", f"{high}" + (")" if high_open else "]")
        raise GpunetValueError(f"{owner}: {arg} expected a finite number in {lo}, {hi}, got {value!r}")
    return float(value)


def number(owner, arg, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    """`value` as a float in the range (NaN and ±inf refused); a non-number is a type error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GpunetTypeError(f"{owner}: {arg} expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if math.isnan(v) or below or above or math.isinf(v):
        left = "-inf" if lo is None else f"{'(' if lo_open else '['}{lo}"
        right = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
        raise GpunetValueError(f"{owner}: {arg} expected a number in {left}, {right}, got {value!r}")
    return v


def finite(owner, arg, value, positive=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise GpunetValueError(f"{owner}: {arg} expected a finite real number, got {value!r}")
    if positive and value <= 0:
        raise GpunetValueError(f"{owner}: {arg} expected a number > 0, got {value!r}")
    return float(value)


def non_negative(owner, arg, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0:
        raise GpunetValueError(f"{owner}: {arg} expected a finite number >= 0, got {value!r}")
    return float(value)


def boolean(owner, arg, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise GpunetTypeError(f"{owner}: {arg} expected True or False, got {value!r}")
    return bool(value)


def one_of(owner, arg, value, choices):
    """`value` when it is one of `choices` (compared with ==; unhashable values are refused too)."""
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise GpunetValueError(f"{owner}: {arg} expected one of {choices}, got {value!r}")
    return value
