"""Monte-Carlo estimates as small frozen dataclasses (never bare floats), from arrays of either
backend.

The class is the toolkit's one :class:`~foundation.estimate.Estimate` (shared with theory/),
re-exported here: ``z_score(value) = (mean - value) / stderr``, ``ci(level)``, ``agrees_with``.
"""

from __future__ import annotations

import math
from typing import Any

from foundation import checks as C
from foundation.estimate import Estimate
from simulate.backend import backend_of, to_float

__all__ = ["Estimate", "estimate", "estimate_proportion"]


def estimate(samples: Any, seed: int | None = None) -> Estimate:
    """Estimate the mean of i.i.d. ``samples`` (1-D array on either backend, n >= 2)."""
    xp = backend_of(samples)
    s = xp.asarray(samples, dtype=xp.float64).ravel()
    C.int_at_least("samples", int(s.shape[0]), 2)
    n = int(s.shape[0])
    return Estimate.from_moments(to_float(s.mean()), to_float(s.std(ddof=1)), n, seed)


def estimate_proportion(successes: Any, seed: int | None = None) -> Estimate:
    """Estimate a probability from 0/1 outcomes.

    The stderr is sqrt(q(1-q)/n) with the Laplace-smoothed q = (k+1)/(n+2), so an observed 0 or 1
    still carries the sampling error it has (instead of a zero stderr).
    """
    xp = backend_of(successes)
    s = xp.asarray(successes, dtype=xp.float64).ravel()
    n = int(s.shape[0])
    C.int_at_least("successes", n, 2)
    p = to_float(s.mean())
    q = (p * n + 1.0) / (n + 2.0)
    return Estimate(mean=p, stderr=math.sqrt(q * (1 - q) / n), n=n, seed=seed)
