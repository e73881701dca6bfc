"""Local closed forms of the section-4 quantities the simulations are checked against.

theory/ is the reference implementation; these host-side NumPy twins exist so simulate/ never
depends on theory/ being importable, and the experiments check the two agree wherever theory/
provides the function (see :func:`simulate.experiments.theory_crosscheck`). Formulas from
paper-spec 5.1-5.4 (no-1/2 convention unless stated).
"""

from __future__ import annotations

import math

import numpy as np


def vulnerability_closed_form(sigma_star: np.ndarray, penalty: float) -> float:
    """Theorem 1: L_adv - L = tr[(I + (C Sigma* - I)^-1)^2] - d (no-1/2 Mahalanobis loss, penalty
    C||d||^2, increase measured without the penalty). The 1/2-NLL value is half of it."""
    s = np.linalg.eigvalsh(np.asarray(sigma_star, dtype=float))
    if not penalty * s.min() > 1:
        raise ValueError(
            f"penalty C={penalty!r} must exceed 1/sigma_min(Sigma)={1 / s.min():.6g} for the inner "
            "maximisation to be bounded"
        )
    return float(np.sum((penalty * s / (penalty * s - 1)) ** 2) - s.size)


def robust_eigenvalues(s: np.ndarray, lam: float) -> np.ndarray:
    """Theorem 2 per eigenvalue: r = s/2 + 1/lam + sqrt(s/lam + s^2/4)."""
    s = np.asarray(s, dtype=float)
    return s / 2 + 1 / lam + np.sqrt(s / lam + s**2 / 4)


def robust_covariance(sigma_star: np.ndarray, lam: float) -> np.ndarray:
    """Theorem 2: Sigma_r = Sigma*/2 + I/lam + sqrt(Sigma*/lam + Sigma*^2/4) (matrix functions)."""
    s, q = np.linalg.eigh(np.asarray(sigma_star, dtype=float))
    return (q * robust_eigenvalues(s, lam)) @ q.T


def mean_cosine(sigma: np.ndarray, mu: np.ndarray) -> float:
    """cos(mu, Sigma^-1 mu): alignment of the likelihood classifier's input gradient with mu."""
    g = np.linalg.solve(sigma, mu)
    return float(g @ mu / (np.linalg.norm(g) * np.linalg.norm(mu)))


def worst_case_cosine(sigma: np.ndarray) -> float:
    """Theorem 3 (Kantorovich): min_mu cos(mu, Sigma^-1 mu) = 2 sqrt(kappa)/(1 + kappa)."""
    s = np.linalg.eigvalsh(np.asarray(sigma, dtype=float))
    kappa = s[-1] / s[0]
    return 2 * math.sqrt(kappa) / (1 + kappa)


def best_fit_lambda(sigma_learned: np.ndarray, sigma_star: np.ndarray) -> tuple[float, float]:
    """The lam whose Sigma_r(lam) is closest (Frobenius) to ``sigma_learned``, and the relative
    residual ||Sigma_learned - Sigma_r(lam)||_F / ||Sigma_learned||_F. Used to place an l2-ball
    adversary (which has no single multiplier) on the Theorem-2 family."""
    from scipy.optimize import minimize_scalar

    def loss(log_lam: float) -> float:
        return float(np.linalg.norm(sigma_learned - robust_covariance(sigma_star, math.exp(log_lam))))

    res = minimize_scalar(loss, bounds=(-12.0, 12.0), method="bounded", options={"xatol": 1e-8})
    return math.exp(res.x), res.fun / float(np.linalg.norm(sigma_learned))
