"""Theorem 2 (paper sec. 4): robust learning combines the data metric with the adversary's.

Lagrangian form (docs/paper-notes.md sec. 5.3). With multiplier lam on ||delta||^2 and the no-1/2
loss, the robust population objective over Sigma (mu = mu* is optimal) is

    R_lam(Sigma) = lam tr[(lam Sigma - I)^-1 Sigma*] + log det Sigma,     lam Sigma > I,

whose minimiser shares Sigma*'s eigenvectors and has eigenvalues (stationarity, derivations.py)

    r^2 - (s + 2/lam) r + 1/lam^2 = 0   =>   r = s/2 + 1/lam + sqrt(s/lam + s^2/4),

i.e.  Sigma_r = Sigma*/2 + I/lam + sqrt(Sigma*/lam + Sigma*^2/4)  (matrix square root).
The l2-ball version of the problem (radius eps) is solved numerically by
:func:`theory.robust_fit.fit_robust`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from foundation import checks as C
from theory.model import Array, CovarianceLike, spectrum_of

ROBUST_COVARIANCE_METHODS = ("closed_form", "numeric")


def robust_eigenvalues(s: Any, lam: float) -> Array:
    """r(s, lam) = s/2 + 1/lam + sqrt(s/lam + s^2/4), elementwise (Theorem 2, per eigenvalue).

    ``lam=inf`` returns ``s`` (the non-robust limit). Written to stay accurate for large lam.
    """
    lam = C.positive_float("lam", lam, allow_inf=True)
    s = np.asarray(s, dtype=float)
    if np.isinf(lam):
        return s.copy()
    inv = 1.0 / lam
    # s/2 + sqrt(s^2/4 + s/lam) = s + (s/lam) / (s/2 + sqrt(s^2/4 + s/lam))  (no cancellation)
    root = np.sqrt(s * s / 4.0 + s * inv)
    return s + inv + (s * inv) / (s / 2.0 + root)


def robust_covariance(
    sigma_star: CovarianceLike,
    lam: float,
    *,
    method: str = "closed_form",
    tol: float = 1e-10,
) -> Array:
    """Covariance learned by robust maximum likelihood (paper sec. 4, Theorem 2).

    Sigma_r = Sigma*/2 + I/lam + sqrt(Sigma*/lam + Sigma*^2/4)   (matrix square root).

    lam > 0 is the Lagrange multiplier of the l2 adversary (penalty lam ||delta||^2 on the no-1/2
    loss, or (lam/2)||delta||^2 on the 1/2-NLL: the 1/2 factors cancel). lam -> inf gives Sigma*;
    small lam pulls Sigma_r toward a multiple of I (the adversary's metric), so
    cond(Sigma_r) <= cond(Sigma*). ``method="closed_form"`` uses one eigendecomposition (reused
    if ``sigma_star`` is a GaussianModel or Spectrum); ``method="numeric"`` minimises
    :func:`robust_objective` directly over all SPD Sigma with lam Sigma > I (BFGS on a Cholesky
    parametrisation; for small d, as a cross-check).
    """
    C.one_of("method", method, ROBUST_COVARIANCE_METHODS, what="a robust-covariance method")
    lam = C.positive_float("lam", lam, allow_inf=True)
    spec = spectrum_of(sigma_star, "sigma_star")
    if method == "closed_form":
        return spec.apply(lambda s: robust_eigenvalues(s, lam))
    if np.isinf(lam):
        return np.array(spec.matrix, copy=True)
    return _robust_covariance_numeric(np.asarray(spec.matrix), lam, tol)


def robust_objective(sigma: Any, sigma_star: Any, lam: float) -> float:
    """R_lam(Sigma) = lam tr[(lam Sigma - I)^-1 Sigma*] + log det Sigma (no-1/2 convention).

    The population value (up to the constant -E[l(x)]-free terms) of the Lagrangian robust NLL
    E[max_delta l(x+delta; mu*, Sigma) - lam ||delta||^2]; +inf where lam Sigma - I is not PD.
    """
    lam = C.positive_float("lam", lam)
    sigma = np.asarray(sigma, dtype=float)
    b = lam * sigma - np.eye(sigma.shape[0])
    try:
        cb = np.linalg.cholesky(b)
        cs = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return float("inf")
    x = np.linalg.solve(cb, np.asarray(sigma_star, dtype=float))
    tr = np.trace(np.linalg.solve(cb.T, x))
    return float(lam * tr + 2.0 * np.sum(np.log(np.diag(cs))))


def _robust_covariance_numeric(sigma_star: Array, lam: float, tol: float) -> Array:
    from scipy.optimize import minimize

    d = sigma_star.shape[0]
    eye = np.eye(d)
    tril = np.tril_indices(d)
    diag_pos = np.array([i for i, (r, c) in enumerate(zip(*tril)) if r == c])

    def unpack(theta: Array) -> Array:
        L = np.zeros((d, d))
        L[tril] = theta
        L[np.diag_indices(d)] = np.exp(np.diag(L))
        return L

    def fun(theta: Array) -> tuple[float, Array]:
        L = unpack(theta)
        sigma = eye / lam + L @ L.T  # lam Sigma - I = lam L L^T > 0 by construction
        binv = np.linalg.inv(lam * L @ L.T)
        sinv = np.linalg.inv(sigma)
        val = lam * np.trace(binv @ sigma_star) + np.linalg.slogdet(sigma)[1]
        g_sigma = -lam**2 * binv @ sigma_star @ binv + sinv
        g_sigma = (g_sigma + g_sigma.T) / 2
        g_L = 2.0 * g_sigma @ L
        grad = g_L[tril]
        grad[diag_pos] *= np.diag(L)
        return float(val), grad

    L0 = np.linalg.cholesky(sigma_star)
    theta0 = L0[tril].copy()
    theta0[diag_pos] = np.log(np.diag(L0))
    res = minimize(fun, theta0, jac=True, method="BFGS", options={"gtol": tol, "maxiter": 20000})
    L = unpack(res.x)
    out = eye / lam + L @ L.T
    return (out + out.T) / 2
