"""The section-4 closed forms the simulations are checked against: theory/'s, under simulate's names.

theory/ is the one implementation of every formula (docs/paper-notes.md sec. 5.1-5.4, no-1/2
convention unless stated); this module only adapts it to the (sigma_star, ...) array signatures
the experiments and figures use, on host NumPy arrays. Nothing here is a second copy of a formula:

* :func:`vulnerability_closed_form` = :func:`theory.vulnerability` (``convention="paper"``);
* :func:`robust_eigenvalues` / :func:`robust_covariance` = :func:`theory.robust_eigenvalues` /
  :func:`theory.robust_covariance` (Theorem 2, the cancellation-free form);
* :func:`mean_cosine` / :func:`worst_case_cosine` = :func:`theory.gradient_alignment`'s
  ``cosine`` / ``worst_case`` (Theorem 3, the Kantorovich bound);
* :func:`best_fit_lambda` is simulate's own placement of a learned Sigma on theory's Theorem-2
  family (Frobenius least squares; theory's :func:`theory.spectral_lam` is the log-eigenvalue fit).
"""

from __future__ import annotations

import math

import numpy as np

from theory.alignment import gradient_alignment
from theory.misalignment import check_penalty, vulnerability_per_eigenvalue
from theory.model import Spectrum
from theory.robust_learning import robust_covariance, robust_eigenvalues

__all__ = ["best_fit_lambda", "mean_cosine", "robust_covariance", "robust_eigenvalues",
           "vulnerability_closed_form", "worst_case_cosine"]


def vulnerability_closed_form(sigma_star: np.ndarray, penalty: float) -> float:
    """Theorem 1 (theory's): L_adv - L = tr[(I + (C Sigma* - I)^-1)^2] - d (no-1/2 Mahalanobis
    loss, penalty C||d||^2, increase measured without the penalty). The 1/2-NLL value is half of it.

    The same number as ``theory.vulnerability(sigma_star, penalty, "paper")``; the bound on C is
    theory's check, named for simulate's Sigma."""
    spec = Spectrum.of(sigma_star, "Sigma", vectors=False)
    c = check_penalty(penalty, spec, "Sigma")
    return float(np.sum(vulnerability_per_eigenvalue(spec.values, c, "paper")))


def mean_cosine(sigma: np.ndarray, mu: np.ndarray) -> float:
    """cos(mu, Sigma^-1 mu): alignment of the likelihood classifier's input gradient with mu
    (``theory.gradient_alignment(sigma, mu).cosine``)."""
    return float(gradient_alignment(sigma, mu).cosine)


def worst_case_cosine(sigma: np.ndarray) -> float:
    """Theorem 3 (Kantorovich): min_mu cos(mu, Sigma^-1 mu) = 2 sqrt(kappa)/(1 + kappa)
    (``theory.gradient_alignment(sigma).worst_case``)."""
    return gradient_alignment(sigma).worst_case


def best_fit_lambda(sigma_learned: np.ndarray, sigma_star: np.ndarray) -> tuple[float, float]:
    """The lam whose Sigma_r(lam) is closest (Frobenius) to ``sigma_learned``, and the relative
    residual ||Sigma_learned - Sigma_r(lam)||_F / ||Sigma_learned||_F. Used to place an l2-ball
    adversary (which has no single multiplier) on the Theorem-2 family."""
    from scipy.optimize import minimize_scalar

    spec = Spectrum.of(sigma_star, "sigma_star")  # one eigendecomposition for every lam tried

    def loss(log_lam: float) -> float:
        return float(np.linalg.norm(sigma_learned - robust_covariance(spec, math.exp(log_lam))))

    res = minimize_scalar(loss, bounds=(-12.0, 12.0), method="bounded", options={"xatol": 1e-8})
    return math.exp(res.x), res.fun / float(np.linalg.norm(sigma_learned))
