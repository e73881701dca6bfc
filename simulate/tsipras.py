"""The robust-vs-non-robust toy of Tsipras et al. (ICLR 2019, "Robustness may be at odds with
accuracy", section 2), simulated, with closed-form accuracies of any linear classifier.

Distribution: y ~ U{-1, +1}; x_0 = y with probability p, -y otherwise (the robust feature);
x_1..x_d ~ N(eta y, 1) i.i.d. (weakly correlated, non-robust features; Tsipras take eta = 2/sqrt(d)).
An linf adversary with eps >= 2 eta shifts every weak feature to N(-eta y, 1), reversing their
correlation, while x_0 (values +-1) keeps its sign for any eps < 1.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from foundation import checks as C
from simulate.backend import (
    Array,
    backend_of,
    rng_xp,
    to_float,
)
from simulate.linear import dual_norm

_PHI = NormalDist().cdf


def sample_tsipras(n: int, *, p: float, eta: float, d: int, rng: Any) -> tuple[Array, Array]:
    """Draw n pairs: x of shape (n, d+1) (column 0 robust), y of shape (n,) in {-1, +1}."""
    C.int_at_least("n", n, 2)
    C.probability("p", p)
    C.positive_float("eta", eta)
    C.positive_int("d", d)
    xp = rng_xp(rng)
    y = xp.where(rng.random(n) < 0.5, -1.0, 1.0)
    x0 = xp.where(rng.random(n) < p, y, -y)
    weak = eta * y[:, None] + rng.standard_normal((n, d))
    return xp.concatenate([x0[:, None], weak], axis=1), y


def tsipras_accuracy(
    w: Array, b: float, *, p: float, eta: float, eps: float = 0.0, norm: str = "linf"
) -> float:
    """Closed-form accuracy of sign(w^T x + b) under the worst ||d||_norm <= eps perturbation.

    Given y, the margin is y(w^T (x + d) + b) = +-w_0 + eta 1^T w_rest + y b + N(0, ||w_rest||^2)
    - eps ||w||_* with +w_0 w.p. p. Averaging over y = +-1 and the x_0 coin:
    acc = 1/2 sum_y [p Phi((w_0 + c + y b)/s) + (1-p) Phi((-w_0 + c + y b)/s)],
    c = eta 1^T w_rest - eps ||w||_*, s = ||w_rest||_2 (a step function when s = 0).
    """
    C.probability("p", p)
    C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    xp = backend_of(w)
    w0 = to_float(w[0])
    rest = w[1:]
    c = eta * to_float(rest.sum()) - eps * dual_norm(w, norm)
    s = to_float(xp.sqrt((rest * rest).sum()))
    cdf = (lambda m: _PHI(m / s)) if s > 0 else (lambda m: float(m > 0))
    return 0.5 * sum(p * cdf(w0 + c + yb) + (1 - p) * cdf(-w0 + c + yb) for yb in (b, -b))


def robust_feature_share(w: Array, *, p: float, eta: float) -> float:
    """Fraction of the classifier's expected margin E[y w^T x] that comes from the robust feature:
    w_0 (2p - 1) / (w_0 (2p - 1) + eta 1^T w_rest)."""
    w0 = to_float(w[0]) * (2 * p - 1)
    rest = eta * to_float(w[1:].sum())
    total = w0 + rest
    return w0 / total if total != 0 else 0.0


def tsipras_tradeoff_bound(std_accuracy: float, *, p: float) -> float:
    """Tsipras et al. Theorem 2.1: a classifier with standard accuracy 1 - delta has linf robust
    accuracy at most p/(1-p) * delta against eps >= 2 eta (for p >= 1/2)."""
    C.probability("p", p)
    if p >= 1:
        return 1.0
    return min(1.0, p / (1 - p) * (1 - std_accuracy))


def bayes_standard_weights(*, p: float, eta: float, d: int) -> tuple[float, float]:
    """The Bayes-optimal (log-likelihood-ratio) weights (w_0, w_j): w_0 = log(p/(1-p)),
    w_j = 2 eta; log p(x|y=1)/p(x|y=-1) = w_0 x_0 + 2 eta sum_j x_j."""
    C.probability("p", p)
    C.finite("eta", eta)
    w0 = math.log(p / (1 - p)) if 0 < p < 1 else math.inf
    return w0, 2 * eta
