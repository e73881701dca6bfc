"""Section 2 of the paper: useful and robustly useful features, for linear features.

A linear feature f(x) = w . x / sqrt(w^T Cov(x) w) is normalised to mean 0 and variance 1 under
the model (x has mean 0; Cov(x) = Sigma + mu mu^T). Then (paper sec. 2; Goh, Distill resp. 3):

    rho(f)   = E[y f(x)]                      = w . mu / ||w||_Cov(x)
    gamma(f) = E[inf_{||d|| <= eps} y f(x+d)] = rho - eps ||w||_* / ||w||_Cov(x)

with ||.||_* the dual norm (l2 -> l2, linf -> l1). For the classifier sign(w . x + b), with
m = w . mu and s = sqrt(w^T Sigma w), the accuracy is 1/2 [Phi((m + b)/s) + Phi((m - b)/s)], and
against an adversary of radius eps each margin loses eps ||w||_*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtr

from foundation import checks as C
from theory._checks import as_vector
from theory.model import Array, GaussianModel

FEATURE_METHODS = ("closed_form", "monte_carlo")


def dual_norm(w: Array, norm: str) -> float:
    """||w||_* for the perturbation norm: l2 -> ||w||_2, linf -> ||w||_1."""
    C.norm("norm", norm)
    return float(np.linalg.norm(w, 2 if norm == "l2" else 1))


def _w(w: Any, model: GaussianModel) -> Array:
    if not isinstance(model, GaussianModel):
        raise ValueError(f"model must be a GaussianModel; got {type(model).__name__}")
    arr = as_vector(w, "w", model.d)
    if not np.any(arr):
        raise ValueError("w must be nonzero: the zero feature cannot be normalised to unit variance")
    return arr


def _feature_scale(w: Array, model: GaussianModel) -> float:
    return float(np.sqrt(w @ model.sigma @ w + (w @ model.mu) ** 2))


def usefulness(w: Any, model: GaussianModel, *, method: str = "closed_form",
               n_samples: int = 200_000, seed: int = 0) -> float:
    """rho = E[y f(x)] of the unit-variance linear feature f(x) prop. to w . x (paper sec. 2)."""
    C.one_of("method", method, FEATURE_METHODS, what="a feature method")
    arr = _w(w, model)
    if method == "monte_carlo":
        from theory.monte_carlo import usefulness_mc

        return usefulness_mc(arr, model, n_samples=n_samples, seed=seed).mean
    return float(arr @ model.mu / _feature_scale(arr, model))


def robust_usefulness(w: Any, model: GaussianModel, eps: float, norm: str = "l2", *,
                      method: str = "closed_form", n_samples: int = 200_000,
                      seed: int = 0) -> float:
    """gamma = E[inf_{||delta|| <= eps} y f(x + delta)] = rho - eps ||w||_* / ||w||_Cov(x).

    Claim (paper sec. 2 definition; Goh, Distill response 3): the inner infimum of a linear
    feature is attained at delta = -eps y (dual-norm direction of w), so robustness costs exactly
    eps ||w||_* / ||w||_Cov(x). ``method="monte_carlo"`` applies that attack to samples.
    """
    eps = C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    C.one_of("method", method, FEATURE_METHODS, what="a feature method")
    arr = _w(w, model)
    if method == "monte_carlo":
        from theory.monte_carlo import robust_usefulness_mc

        return robust_usefulness_mc(arr, model, eps, norm, n_samples=n_samples, seed=seed).mean
    scale = _feature_scale(arr, model)
    return float((arr @ model.mu - eps * dual_norm(arr, norm)) / scale)


def linear_accuracy(w: Any, b: float, model: GaussianModel, *, method: str = "closed_form",
                    n_samples: int = 200_000, seed: int = 0) -> float:
    """P[sign(w . x + b) = y] under the model: 1/2 [Phi((m+b)/s) + Phi((m-b)/s)],
    m = w . mu, s = sqrt(w^T Sigma w). With w = Sigma^-1 mu, b = 0 this is the Bayes accuracy."""
    return linear_robust_accuracy(w, b, model, 0.0, "l2", method=method,
                                  n_samples=n_samples, seed=seed)


def linear_robust_accuracy(w: Any, b: float, model: GaussianModel, eps: float,
                           norm: str = "l2", *, method: str = "closed_form",
                           n_samples: int = 200_000, seed: int = 0) -> float:
    """P[y (w . (x + delta) + b) > 0 for every ||delta|| <= eps] under the model.

    The worst delta lowers the margin y(w . x + b) by eps ||w||_*, so the robust accuracy is
    1/2 [Phi((m + b - eps ||w||_*)/s) + Phi((m - b - eps ||w||_*)/s)]. ``method="monte_carlo"``
    attacks samples with delta = -eps y (dual direction of w) and counts survivors.
    """
    eps = C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    C.one_of("method", method, FEATURE_METHODS, what="a feature method")
    arr = _w(w, model)
    bias = C.finite("b", b)
    if method == "monte_carlo":
        from theory.monte_carlo import linear_robust_accuracy_mc

        return linear_robust_accuracy_mc(arr, bias, model, eps, norm,
                                         n_samples=n_samples, seed=seed).mean
    m = float(arr @ model.mu)
    s = float(np.sqrt(arr @ model.sigma @ arr))
    shift = eps * dual_norm(arr, norm)
    return float(0.5 * (ndtr((m + bias - shift) / s) + ndtr((m - bias - shift) / s)))
