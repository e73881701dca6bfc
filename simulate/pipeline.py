"""The paper's section-3 dataset constructions inside the Gaussian world, where every quantity
is known, with closed-form expected accuracies.

World: y ~ U{-1, +1}, x | y ~ N(y mu, Sigma). The "standard classifier" is the section-4 learner
(maximum likelihood), sign(w^T x) with w = Sigma^-1 mu; the "robust classifier" is robust maximum
likelihood (Theorem 2), w_r = Sigma_r(lam)^-1 mu. Learning from a constructed set always means
fitting the same maximum-likelihood model to it (mu' = E[t x'], Sigma' = Cov(x' - t mu')) and
classifying with w' = Sigma'^-1 mu'. Accuracy is measured on the ORIGINAL distribution D.

Constructions (binary analogues of GETNONROBUSTDATASET / GETROBUSTDATASET,
docs/paper-notes.md sec. 3.1, 2.2):

* D_det: t = -y (the binary "y + 1"); x' = argmin_{||x' - x||_2 <= eps} logistic loss of the
  standard classifier at target t, solved by targeted l2 PGD (:func:`targeted_pgd_linear`); label t.
  For a linear score the optimum is x' = x + eps t u, u = w/||w||, so x' | t ~ N(t (eps u - mu), Sigma):
  a Gaussian model with mean mu' = eps u - mu and the same Sigma. Hence (population level)
  w' = Sigma^-1 (eps u - mu) and acc_D = Phi(w'^T mu / ||w'||_Sigma), which exceeds 1/2 iff
  eps > mu^T Sigma^-1 mu / ||Sigma^-1 mu||, the l2 distance from the class mean to the standard
  classifier's boundary: D_det teaches the true labels exactly when the perturbation carries the
  class mean across the (non-robust) decision boundary.
* D_rand: t uniform, independent of y; same attack; label t. Then mu' = E[t x'] = eps u and
  Sigma' = Sigma + mu mu^T (the y-part is now noise), so w' = (Sigma + mu mu^T)^-1 u up to scale,
  and by Sherman-Morrison w'^T mu = u^T Sigma^-1 mu / (1 + mu^T Sigma^-1 mu) > 0: above chance for
  EVERY eps > 0, and the population accuracy does not depend on eps (only the finite-sample noise
  of estimating mu' = eps u does).
* D_R / D_NR: the representation of a linear model is its score g(x) = G x with G = w^T (a 1 x d
  "penultimate layer"; any k x d G is accepted). For each (x, y) draw an independent x0 ~ D and
  minimise ||G z - G x||^2 by gradient descent from z = x0 (:func:`match_representation`); keep
  label y. Gradient descent from x0 converges to z = (I - P) x0 + P x, P the orthogonal projector
  onto the row space of G. So mu_R = P mu and Sigma_R = P Sigma P + (I - P)(Sigma + mu mu^T)(I - P),
  which is block diagonal in (range P, its complement), and w' = Sigma_R^-1 mu_R = (P Sigma P)^+ P mu:
  for G = w_r^T, w' is parallel to w_r. Standard training on D_R therefore recovers the robust
  classifier, clean and robust accuracy included, and D_NR (G = w^T) the standard one.

This goes beyond what the paper did (it had no ground truth); the derivations above are what the
simulation is checked against.
"""

from __future__ import annotations

from typing import Any

from foundation import checks as C
from simulate.backend import Array, backend_of, to_float, to_numpy
from simulate.gaussian import mle_fit
from theory.features import linear_robust_accuracy
from theory.model import GaussianModel

CONSTRUCTIONS: tuple[str, ...] = ("d_det", "d_rand", "d_r", "d_nr")


def lda_direction(mu: Array, sigma: Array) -> Array:
    """w = Sigma^-1 mu: the likelihood classifier of the Gaussian model
    (docs/paper-notes.md sec. 5.1)."""
    xp = backend_of(mu, sigma)
    return xp.linalg.solve(sigma, mu)


def fit_classifier(x: Array, y: Array) -> Array:
    """Standard training in the Gaussian world: MLE (mu', Sigma') then w' = Sigma'^-1 mu'."""
    mu, sigma = mle_fit(x, y)
    return lda_direction(mu, sigma)


def targeted_pgd_linear(
    x: Array, t: Array, w: Array, eps: float, *, steps: int = 20, step_size: float | None = None
) -> Array:
    """Targeted l2 PGD: minimise log(1 + exp(-t w^T x')) over ||x' - x||_2 <= eps (returns x').

    Normalised-gradient descent steps with renorm onto the ball (robustness-library L2Step),
    started at x (random_start=False), default step 2.5 eps / steps.
    """
    C.non_negative_float("eps", eps)
    xp = backend_of(x, t, w)
    if eps == 0:
        return x.copy()
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    tiny = xp.finfo(x.dtype).tiny
    delta = xp.zeros_like(x)
    for _ in range(int(steps)):
        m = t * ((x + delta) @ w)
        s = -1.0 / (1.0 + xp.exp(m))  # d loss / d margin
        g = (s * t)[:, None] * w[None, :]
        gn = xp.sqrt((g * g).sum(axis=1, keepdims=True))
        delta = delta - alpha * g / xp.maximum(gn, tiny)
        dn = xp.sqrt((delta * delta).sum(axis=1, keepdims=True))
        delta = delta * xp.minimum(1.0, eps / xp.maximum(dn, tiny))
    return x + delta


