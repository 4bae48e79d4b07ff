"""Argument checks shared by the federation modules; each failure is an UnlearnError."""

from __future__ import annotations

import math
import numbers

from ..errors import UnlearnError


def check_int(name: str, value, low: int | None = None) -> int:
    """``value`` as an int (bools refused), at least ``low`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UnlearnError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise UnlearnError(f"{name} must be >= {low}, got {value}")
    return value


def check_seed(value, name: str = "seed") -> int:
    """A seed for numpy's ``default_rng``: a non-negative int."""
    return check_int(name, value, low=0)


def check_float(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UnlearnError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UnlearnError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise UnlearnError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise UnlearnError(f"{name} must be <= {high}, got {value}")
    return value
