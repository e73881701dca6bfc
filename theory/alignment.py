"""Theorem 3 (paper sec. 4): gradient alignment.

The likelihood classifier of a Gaussian model with covariance Sigma is monotone in w . x with
w = Sigma^-1 mu, so its input gradient points along Sigma^-1 mu. Its cosine with the class-mean
direction mu is at worst (Kantorovich inequality, over all mu)

    min_mu cos(mu, Sigma^-1 mu) = 2 sqrt(kappa) / (1 + kappa),    kappa = cond(Sigma),

attained at mu = sqrt(s_min) e_min + sqrt(s_max) e_max (eigenvectors of the extreme eigenvalues).
Since cond(Sigma_r) <= cond(Sigma*) (Theorem 2), the robust model's worst case is larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from foundation import checks as C
from theory._checks import as_vector
from theory.model import Array, CovarianceLike, spectrum_of

GRADIENT_ALIGNMENT_METHODS = ("closed_form", "numeric")


@dataclass(frozen=True)
class GradientAlignment:
    """worst_case: min over mu of cos(mu, Sigma^-1 mu); cosine: its value at the given mu
    (None when no mu was given); condition_number: kappa = cond(Sigma)."""

    worst_case: float
    cosine: float | None
    condition_number: float


def kantorovich_cosine(kappa: Any) -> Array | float:
    """2 sqrt(kappa) / (1 + kappa), the Kantorovich bound, for condition number(s) kappa >= 1."""
    k = np.asarray(kappa, dtype=float)
    if np.any(~np.isfinite(k)) or np.any(k < 1):
        raise ValueError(f"kappa={kappa!r} must be finite and >= 1 (a condition number)")
    out = 2.0 * np.sqrt(k) / (1.0 + k)
    return float(out) if out.ndim == 0 else out


def worst_case_mean_direction(sigma: CovarianceLike) -> Array:
    """A unit mu attaining the Kantorovich bound: prop. to sqrt(s_min) e_min + sqrt(s_max) e_max."""
    spec = spectrum_of(sigma, "sigma")
    v = np.sqrt(spec.min) * spec.vectors[:, 0] + np.sqrt(spec.max) * spec.vectors[:, -1]
    return v / np.linalg.norm(v)


def gradient_alignment(
    sigma: CovarianceLike, mu: Any = None, *, method: str = "closed_form"
) -> GradientAlignment:
    """Cosine between the classifier's input gradient Sigma^-1 mu and the mean direction mu.

    Claim (paper Thm. 3; docs/paper-notes.md sec. 5.4): ``worst_case`` = min_mu cos(mu, Sigma^-1 mu) =
    2 sqrt(kappa)/(1+kappa) with kappa = cond(Sigma) (``method="closed_form"``, eigenvalues only;
    ``method="numeric"`` minimises the cosine over mu with scipy instead, for small d). With
    ``mu`` given, ``cosine`` is the actual cos(mu, Sigma^-1 mu) (a Cholesky solve, or the cached
    spectrum). Pass Sigma* for the standard model and Sigma_r for the robust one.
    """
    C.one_of("method", method, GRADIENT_ALIGNMENT_METHODS, what="a gradient-alignment method")
    spec = spectrum_of(sigma, "sigma", vectors=method == "numeric")
    kappa = spec.condition_number
    if method == "closed_form":
        worst = float(kantorovich_cosine(kappa))
    else:
        worst = _worst_cosine_numeric(spec.matrix)
    cosine = None
    if mu is not None:
        m = as_vector(mu, "mu", spec.d)
        if not np.any(m):
            raise ValueError("mu must be nonzero: the cosine with the zero vector is undefined")
        g = spec.solve(m)
        cosine = float(m @ g / (np.linalg.norm(m) * np.linalg.norm(g)))
    return GradientAlignment(worst_case=worst, cosine=cosine, condition_number=kappa)


def _worst_cosine_numeric(sigma: Array) -> float:
    from scipy.optimize import minimize

    prec = np.linalg.inv(sigma)
    d = sigma.shape[0]

    def cos(m: Array) -> float:
        g = prec @ m
        return float(m @ g / (np.linalg.norm(m) * np.linalg.norm(g)))

    rng = np.random.default_rng(0)
    best = 1.0
    for _ in range(8):
        res = minimize(cos, rng.standard_normal(d), method="Nelder-Mead" if d == 1 else "BFGS",
                       options={"gtol": 1e-12} if d > 1 else {})
        best = min(best, float(res.fun))
    return best
