"""Theorem 1 (paper sec. 4): vulnerability from metric misalignment.

Lagrangian adversary with penalty C on ||delta||^2. With v = x - y mu (the residual of a point
from its class mean) and the no-1/2 Mahalanobis loss  l(x) = v^T Sigma^-1 v,

    max_delta  l(x + delta) - C ||delta||^2

is bounded iff C > lambda_max(Sigma^-1) = 1/sigma_min(Sigma), and is attained at

    delta* = (C Sigma - I)^-1 v                 (docs/paper-notes.md sec. 5.1; derivations.py)

The same delta* solves the 1/2-NLL version max 1/2 l(x+delta) + const - (C/2)||delta||^2, so the
perturbation does not depend on the convention; the vulnerability does (docs/paper-notes.md
sec. 5.2, 8.8).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from foundation import checks as C
from theory.model import Array, CovarianceLike, GaussianModel, Spectrum, spectrum_of

VULNERABILITY_CONVENTIONS = ("paper", "half_nll", "penalized", "half_nll_penalized")
VULNERABILITY_METHODS = ("closed_form", "numeric", "monte_carlo")


def check_penalty(penalty: Any, spec: Spectrum, name: str = "Sigma") -> float:
    """C must exceed 1/sigma_min(Sigma) for the penalised inner maximisation to be bounded."""
    c = C.positive_float("penalty C", penalty)
    bound = 1.0 / spec.min
    if not c > bound:
        raise ValueError(
            f"penalty C={c:.6g} must exceed 1/sigma_min({name})={bound:.6g} for the inner "
            f"maximisation to be bounded"
        )
    return c


def worst_case_perturbation(model: GaussianModel, x: Any, y: Any, penalty: float) -> Array:
    """Maximiser delta* = (C Sigma - I)^-1 (x - y mu) of  l(x + delta) - C ||delta||^2.

    Claim (paper Thm. 1 proof; docs/paper-notes.md sec. 5.1): for the Gaussian NLL of ``model``
    and C > 1/sigma_min, the penalised inner problem is a concave quadratic with this unique
    maximiser, in either convention (no-1/2 loss with C||d||^2, or 1/2-NLL with (C/2)||d||^2).
    ``x`` is (d,) or (n, d), ``y`` a label or (n,) labels in {-1, +1}. Uses the model's cached
    eigendecomposition.
    """
    if not isinstance(model, GaussianModel):
        raise ValueError(f"model must be a GaussianModel; got {type(model).__name__}")
    spec = model.spectrum
    c = check_penalty(penalty, spec)
    x_arr = np.asarray(x, dtype=float)
    single = x_arr.ndim == 1
    x2 = np.atleast_2d(x_arr)
    if x2.ndim != 2 or x2.shape[1] != model.d:
        raise ValueError(f"x has shape {x_arr.shape}; expected ({model.d},) or (n, {model.d})")
    y_arr = np.asarray(y, dtype=float).reshape(-1)
    if y_arr.shape[0] == 1 and x2.shape[0] > 1:
        y_arr = np.full(x2.shape[0], y_arr[0])
    if y_arr.shape[0] != x2.shape[0]:
        raise ValueError(f"y has {y_arr.shape[0]} labels but x has {x2.shape[0]} rows")
    if not np.all(np.isin(y_arr, (-1.0, 1.0))):
        raise ValueError("y must hold labels in {-1, +1}")
    v = x2 - y_arr[:, None] * model.mu
    u = spec.to_eigenbasis(v) / (c * spec.values - 1.0)
    delta = spec.from_eigenbasis(u)
    return delta[0] if single else delta


def vulnerability_per_eigenvalue(s: Array, penalty: float, convention: str = "paper") -> Array:
    """Per-eigen-direction term of Theorem 1 for Sigma* eigenvalues ``s`` (all > 1/C).

    paper:               (Cs/(Cs-1))^2 - 1       half_nll:            half of it
    penalized:           1/(Cs-1)                half_nll_penalized:  half of it
    """
    C.one_of("convention", convention, VULNERABILITY_CONVENTIONS, what="a vulnerability convention")
    s = np.asarray(s, dtype=float)
    t = penalty * s - 1.0
    if convention in ("paper", "half_nll"):
        out = ((t + 1.0) / t) ** 2 - 1.0
    else:
        out = 1.0 / t
    return out / 2.0 if convention.startswith("half") else out


def vulnerability(
    sigma_star: CovarianceLike,
    penalty: float,
    convention: str = "paper",
    *,
    method: str = "closed_form",
    n_samples: int = 200_000,
    seed: int = 0,
) -> float:
    """Expected loss increase of the non-robust MLE (mu*, Sigma*) under the Lagrangian adversary.

    Claim (paper Thm. 1; docs/paper-notes.md sec. 5.2), with A = (C Sigma* - I)^-1 and
    C > 1/sigma_min(Sigma*):

    * ``convention="paper"`` (default): E[l(x+delta*) - l(x)] = tr[(I + A)^2] - d, with the no-1/2
      Mahalanobis loss l and the penalty term excluded (the paper's form);
    * ``"half_nll"``: the same with the 1/2-NLL and (C/2)||delta||^2: half of the paper's value;
    * ``"penalized"``: the penalised inner value included, E[max_d l(x+d) - C||d||^2 - l(x)]
      = tr[(C Sigma* - I)^-1];
    * ``"half_nll_penalized"``: half of ``"penalized"``.

    It does not depend on mu*, and at fixed trace it is minimised by an isotropic Sigma*.
    ``method``: ``"closed_form"`` (eigenvalues only), ``"numeric"`` (each eigen-direction's inner
    maximum found by scipy's bounded scalar optimiser rather than the formula for delta*, then
    E[v_i^2] = s_i used by homogeneity) or ``"monte_carlo"`` (``n_samples`` draws with the closed
    delta*; see :func:`theory.monte_carlo.vulnerability_mc` for the standard error).
    """
    C.one_of("convention", convention, VULNERABILITY_CONVENTIONS, what="a vulnerability convention")
    C.one_of("method", method, VULNERABILITY_METHODS, what="a vulnerability method")
    spec = spectrum_of(sigma_star, "sigma_star", vectors=False)
    c = check_penalty(penalty, spec, "Sigma*")
    if method == "closed_form":
        return float(np.sum(vulnerability_per_eigenvalue(spec.values, c, convention)))
    if method == "numeric":
        return _vulnerability_numeric(spec.values, c, convention)
    from theory.monte_carlo import vulnerability_mc

    return vulnerability_mc(spec, c, convention, n_samples=n_samples, seed=seed).mean


def _vulnerability_numeric(s: Array, c: float, convention: str) -> float:
    from scipy.optimize import minimize_scalar

    half = convention.startswith("half")
    penalised = convention.endswith("penalized")
    total = 0.0
    for si in np.asarray(s, dtype=float):
        v = np.sqrt(si)  # a residual with v^2 = E[v^2]; the objective is homogeneous of degree 2

        def neg(delta: float, si: float = si, v: float = v) -> float:
            return -((v + delta) ** 2 / si - c * delta**2)

        # the maximiser has the sign of v; bracket generously around the unpenalised scale
        hi = 10.0 * v * max(1.0, 1.0 / (c * si - 1.0))
        res = minimize_scalar(neg, bounds=(0.0, hi), method="bounded",
                              options={"xatol": 1e-12 * hi, "maxiter": 500})
        delta = float(res.x)
        gain = (v + delta) ** 2 / si - v**2 / si
        if penalised:
            gain -= c * delta**2
        total += gain / (2.0 if half else 1.0)
    return float(total)
