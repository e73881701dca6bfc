"""Argument validation shared by the theory modules: every error names the argument, its value
and what would be valid."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_nonnegative(value: Any, name: str) -> float:
    """``value`` as a float, which must be finite and >= 0 (radii such as ``eps``)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a real number >= 0") from None
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    return out


def check_positive(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """``value`` as a float, which must be > 0 (and finite unless ``allow_inf``)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a real number > 0") from None
    if math.isnan(out) or out <= 0 or (math.isinf(out) and not allow_inf):
        valid = "> 0 (inf allowed)" if allow_inf else "a finite number > 0"
        raise ValueError(f"{name}={value!r} must be {valid}")
    return out


def check_norm(norm: str) -> str:
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm={norm!r} is not supported; valid: 'l2', 'linf'")
    return norm


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")
    return value


def as_vector(v: Any, name: str, d: int | None = None) -> np.ndarray:
    """A finite float vector of length ``d`` (when given)."""
    arr = np.asarray(v, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector; got an array of shape {arr.shape}")
    if d is not None and arr.shape[0] != d:
        raise ValueError(f"{name} has shape {arr.shape} but the model has dimension d={d}; "
                         f"{name} must have shape ({d},)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(arr)))} NaN/inf entries")
    return arr
