"""The Gaussian robust-features model (paper section 4) simulated: sampling, MLE, a real
adversary on the Gaussian negative log-likelihood, and adversarial training of (mu, Sigma).

Model (docs/paper-notes.md sec. 5.1): y ~ Uniform{-1, +1}, x | y ~ N(y mu*, Sigma*). The learner
fits Theta = (mu, Sigma) by minimising the Gaussian NLL (the 1/2 convention)

    l(x; y mu, Sigma) = 1/2 (x - y mu)^T Sigma^-1 (x - y mu) + 1/2 log det Sigma + d/2 log 2 pi,

and classifies with sign(x^T Sigma^-1 mu). Adversaries perturb x to x + delta and only see the
residual v = x - y mu, so every attack here takes ``v`` and ``sigma_inv``:

* :func:`lagrangian_attack`  - gradient ascent on (v+d)^T A (v+d) - C ||d||^2 (A = Sigma^-1), the
  penalised adversary of Theorems 1-2; its optimum is delta* = (C Sigma - I)^-1 v (no-1/2 form;
  with the 1/2-NLL and (C/2)||d||^2 the maximiser is the same);
* :func:`pgd_l2_attack`      - projected normalised-gradient ascent in the l2 ball ||d|| <= eps
  (the robustness-library L2 step: x <- x + alpha g/||g||, then renorm to the ball);
* :func:`trust_region_attack` - the exact maximiser over the ball, delta = (nu I - A)^-1 A v with a
  per-sample root-find for nu > lambda_max(A) (docs/paper-notes.md sec. 5.5).

:func:`adversarial_training` learns (mu, Sigma = L L^T, L lower triangular) by minibatch gradient
descent where each minibatch is first attacked by one of these adversaries (Danskin: the gradient of
the max is the gradient at the maximiser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from foundation import checks as C
from simulate.backend import (
    Array,
    XP,
    backend_of,
    check_finite,
    rng_xp,
    to_float,
)

ATTACKS: tuple[str, ...] = ("none", "lagrangian", "pgd", "trust_region")


# ---------------------------------------------------------------------------------------------
# model validation and sampling
# ---------------------------------------------------------------------------------------------


def validate_model(mu: Array, sigma: Array, xp: XP | None = None) -> tuple[Array, Array]:
    """Check (mu, Sigma): finite, mu of shape (d,), Sigma (d, d) symmetric positive definite."""
    xp = backend_of(mu, sigma, xp=xp)
    mu = xp.asarray(mu, dtype=xp.float64)
    sigma = xp.asarray(sigma, dtype=xp.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu must be a vector of shape (d,); got shape {tuple(mu.shape)}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"sigma must have shape ({d}, {d}) to match mu; got {tuple(sigma.shape)}")
    check_finite("mu", mu)
    check_finite("sigma", sigma)
    if to_float(xp.max(xp.abs(sigma - sigma.T))) > 1e-8 * max(1.0, to_float(xp.max(xp.abs(sigma)))):
        raise ValueError("sigma must be symmetric")
    eig_min = to_float(xp.linalg.eigvalsh(sigma)[0])
    if not eig_min > 0:
        raise ValueError(f"sigma must be positive definite; its smallest eigenvalue is {eig_min:.3g}")
    return mu, sigma


def sample_gaussian_model(
    mu: Array, sigma: Array, n: int, rng: Any, *, dtype: Any = None
) -> tuple[Array, Array]:
    """Draw n pairs (x, y): y uniform on {-1, +1}, x | y ~ N(y mu, Sigma)
    (docs/paper-notes.md sec. 5.1).

    Works for any d (thousands included): x = y mu + z L^T with Sigma = L L^T (Cholesky).
    ``rng`` is a generator from :func:`simulate.backend.make_rng`; it fixes the backend.
    Returns x of shape (n, d) and y of shape (n,) with values +-1 (floats).
    """
    C.int_at_least("n", n, 2)
    xp = rng_xp(rng)
    mu, sigma = validate_model(mu, sigma, xp=xp)
    dtype = dtype or xp.float64
    chol = xp.linalg.cholesky(sigma)
    d = mu.shape[0]
    y = xp.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)
    z = rng.standard_normal((n, d), dtype=dtype)
    x = y[:, None] * mu.astype(dtype)[None, :] + z @ chol.T.astype(dtype)
    return x, y


def mle_fit(x: Array, y: Array) -> tuple[Array, Array]:
    """Maximum-likelihood (mu, Sigma) of the model y x ~ N(mu, Sigma) from samples (x, y).

    mu_hat = mean(y x); Sigma_hat = mean((x - y mu_hat)(x - y mu_hat)^T) (the MLE, divisor n).
    """
    backend_of(x, y)  # mixing NumPy and CuPy is an error
    C.int_at_least("n", int(x.shape[0]), 2)
    mu = (y[:, None] * x).mean(axis=0)
    r = x - y[:, None] * mu[None, :]
    return mu, (r.T @ r) / x.shape[0]


def nll(x: Array, y: Array, mu: Array, sigma: Array) -> Array:
    """Per-sample Gaussian NLL l(x; y mu, Sigma) in the 1/2 convention (see module docstring)."""
    xp = backend_of(x, y, mu, sigma)
    d = mu.shape[0]
    chol = xp.linalg.cholesky(sigma)
    v = x - y[:, None] * mu[None, :]
    z = _solve_lower(chol, v.T, xp).T
    return 0.5 * (z * z).sum(axis=1) + xp.log(xp.diag(chol)).sum() + 0.5 * d * math.log(2 * math.pi)


def mahalanobis_sq(v: Array, sigma_inv: Array) -> Array:
    """Per-row v^T A v for residuals v (n, d) and a symmetric matrix A (no 1/2 factor)."""
    return ((v @ sigma_inv) * v).sum(axis=1)


def _solve_lower(chol: Array, b: Array, xp: XP) -> Array:
    if xp is np:
        import scipy.linalg

        return scipy.linalg.solve_triangular(chol, b, lower=True)
    import cupyx.scipy.linalg  # pragma: no cover - gpu only

    return cupyx.scipy.linalg.solve_triangular(chol, b, lower=True)  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# attacks on the NLL
# ---------------------------------------------------------------------------------------------


def _row_norm(a: Array, xp: XP) -> Array:
    return xp.sqrt((a * a).sum(axis=1, keepdims=True))


def lagrangian_attack(
    v: Array, sigma_inv: Array, penalty: float, *, steps: int = 200, tol: float = 1e-12
) -> Array:
    """Maximise (v+d)^T A (v+d) - C ||d||^2 per row by gradient ascent (a real attacker).

    The objective is strictly concave iff C > lambda_max(A) = 1/sigma_min(Sigma); ascent uses the
    optimal fixed step 1/(2C - a_min - a_max) and stops when the largest update is below ``tol``
    (relative). The optimum it converges to is delta* = (C Sigma - I)^-1 v (docs/paper-notes.md
    sec. 5.1), which the tests check, but the closed form is never used here.
    """
    xp = backend_of(v, sigma_inv)
    C.finite("penalty", penalty)
    eig = xp.linalg.eigvalsh(sigma_inv)
    a_min, a_max = to_float(eig[0]), to_float(eig[-1])
    if not penalty > a_max:
        raise ValueError(
            f"penalty C={penalty!r} must exceed 1/sigma_min(Sigma)={a_max:.6g} for the inner "
            "maximisation to be bounded"
        )
    step = 1.0 / (2 * penalty - a_min - a_max)
    delta = xp.zeros_like(v)
    scale = max(to_float(xp.max(xp.abs(v))), 1e-300)
    for _ in range(int(steps)):
        grad = 2 * ((v + delta) @ sigma_inv) - 2 * penalty * delta
        delta = delta + step * grad
        if to_float(xp.max(xp.abs(step * grad))) <= tol * scale:
            break
    return delta


def pgd_l2_attack(
    v: Array,
    sigma_inv: Array,
    eps: float,
    *,
    steps: int = 50,
    step_size: float | None = None,
) -> Array:
    """l2 PGD on the Mahalanobis loss: maximise (v+d)^T A (v+d) over ||d||_2 <= eps, per row.

    Normalised-gradient ascent from d = 0 (robustness-library ``L2Step``): d <- Proj(d + a g/||g||)
    with Proj the renorm onto the eps-ball. Step schedule: ``step_size`` (default eps/2) for the
    first half of the steps, then a geometric decay to 1% of it, so the iterate first travels
    around the sphere and then settles instead of oscillating at the step scale. (The Madry
    default 2.5 eps/steps travels only 2.5 eps in total and stalls short of the maximiser on
    anisotropic Sigma; measured in tests against the exact :func:`trust_region_attack`.)
    The problem (maximising a convex quadratic on a ball) can have one non-global local maximum;
    PGD from d = 0 can stop there on rare samples, which is what a real attacker does.
    """
    xp = backend_of(v, sigma_inv)
    C.non_negative_float("eps", eps)
    C.positive_int("steps", steps)
    if eps == 0:
        return xp.zeros_like(v)
    alpha0 = eps / 2 if step_size is None else C.positive_float("step_size", step_size)
    half = steps // 2
    tail = max(steps - half - 1, 1)
    delta = xp.zeros_like(v)
    tiny = xp.finfo(v.dtype).tiny
    for t in range(int(steps)):
        alpha = alpha0 if t < half else alpha0 * 0.01 ** ((t - half) / tail)
        g = (v + delta) @ sigma_inv
        delta = delta + alpha * g / xp.maximum(_row_norm(g, xp), tiny)
        delta = delta * xp.minimum(1.0, eps / xp.maximum(_row_norm(delta, xp), tiny))
    return delta


def trust_region_attack(
    v: Array, sigma_inv: Array, eps: float, *, iters: int = 100, return_nu: bool = False
) -> Array | tuple[Array, Array]:
    """Exact maximiser of (v+d)^T A (v+d) over ||d||_2 <= eps for each row of v
    (docs/paper-notes.md sec. 5.5).

    In the eigenbasis A = Q diag(a) Q^T with c = Q^T v, the maximiser is d_i = a_i c_i / (nu - a_i)
    with nu > a_max solving sum_i a_i^2 c_i^2 / (nu - a_i)^2 = eps^2 (a decreasing function of nu on
    (a_max, inf)); nu is found per row by bisection on (a_max, a_max + ||A c|| / eps]. In the
    measure-zero 'hard case' (c has no weight on the top eigenvector) the missing norm is put on
    the top eigenvector. ``return_nu`` also returns the per-row multipliers nu (the Lagrangian
    penalty that this sample's ball constraint corresponds to).
    """
    xp = backend_of(v, sigma_inv)
    C.non_negative_float("eps", eps)
    a, q = xp.linalg.eigh(sigma_inv)
    a_max = a[-1]
    if eps == 0:
        out = xp.zeros_like(v)
        return (out, xp.full(v.shape[0], xp.inf)) if return_nu else out
    c = v @ q
    ac = a[None, :] * c
    lo = xp.full(v.shape[0], to_float(a_max))
    hi = lo + xp.sqrt((ac * ac).sum(axis=1)) / eps + 1e-300
    for _ in range(int(iters)):
        mid = 0.5 * (lo + hi)
        norm2 = ((ac / (mid[:, None] - a[None, :])) ** 2).sum(axis=1)
        too_big = norm2 > eps**2
        lo = xp.where(too_big, mid, lo)
        hi = xp.where(too_big, hi, mid)
    nu = hi
    coef = ac / (nu[:, None] - a[None, :])
    # hard case: the norm is short of eps even at nu -> a_max; fill along the top eigenvector
    short = eps**2 - (coef * coef).sum(axis=1)
    top = xp.abs(a - a_max) <= 1e-12 * xp.abs(a_max)
    fill = xp.sqrt(xp.maximum(short, 0.0)) * (short > 1e-9 * eps**2)
    sign = xp.where(c[:, -1] >= 0, 1.0, -1.0)
    coef = coef + (fill * sign)[:, None] * (top[None, :] & (xp.arange(a.shape[0]) == a.shape[0] - 1)[None, :])
    delta = coef @ q.T
    return (delta, nu) if return_nu else delta


def attack(
    v: Array,
    sigma_inv: Array,
    kind: str,
    *,
    eps: float = 0.0,
    penalty: float | None = None,
    pgd_steps: int = 50,
) -> Array:
    """Dispatch to one of :data:`ATTACKS` ('none', 'lagrangian', 'pgd', 'trust_region')."""
    if kind == "none":
        return backend_of(v).zeros_like(v)
    if kind == "lagrangian":
        if penalty is None:
            raise ValueError("attack='lagrangian' needs penalty=C")
        return lagrangian_attack(v, sigma_inv, penalty)
    if kind == "pgd":
        return pgd_l2_attack(v, sigma_inv, eps, steps=pgd_steps)
    if kind == "trust_region":
        return trust_region_attack(v, sigma_inv, eps)
    raise ValueError(f"unknown attack {kind!r}; valid: {', '.join(ATTACKS)}")


# ---------------------------------------------------------------------------------------------
# adversarial training of (mu, Sigma)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """Parameters learned by :func:`adversarial_training` (averaged over the second half)."""

    mu: Array
    sigma: Array
    steps: int
    attack: str
    final_loss: float
    loss_history: list[float] = field(default_factory=list)


def adversarial_training(
    x: Array,
    y: Array,
    *,
    attack_kind: str = "pgd",
    eps: float = 0.0,
    penalty: float | None = None,
    steps: int = 400,
    batch: int = 1024,
    lr: float = 0.05,
    pgd_steps: int = 50,
    rng: Any,
    init: tuple[Array, Array] | None = None,
) -> TrainResult:
    """Robust maximum likelihood by minibatch gradient descent with a real inner attack.

    Minimises mean_i max_{delta_i} l(x_i + delta_i; y_i mu, Sigma) (or the Lagrangian version
    with penalty C) over mu and Sigma = L L^T, L lower triangular with positive diagonal.
    Each step: draw a minibatch, attack it with the current (mu, Sigma) (``attack_kind`` in
    ``ATTACKS``), then take a gradient step at the attacked points (Danskin's theorem).

    The step is plain gradient descent written in the local chart L' = L (I + B) around the
    current iterate (so it is affine invariant and the conditioning of Sigma* does not matter):
    with z = L^-1 (x + delta - y mu), the gradient in B at B = 0 is tril(I - mean z z^T), and in
    mu (chart mu' = mu + L L^T m) it is -mean y (x + delta - y mu). The update is therefore
    L <- L (I - lr tril(I - mean z z^T)), mu <- mu + lr mean(y (x + delta) - mu).
    Returned parameters are Polyak averages of (mu, Sigma) over the second half of the run.
    Starts from ``init`` or from the MLE of (x, y) (plus 2 I/penalty for the Lagrangian attack).
    """
    xp = backend_of(x, y)
    if attack_kind not in ATTACKS:
        raise ValueError(f"unknown attack {attack_kind!r}; valid: {', '.join(ATTACKS)}")
    n, d = x.shape
    C.int_at_least("n", int(n), 2)
    C.non_negative_float("eps", eps)
    C.positive_float("lr", lr)
    C.int_at_least("steps", steps, 2)
    batch = int(min(batch, n))
    C.int_at_least("batch", batch, 2)
    eye = xp.eye(d, dtype=x.dtype)
    if init is not None:
        mu, sigma = init
    else:
        mu, sigma = mle_fit(x, y)
        if attack_kind == "lagrangian" and penalty is not None and penalty > 0:
            # feasible start for any penalty: lam sigma_min(Sigma_hat + 2 I/lam) > 1; the optimum
            # itself satisfies Sigma_r >= Sigma* + I/lam (Theorem 2), so iterates stay feasible
            sigma = sigma + (2.0 / penalty) * eye
    chol = xp.linalg.cholesky(sigma)
    mu_avg = xp.zeros_like(mu)
    sig_avg = xp.zeros_like(sigma)
    n_avg = 0
    history: list[float] = []
    for t in range(int(steps)):
        idx = rng.integers(0, n, size=batch) if batch < n else None
        xb = x if idx is None else x[idx]
        yb = y if idx is None else y[idx]
        v = xb - yb[:, None] * mu[None, :]
        linv = _solve_lower(chol, eye, xp)
        sigma_inv = linv.T @ linv
        delta = attack(v, sigma_inv, attack_kind, eps=eps, penalty=penalty, pgd_steps=pgd_steps)
        u = v + delta
        z = u @ linv.T
        zz = (z.T @ z) / batch
        if t % 10 == 0 or t == steps - 1:
            history.append(to_float(0.5 * xp.trace(zz) + xp.log(xp.diag(chol)).sum()))
        chol = chol @ (eye - lr * xp.tril(eye - zz))
        mu = mu + lr * ((yb[:, None] * (xb + delta)).mean(axis=0) - mu)
        if t >= steps // 2:
            mu_avg += mu
            sig_avg += chol @ chol.T
            n_avg += 1
    return TrainResult(
        mu=mu_avg / n_avg,
        sigma=sig_avg / n_avg,
        steps=int(steps),
        attack=attack_kind,
        final_loss=history[-1],
        loss_history=history,
    )
