"""Array validation shared by the theory modules: every error names the argument, its value
and what would be valid. Scalar checks (radii, multipliers, sample sizes, choices, the threat-model
norm) are the ground's one family, :mod:`foundation.checks`."""

from __future__ import annotations

from typing import Any

import numpy as np


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