def make_d_det(x: Array, y: Array, w: Array, eps: float, *, steps: int = 20) -> tuple[Array, Array]:
    """D_det analogue: target t = -y, x' from targeted PGD against sign(w^T x), label t."""
    t = -y
    return targeted_pgd_linear(x, t, w, eps, steps=steps), t


def make_d_rand(
    x: Array, y: Array, w: Array, eps: float, *, rng: Any, steps: int = 20
) -> tuple[Array, Array]:
    """D_rand analogue: target t uniform on {-1, +1} independent of y, targeted PGD, label t."""
    xp = backend_of(x, y, w)
    t = xp.where(rng.random(y.shape[0]) < 0.5, -1.0, 1.0).astype(x.dtype)
    return targeted_pgd_linear(x, t, w, eps, steps=steps), t


def match_representation(
    x: Array, y: Array, g: Array, *, rng: Any, steps: int = 50, tol: float = 1e-12
) -> tuple[Array, Array]:
    """D_R / D_NR analogue: z = argmin ||G z - G x||^2 by gradient descent from x0 ~ D, label y.

    x0 is a random other sample (a permutation of the batch, as in GETROBUSTDATASET, x' ~ D).
    Gradient descent with step 1/sigma_max(G)^2 (exact in one step for a rank-1 G whose rows
    are orthogonal; otherwise it converges geometrically) and stops when the change is < tol.
    """
    xp = backend_of(x, y, g)
    g = xp.atleast_2d(g)
    n = x.shape[0]
    C.int_at_least("n", int(n), 2)
    perm = xp.argsort(rng.random(n))
    z = x[perm].copy()
    lip = to_float(xp.linalg.norm(g, ord=2)) ** 2
    target = x @ g.T
    for _ in range(int(steps)):
        step = ((z @ g.T - target) @ g) / lip
        z = z - step
        if to_float(xp.max(xp.abs(step))) <= tol * (1.0 + to_float(xp.max(xp.abs(z)))):
            break
    return z, y


# ---------------------------------------------------------------------------------------------
# closed forms (population level)
# ---------------------------------------------------------------------------------------------


def accuracy_on_d(w: Array, mu: Array, sigma: Array, *, eps: float = 0.0) -> float:
    """acc of sign(w^T x) on D under the worst l2 perturbation of size eps:
    Phi((w^T mu - eps ||w||) / ||w||_Sigma) (no bias by symmetry). This is theory's
    :func:`theory.linear_robust_accuracy` at b = 0 (the one implementation), on host copies."""
    backend_of(w, mu, sigma)  # mixing NumPy and CuPy is an error, as everywhere in simulate
    model = GaussianModel(to_numpy(mu), to_numpy(sigma))
    return linear_robust_accuracy(to_numpy(w), 0.0, model, eps, "l2")


def expected_direction(
    kind: str, mu: Array, sigma: Array, *, eps: float = 0.0, w_source: Array | None = None
) -> Array:
    """Population-level classifier direction learned from construction ``kind`` (see module doc).

    ``w_source`` is the classifier attacked (d_det, d_rand) or whose score is matched (d_r,
    d_nr); default the standard w = Sigma^-1 mu.
    """
    xp = backend_of(mu, sigma)
    w = lda_direction(mu, sigma) if w_source is None else w_source
    u = w / xp.linalg.norm(w)
    if kind == "d_det":
        return xp.linalg.solve(sigma, eps * u - mu)
    if kind == "d_rand":
        return xp.linalg.solve(sigma + mu[:, None] * mu[None, :], u)
    if kind in ("d_r", "d_nr"):
        proj = u[:, None] * u[None, :]
        return xp.linalg.pinv(proj @ sigma @ proj) @ (proj @ mu)
    raise ValueError(f"unknown construction {kind!r}; valid: {', '.join(CONSTRUCTIONS)}")


def expected_accuracy(
    kind: str, mu: Array, sigma: Array, *, eps: float = 0.0, w_source: Array | None = None,
    eval_eps: float = 0.0,
) -> float:
    """Closed-form accuracy on D (under an l2 attack of size ``eval_eps``) of the classifier
    learned from construction ``kind`` at the population level."""
    w = expected_direction(kind, mu, sigma, eps=eps, w_source=w_source)
    return accuracy_on_d(w, mu, sigma, eps=eval_eps)


def d_det_threshold(mu: Array, sigma: Array) -> float:
    """eps above which D_det generalises to D: mu^T Sigma^-1 mu / ||Sigma^-1 mu||."""
    xp = backend_of(mu, sigma)
    w = lda_direction(mu, sigma)
    return to_float(w @ mu) / to_float(xp.linalg.norm(w))
