"""Linear features and linear classifiers in the Gaussian model: usefulness (rho), robust
usefulness (gamma), l2/linf attacks on linear scores, logistic-loss training (standard and
adversarial), and closed-form accuracies.

Conventions (docs/paper-notes.md sec. 1): a linear feature f(x) = w^T x / sqrt(w^T M w) with
M = E[x x^T] = Sigma + mu mu^T in the model y ~ U{-1,1}, x | y ~ N(y mu, Sigma) (so E f = 0,
E f^2 = 1). rho(f) = E[y f(x)] = w^T mu / ||w||_M and gamma(f) = E[inf_{||d|| <= eps} y f(x + d)]
= rho - eps ||w||_* / ||w||_M with ||.||_* the dual norm (l2 -> l2, linf -> l1); Goh, Distill
response 3 (docs/paper-notes.md sec. 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from foundation import checks as C
from simulate.backend import (
    Array,
    XP,
    backend_of,
    to_float,
    to_numpy,
)
from simulate.estimate import Estimate, estimate, estimate_proportion
from theory.features import linear_robust_accuracy, robust_usefulness, usefulness
from theory.model import GaussianModel

def dual_norm(w: Array, norm: str) -> float:
    """||w||_* for the threat model ``norm``: l2 -> ||w||_2, linf -> ||w||_1."""
    C.norm("norm", norm)
    xp = backend_of(w)
    return to_float(xp.sqrt((w * w).sum()) if norm == "l2" else xp.abs(w).sum())


def worst_case_linear(x: Array, y: Array, w: Array, eps: float, norm: str) -> Array:
    """The analytic minimiser of y w^T (x + d) over ||d||_norm <= eps: d = -eps y w/||w||_2 (l2)
    or -eps y sign(w) (linf). Used only to check :func:`pgd_linear`."""
    C.norm("norm", norm)
    xp = backend_of(x, y, w)
    direction = w / max(dual_norm(w, "l2"), 1e-300) if norm == "l2" else xp.sign(w)
    return -eps * y[:, None] * direction[None, :]


def pgd_linear(
    x: Array, y: Array, w: Array, eps: float, norm: str, *, steps: int = 10, step_size: float | None = None
) -> Array:
    """PGD minimising the margin y w^T (x + d) over ||d||_norm <= eps (a real attacker).

    l2: normalised-gradient steps and renorm onto the ball; linf: signed-gradient steps and
    clipping to [-eps, eps]. Default step 2.5 eps / steps (Madry et al.).
    Returns the perturbations d (same shape as x).
    """
    C.norm("norm", norm)
    C.non_negative_float("eps", eps)
    xp = backend_of(x, y, w)
    if eps == 0:
        return xp.zeros_like(x)
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    delta = xp.zeros_like(x)
    tiny = xp.finfo(x.dtype).tiny
    for _ in range(int(steps)):
        g = -y[:, None] * w[None, :] + 0.0 * delta  # d/dd of -(margin); constant for linear scores
        if norm == "l2":
            gn = xp.sqrt((g * g).sum(axis=1, keepdims=True))
            delta = delta + alpha * g / xp.maximum(gn, tiny)
            dn = xp.sqrt((delta * delta).sum(axis=1, keepdims=True))
            delta = delta * xp.minimum(1.0, eps / xp.maximum(dn, tiny))
        else:
            delta = xp.clip(delta + alpha * xp.sign(g), -eps, eps)
    return delta


# ---------------------------------------------------------------------------------------------
# usefulness of linear features
# ---------------------------------------------------------------------------------------------


def second_moment(mu: Array, sigma: Array) -> Array:
    """M = E[x x^T] = Sigma + mu mu^T of the symmetric Gaussian mixture."""
    return sigma + mu[:, None] * mu[None, :]


def _theory_model(mu: Array, sigma: Array) -> GaussianModel:
    """theory's GaussianModel of (mu, Sigma), on host copies of the arrays."""
    return GaussianModel(to_numpy(mu), to_numpy(sigma))


def rho_closed_form(w: Array, mu: Array, sigma: Array) -> float:
    """rho(f_w) = w^T mu / sqrt(w^T (Sigma + mu mu^T) w) (docs/paper-notes.md sec. 1): theory's
    :func:`theory.usefulness` (the one implementation), on host copies of the arrays."""
    backend_of(w, mu, sigma)  # mixing NumPy and CuPy is an error, as everywhere in simulate
    return usefulness(to_numpy(w), _theory_model(mu, sigma))


def gamma_closed_form(w: Array, mu: Array, sigma: Array, eps: float, norm: str) -> float:
    """gamma(f_w) = rho - eps ||w||_* / sqrt(w^T M w) (Goh, Distill response 3;
    docs/paper-notes.md sec. 1): theory's :func:`theory.robust_usefulness`, on host copies of the
    arrays."""
    C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    backend_of(w, mu, sigma)
    return robust_usefulness(to_numpy(w), _theory_model(mu, sigma), eps, norm)


