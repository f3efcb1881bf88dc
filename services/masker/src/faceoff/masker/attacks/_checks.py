"""Parameter checks shared by the losses and attacks: ``ValueError`` naming the parameter."""

from __future__ import annotations

import numpy as np

_NUMBER = (int, float, np.integer, np.floating)


def check_positive(name: str, value: object) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_non_negative(name: str, value: object) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def check_range(name: str, value: object, low: float, high: float) -> float:
    """``value`` as a float, or ``ValueError`` unless low < value <= high."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ValueError(f"{name} must be a number in ({low}, {high}], got {value!r}")
    if not np.isfinite(value) or not low < value <= high:
        raise ValueError(f"{name} must be in ({low}, {high}], got {value}")
    return float(value)


def check_fraction(name: str, value: object) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not np.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def check_count(name: str, value: object, high: int) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer in 1..high."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in 1..{high}, got {value!r}")
    if not 1 <= value <= high:
        raise ValueError(f"{name} must be in 1..{high}, got {value}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool, or ``ValueError`` unless it is one."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)
