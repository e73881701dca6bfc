"""Monte-Carlo estimates (numpy sampling) of the theory's closed forms, with standard errors.

These are the third route ("monte_carlo") behind the ``method=`` switches; the GPU engine lives in
``simulate/``. Every estimator returns an :class:`~foundation.estimate.Estimate` (mean,
stderr, n, seed; the toolkit's one estimate type, re-exported here and as ``theory.Estimate``),
whose ``z_score(value)`` is (mean - value) / stderr.
"""

from __future__ import annotations

import numpy as np

from foundation import checks as C
from foundation.estimate import Estimate
from theory.model import Array, GaussianModel, Spectrum


def _estimate(samples: Array, seed: int) -> Estimate:
    """The estimate of the mean of i.i.d. ``samples`` (n >= 2, checked by :func:`_check_n`)."""
    return Estimate.from_moments(np.mean(samples), np.std(samples, ddof=1), int(samples.shape[0]), seed)


def _check_n(n_samples: int) -> int:
    return int(C.int_at_least("n_samples", n_samples, 2))


def vulnerability_mc(spec: Spectrum, penalty: float, convention: str = "paper", *,
                     n_samples: int = 200_000, seed: int = 0, chunk: int = 50_000) -> Estimate:
    """Sample v ~ N(0, Sigma*) (in its eigenbasis, which leaves the quadratic forms invariant),
    apply delta* = (C Sigma* - I)^-1 v and average the loss increase of Theorem 1."""
    n = _check_n(n_samples)
    rng = np.random.default_rng(seed)
    s = spec.values
    c = float(penalty)
    out = np.empty(n)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        u = rng.standard_normal((m, s.shape[0])) * np.sqrt(s)  # eigen-coordinates of v
        delta = u / (c * s - 1.0)
        gain = np.sum((u + delta) ** 2 / s - u**2 / s, axis=1)
        if convention.endswith("penalized"):
            gain -= c * np.sum(delta**2, axis=1)
        out[start:start + m] = gain / (2.0 if convention.startswith("half") else 1.0)
    return _estimate(out, seed)


def _scaled_feature(w: Array, model: GaussianModel, x: Array) -> Array:
    scale = np.sqrt(w @ model.sigma @ w + (w @ model.mu) ** 2)
    return x @ w / scale


def usefulness_mc(w: Array, model: GaussianModel, *, n_samples: int = 200_000,
                  seed: int = 0) -> Estimate:
    """Mean of y f(x) over samples (f normalised with the model's Cov(x))."""
    x, y = model.sample(_check_n(n_samples), seed)
    return _estimate(y * _scaled_feature(np.asarray(w, float), model, x), seed)


def _attack(w: Array, y: Array, eps: float, norm: str) -> Array:
    """delta = -eps y (dual direction of w): the minimiser of y w.(x + delta) over the ball."""
    direction = w / np.linalg.norm(w) if norm == "l2" else np.sign(w)
    return -eps * y[:, None] * direction[None, :]


def robust_usefulness_mc(w: Array, model: GaussianModel, eps: float, norm: str = "l2", *,
                         n_samples: int = 200_000, seed: int = 0) -> Estimate:
    """Mean of y f(x + delta) with the worst-case delta in the eps-ball of ``norm``."""
    eps = C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    w = np.asarray(w, float)
    x, y = model.sample(_check_n(n_samples), seed)
    return _estimate(y * _scaled_feature(w, model, x + _attack(w, y, eps, norm)), seed)


def linear_robust_accuracy_mc(w: Array, b: float, model: GaussianModel, eps: float,
                              norm: str = "l2", *, n_samples: int = 200_000,
                              seed: int = 0) -> Estimate:
    """Fraction of samples still classified correctly by sign(w.x + b) after the worst attack."""
    eps = C.non_negative_float("eps", eps)
    C.norm("norm", norm)
    w = np.asarray(w, float)
    x, y = model.sample(_check_n(n_samples), seed)
    xa = x + _attack(w, y, eps, norm)
    correct = (y * (xa @ w + b) > 0).astype(float)
    return _estimate(correct, seed)