def measure_usefulness(
    x: Array, y: Array, w: Array, mu: Array, sigma: Array, *, eps: float = 0.0, norm: str = "l2",
    seed: int | None = None, pgd_steps: int = 10,
) -> Estimate:
    """Monte-Carlo E[y f_w(x + d)] with d from a real :func:`pgd_linear` attack (eps = 0: rho).

    The normalisation uses the population moment M (known in the simulated world), so the
    estimate is unbiased for rho / gamma.
    """
    m = second_moment(mu, sigma)
    scale = math.sqrt(to_float(w @ m @ w))
    delta = pgd_linear(x, y, w, eps, norm, steps=pgd_steps)
    return estimate(y * ((x + delta) @ w) / scale, seed=seed)


# ---------------------------------------------------------------------------------------------
# accuracies
# ---------------------------------------------------------------------------------------------


def linear_accuracy_gaussian(
    w: Array, b: float, mu: Array, sigma: Array, *, eps: float = 0.0, norm: str = "l2"
) -> float:
    """P[ y (w^T (x+d) + b) > 0 ] for the worst ||d||_norm <= eps, x | y ~ N(y mu, Sigma).

    = 1/2 [Phi((w^T mu + b - eps ||w||_*)/||w||_Sigma) + Phi((w^T mu - b - eps ||w||_*)/||w||_Sigma)]:
    theory's :func:`theory.linear_robust_accuracy`, on host copies of the arrays. For w = 0 (the
    constant classifier sign(b), which theory rejects) it is 1/2 [1(b > 0) + 1(-b > 0)].
    """
    C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    backend_of(w, mu, sigma)
    w_np = to_numpy(w)
    if not w_np.any():
        return 0.5 * (float(b > 0) + float(-b > 0))
    return linear_robust_accuracy(w_np, b, _theory_model(mu, sigma), eps, norm)


def measure_accuracy(
    x: Array, y: Array, w: Array, b: float = 0.0, *, eps: float = 0.0, norm: str = "l2",
    seed: int | None = None, pgd_steps: int = 10,
) -> Estimate:
    """Accuracy of sign(w^T x + b) on samples (x, y) under a real PGD attack of size eps."""
    delta = pgd_linear(x, y, w, eps, norm, steps=pgd_steps)
    return estimate_proportion(y * ((x + delta) @ w + b) > 0, seed=seed)


# ---------------------------------------------------------------------------------------------
# logistic regression, standard and adversarial
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearModel:
    """A linear classifier sign(w^T x + b) and how it was trained."""

    w: Array
    b: float
    eps: float
    norm: str
    final_loss: float


def _softplus(z: Array, xp: XP) -> Array:
    return xp.logaddexp(0.0, z)


def train_logistic(
    x: Array,
    y: Array,
    *,
    eps: float = 0.0,
    norm: str = "l2",
    steps: int = 500,
    lr: float = 0.5,
    weight_decay: float = 0.0,
    attack: str = "pgd",
    pgd_steps: int = 5,
    fit_bias: bool = True,
) -> LinearModel:
    """Full-batch gradient descent (Nesterov momentum 0.9, learning rate decayed linearly to 0)
    on the logistic loss. The decay matters for adversarial linf training, whose objective has the
    non-smooth -eps ||w||_1 term: with a constant rate the weights of the non-robust features
    oscillate at amplitude ~ lr * eps instead of settling at 0.

    Standard training (eps = 0) minimises mean log(1 + exp(-y (w^T x + b))); adversarial training
    minimises mean max_{||d||<=eps} log(1 + exp(-y (w^T (x+d) + b))), with the inner max solved by
    a real PGD attack on the inputs (``attack='pgd'``) or in closed form (``attack='exact'``: the
    margin drops by eps ||w||_*). Gradients at the attacked points (Danskin).
    """
    C.norm("norm", norm)
    C.non_negative_float("eps", eps)
    C.positive_float("lr", lr)
    if attack not in ("pgd", "exact"):
        raise ValueError(f"unknown attack {attack!r}; valid: pgd, exact")
    xp = backend_of(x, y)
    n, d = x.shape
    C.int_at_least("n", int(n), 2)
    w = xp.zeros(d, dtype=x.dtype)
    b = 0.0
    vw, vb = xp.zeros_like(w), 0.0
    loss = float("nan")
    for t in range(int(steps)):
        lr_t = lr * (1.0 - t / steps)
        wl, bl = w + 0.9 * vw, b + 0.9 * vb  # Nesterov look-ahead
        if eps > 0 and attack == "pgd":
            xa = x + pgd_linear(x, y, wl, eps, norm, steps=pgd_steps)
            margin = y * (xa @ wl + bl)
        else:
            xa = x
            margin = y * (x @ wl + bl)
            if eps > 0:
                margin = margin - eps * dual_norm(wl, norm)
        s = -1.0 / (1.0 + xp.exp(margin))  # d loss / d margin
        gw = ((s * y)[:, None] * xa).mean(axis=0) + weight_decay * wl
        if eps > 0 and attack == "exact":
            sub = wl / max(dual_norm(wl, "l2"), 1e-300) if norm == "l2" else xp.sign(wl)
            gw = gw - eps * to_float(s.mean()) * sub
        gb = to_float((s * y).mean()) if fit_bias else 0.0
        vw = 0.9 * vw - lr_t * gw
        vb = 0.9 * vb - lr_t * gb
        w = w + vw
        b = b + vb
    margin = y * (x @ w + b) - eps * dual_norm(w, norm)
    loss = to_float(_softplus(-margin, xp).mean())
    return LinearModel(w=w, b=float(b), eps=float(eps), norm=norm, final_loss=loss)
