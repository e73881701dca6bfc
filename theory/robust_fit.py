"""Robust maximum likelihood with a real l2-ball adversary (paper sec. 4, Theorem 2 / Figure 4).

Objective (no-1/2 convention, per sample i with residual v_i = x_i - y_i mu):

    F(mu, Sigma) = mean_i max_{||delta_i||_2 <= eps} (v_i + delta_i)^T Sigma^-1 (v_i + delta_i)
                   + log det Sigma,

i.e. twice the 1/2-NLL robust objective up to a constant. Each inner maximum is a trust-region
problem solved exactly (:mod:`theory.trust_region`). In the natural parameters (eta = Sigma^-1 mu,
P = Sigma^-1) the Gaussian NLL is jointly convex and a pointwise maximum of convex functions is
convex, so F has no spurious stationary points. By Danskin's theorem the gradient of F is the
gradient of the NLL at the perturbed points x_i + delta_i*, so F is stationary exactly when
(mu, Sigma) is the plain MLE of the perturbed sample. The solver iterates that fixed point
(an EM-like step: adversary, then MLE of the perturbed data), with a backtracking line search in
(eta, P) that makes F decrease monotonically (the step direction is a descent direction because
tr(SP) + tr((SP)^-1) >= 2d).

Effective multiplier. The per-sample secular multiplier nu_i is the penalty at which the Lagrangian
adversary of Theorem 2 would pick the same delta_i. ``lam_multiplier`` is the mean of nu_i at the
optimum; ``lam_spectral`` is the lam whose closed form Sigma_r(lam) best fits the learned Sigma
(least squares on log eigenvalues, in the eigenbasis of the eps = 0 fit of the same sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from foundation import checks as C
from theory.model import Array, GaussianModel
from theory.robust_learning import robust_eigenvalues
from theory.trust_region import trust_region_eig

LAM_METHODS = ("multiplier", "spectral")


@dataclass(frozen=True)
class RobustFit:
    """Result of :func:`fit_robust`.

    mu, sigma: the learned parameters. lam: the effective multiplier chosen by ``lam_method``
    (``lam_multiplier`` = mean secular multiplier, ``lam_spectral`` = log-eigenvalue fit of the
    closed form); both are inf at eps = 0. reference_sigma: the eps = 0 MLE of the same sample
    (the Sigma* the closed form is applied to). stationarity: relative fixed-point residual
    (zero exactly at a stationary point). history: objective per iteration (non-increasing).
    """

    eps: float
    mu: Array
    sigma: Array
    lam: float
    lam_multiplier: float
    lam_multiplier_median: float
    lam_spectral: float
    lam_method: str
    objective: float
    stationarity: float
    iterations: int
    converged: bool
    n_samples: int
    seed: int | None
    reference_sigma: Array = field(repr=False)
    history: tuple[float, ...] = field(repr=False)


def _inner(mu: Array, sigma: Array, x: Array, y: Array, eps: float):
    s, q = scipy.linalg.eigh(sigma, check_finite=False)
    if s[0] <= 0:
        return np.inf, None, None
    p = 1.0 / s[::-1]  # precision eigenvalues, ascending
    qp = q[:, ::-1]
    u = (x - y[:, None] * mu) @ qp
    de, nu, val = trust_region_eig(p, u, eps)
    return float(np.mean(val) + np.sum(np.log(s))), de @ qp.T, nu


def _mle(x: Array, y: Array, mu: Array, fit_mean: bool) -> tuple[Array, Array]:
    mu_new = np.mean(y[:, None] * x, axis=0) if fit_mean else mu
    r = x - y[:, None] * mu_new
    sig = r.T @ r / x.shape[0]
    return mu_new, (sig + sig.T) / 2


def fit_robust(
    model: GaussianModel,
    eps: float,
    *,
    n_samples: int = 20_000,
    seed: int | None = 0,
    x: Any = None,
    y: Any = None,
    fit_mean: bool = True,
    lam_method: str = "multiplier",
    max_iter: int = 500,
    tol: float = 1e-7,
    ftol: float = 1e-9,
    patience: int = 10,
    init: RobustFit | None = None,
    memory: int = 5,
) -> RobustFit:
    """Solve robust maximum likelihood against the exact l2 adversary of radius ``eps``.

    Claim checked (paper Thm. 2, docs/paper-notes.md sec. 5.3 / 5.5): the learned mean stays mu*
    (up to sampling) and the learned covariance moves from Sigma* toward isotropy as eps grows; the
    effective multiplier lam relates it to the closed form Sigma_r(lam). The sample is
    ``n_samples`` draws from ``model`` with ``seed`` (or the given ``x``, ``y``); the same draws
    are used for every iteration. ``init`` warm-starts from a previous fit (e.g. the neighbouring
    eps of a sweep). ``memory`` > 0 enables Anderson acceleration of the fixed-point map with that
    many past iterates (a candidate is used only if it keeps Sigma PD and lowers the objective).
    Stops when the fixed-point residual is below ``tol`` or the objective has stopped decreasing
    (relative ``ftol`` over ``patience`` iterations; with n samples the objective has kinks that
    leave a residual of order eps^2/n). Raises ``RuntimeError`` if neither happens in
    ``max_iter`` iterations.
    """
    if not isinstance(model, GaussianModel):
        raise ValueError(f"model must be a GaussianModel; got {type(model).__name__}")
    eps = C.non_negative_float("eps", eps)
    C.one_of("lam_method", lam_method, LAM_METHODS, what="a lam method")
    if x is None:
        C.int_at_least("n_samples", n_samples, model.d + 1)  # d + 1 samples: a nonsingular Sigma_hat
        xs, ys = model.sample(int(n_samples), seed)
    else:
        xs = np.asarray(x, dtype=float)
        ys = np.asarray(y, dtype=float).reshape(-1)
        if xs.ndim != 2 or xs.shape[1] != model.d or ys.shape[0] != xs.shape[0]:
            raise ValueError(f"x must be (n, {model.d}) and y (n,); got {xs.shape} and {ys.shape}")
        if not np.all(np.isin(ys, (-1.0, 1.0))):
            raise ValueError("y must hold labels in {-1, +1}")
        seed = None
    n = xs.shape[0]

    mu0, sig0 = _mle(xs, ys, model.mu, fit_mean)  # eps = 0 fit: the reference Sigma*
    if init is not None:
        mu, sigma = np.array(init.mu, float), np.array(init.sigma, float)
        if init.eps < eps:  # the adversary adds about (eps^2 - eps_0^2)/d variance per direction
            sigma = sigma + ((eps**2 - init.eps**2) / model.d) * np.eye(model.d)
    else:
        mu, sigma = mu0, sig0 + (eps**2 / model.d) * np.eye(model.d)
    f, delta, nu = _inner(mu, sigma, xs, ys, eps)
    history = [f]
    d_z: list[Array] = []
    d_r: list[Array] = []
    z_prev: Array | None = None
    r_prev: Array | None = None
    converged = False
    resid = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        mu_t, sig_t = _mle(xs + delta, ys, mu, fit_mean)
        resid = _residual(mu, sigma, mu_t, sig_t)
        if resid < tol:
            converged = True
            break
        # With a finite sample F is only piecewise smooth: a sample whose residual crosses the
        # "hard case" (no component along the top precision eigenvector) flips its maximiser
        # from +delta to -delta, so the fixed-point map jumps by O(eps^2 / n). Once F stops
        # decreasing (relative ftol over `patience` iterations) the fit is as stationary as the
        # sample allows; `stationarity` reports the remaining residual.
        if len(history) > patience and history[-patience - 1] - f <= ftol * abs(f):
            converged = True
            break
        # Anderson acceleration of the fixed-point map z -> G(z), z = (mu, vec Sigma), kept only
        # when it yields a PD Sigma and a lower objective (so F still decreases monotonically).
        z, gz = _pack(mu, sigma), _pack(mu_t, sig_t)
        if memory > 0:
            if z_prev is not None:
                d_z.append(z - z_prev)
                d_r.append((gz - z) - r_prev)
                del d_z[:-memory], d_r[:-memory]
            z_prev, r_prev = z, gz - z
        accepted = False
        if memory > 0 and len(d_r) >= 1:
            dr, dz = np.array(d_r).T, np.array(d_z).T
            gamma = np.linalg.lstsq(dr, gz - z, rcond=None)[0]
            cand = gz - (dz + dr) @ gamma
            mu_a, sig_a = _unpack(cand, model.d)
            if np.all(np.isfinite(cand)) and np.linalg.eigvalsh(sig_a)[0] > 0:
                f_a, d_a, nu_a = _inner(mu_a, sig_a, xs, ys, eps)
                if f_a <= f - 1e-13 * abs(f):
                    mu, sigma, f, delta, nu = mu_a, sig_a, f_a, d_a, nu_a
                    accepted = True
        if not accepted:
            prec, prec_t = np.linalg.inv(sigma), np.linalg.inv(sig_t)
            eta, eta_t = prec @ mu, prec_t @ mu_t
            step = 1.0
            for _ in range(40):
                p_new = prec + step * (prec_t - prec)
                sig_new = np.linalg.inv((p_new + p_new.T) / 2)
                sig_new = (sig_new + sig_new.T) / 2
                mu_new = sig_new @ (eta + step * (eta_t - eta))
                f_new, d_new, nu_new = _inner(mu_new, sig_new, xs, ys, eps)
                if f_new <= f + 1e-13 * abs(f):
                    break
                step /= 2
            else:
                converged = resid < 10 * tol
                break
            mu, sigma, f, delta, nu = mu_new, sig_new, f_new, d_new, nu_new
            if step < 1.0:  # the history is no longer a fixed-point trajectory: restart it
                d_z.clear()
                d_r.clear()
                z_prev = None
        history.append(f)
    if not converged:
        raise RuntimeError(
            f"fit_robust(eps={eps:g}) did not reach a fixed point in max_iter={max_iter} "
            f"iterations (relative residual {resid:.3g} > tol={tol:g}, and the objective still "
            f"decreased by more than ftol={ftol:g} over the last {patience} iterations)"
        )
    if eps == 0:
        lam_mult = lam_med = lam_spec = float("inf")
    else:
        lam_mult, lam_med = float(np.mean(nu)), float(np.median(nu))
        lam_spec = spectral_lam(sigma, sig0)
    lam = lam_mult if lam_method == "multiplier" else lam_spec
    return RobustFit(eps=eps, mu=mu, sigma=sigma, lam=lam, lam_multiplier=lam_mult,
                     lam_multiplier_median=lam_med, lam_spectral=lam_spec, lam_method=lam_method,
                     objective=f, stationarity=float(resid), iterations=it, converged=converged,
                     n_samples=n, seed=seed, reference_sigma=sig0, history=tuple(history))


def _pack(mu: Array, sigma: Array) -> Array:
    return np.concatenate([mu, sigma.ravel()])


def _unpack(z: Array, d: int) -> tuple[Array, Array]:
    sig = z[d:].reshape(d, d)
    return z[:d].copy(), (sig + sig.T) / 2


def _residual(mu: Array, sigma: Array, mu_t: Array, sig_t: Array) -> float:
    r_sig = np.linalg.norm(sig_t - sigma) / np.linalg.norm(sigma)
    r_mu = np.linalg.norm(mu_t - mu) / max(np.linalg.norm(mu), np.sqrt(np.trace(sigma)))
    return float(max(r_sig, r_mu))


def spectral_lam(sigma: Any, sigma_star: Any) -> float:
    """The lam minimising sum_i (log r_i(lam) - log sigma_ii)^2, with r(s*, lam) the Theorem 2
    eigenvalues of ``sigma_star`` and sigma_ii the diagonal of ``sigma`` in sigma_star's
    eigenbasis (least squares in log space over log lam in [-40, 40])."""
    from scipy.optimize import minimize_scalar

    s, q = np.linalg.eigh(np.asarray(sigma_star, float))
    target = np.log(np.einsum("ij,jk,ki->i", q.T, np.asarray(sigma, float), q))

    def loss(loglam: float) -> float:
        return float(np.sum((np.log(robust_eigenvalues(s, np.exp(loglam))) - target) ** 2))

    grid = np.linspace(-40, 40, 161)
    best = grid[int(np.argmin([loss(g) for g in grid]))]
    res = minimize_scalar(loss, bounds=(best - 0.5, best + 0.5), method="bounded",
                          options={"xatol": 1e-10})
    return float(np.exp(res.x))
