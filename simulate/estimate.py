"""Monte-Carlo estimates as small frozen dataclasses (never bare floats)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simulate.backend import backend_of, check_sample_size, to_float


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate: sample ``mean``, its standard error ``stderr``, ``n`` draws, ``seed``.

    ``stderr`` is the usual s/sqrt(n) with the unbiased sample standard deviation s (the draws are
    i.i.d. by construction wherever this class is used).
    """

    mean: float
    stderr: float
    n: int
    seed: int | None = None

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation confidence interval at ``level`` (two-sided)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level={level!r} must lie in (0, 1)")
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return (self.mean - z * self.stderr, self.mean + z * self.stderr)

    def z_score(self, value: float) -> float:
        """(mean - value) / stderr: the disagreement with ``value`` in standard errors."""
        diff = self.mean - float(value)
        if self.stderr == 0.0:
            return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return diff / self.stderr

    def agrees_with(self, value: float, n_se: float = 5.0) -> bool:
        return abs(self.z_score(value)) <= n_se


def estimate(samples: Any, seed: int | None = None) -> Estimate:
    """Estimate the mean of i.i.d. ``samples`` (1-D array on either backend, n >= 2)."""
    xp = backend_of(samples)
    s = xp.asarray(samples, dtype=xp.float64).ravel()
    check_sample_size("samples", int(s.shape[0]))
    n = int(s.shape[0])
    return Estimate(
        mean=to_float(s.mean()), stderr=to_float(s.std(ddof=1)) / math.sqrt(n), n=n, seed=seed
    )


def estimate_proportion(successes: Any, seed: int | None = None) -> Estimate:
    """Estimate a probability from 0/1 outcomes.

    The stderr is sqrt(q(1-q)/n) with the Laplace-smoothed q = (k+1)/(n+2), so an observed 0 or 1
    still carries the sampling error it has (instead of a zero stderr).
    """
    xp = backend_of(successes)
    s = xp.asarray(successes, dtype=xp.float64).ravel()
    n = int(s.shape[0])
    check_sample_size("successes", n)
    p = to_float(s.mean())
    q = (p * n + 1.0) / (n + 2.0)
    return Estimate(mean=p, stderr=math.sqrt(q * (1 - q) / n), n=n, seed=seed)
