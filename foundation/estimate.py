"""The one Monte-Carlo estimate type of the toolkit, shared by ``theory`` and ``simulate``.

:class:`Estimate` is a mean with its standard error, sample count and seed. Every Monte-Carlo
route returns one: theory's NumPy estimators (:mod:`theory.monte_carlo`) and the simulation
engine (:mod:`simulate.estimate`, NumPy or CuPy) build it from their own arrays.

Sign convention (the only one in the toolkit): ``z_score(value) = (mean - value) / stderr``, the
disagreement of the estimate with ``value`` in standard errors, positive when the estimate is
above ``value``. Cross-check lines of ``simulate`` record it as ``z = (simulated - closed_form) /
stderr``; theory's report records ``max |z|``.

This module is on the lowest floor: it imports only the ground's checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from foundation import checks as C


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate: sample ``mean``, its standard error ``stderr``, ``n`` draws, ``seed``.

    ``stderr`` is the usual s/sqrt(n) with the unbiased sample standard deviation s (the draws are
    i.i.d. by construction wherever this class is used; see :meth:`from_moments`), or another
    documented standard error (e.g. the smoothed one of ``simulate.estimate_proportion``).
    """

    mean: float
    stderr: float
    n: int
    seed: int | None = None

    @classmethod
    def from_moments(cls, mean: float, std: float, n: int, seed: int | None = None) -> "Estimate":
        """The estimate of a mean from ``n`` i.i.d. draws with sample mean ``mean`` and unbiased
        sample standard deviation ``std``: stderr = std / sqrt(n)."""
        return cls(mean=float(mean), stderr=float(std) / math.sqrt(n), n=int(n), seed=seed)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation confidence interval at ``level`` (two-sided):
        mean -+ z stderr with z the (1 + level)/2 normal quantile (1.96 at 0.95)."""
        C.in_range("level", level, 0.0, 1.0, lo_open=True, hi_open=True)
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return (self.mean - z * self.stderr, self.mean + z * self.stderr)

    def z_score(self, value: float) -> float:
        """(mean - value) / stderr: the disagreement with ``value`` in standard errors
        (+-inf when stderr is 0 and they differ, 0 when they are equal)."""
        diff = self.mean - float(value)
        if self.stderr == 0.0:
            return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return diff / self.stderr

    def agrees_with(self, value: float, n_se: float = 5.0) -> bool:
        """|z_score(value)| <= n_se."""
        return abs(self.z_score(value)) <= n_se
