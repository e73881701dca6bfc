"""fit_robust (robust MLE against the exact l2-ball adversary) against planted truths."""

from __future__ import annotations

import numpy as np
import pytest

from theory import GaussianModel, fit_robust, robust_covariance, trust_region_max


def _fig4_model() -> GaussianModel:
    return GaussianModel([-10.0, 1.0], np.diag([25.0, 0.5]))


def _objective(mu, sigma, x, y, eps):
    res = trust_region_max(np.linalg.inv(sigma), x - y[:, None] * mu, eps)
    return float(np.mean(res.value) + np.linalg.slogdet(sigma)[1])


def test_eps_zero_is_the_sample_mle():
    m = _fig4_model()
    x, y = m.sample(5000, 4)
    fit = fit_robust(m, 0.0, x=x, y=y)
    mu = np.mean(y[:, None] * x, axis=0)
    r = x - y[:, None] * mu
    np.testing.assert_allclose(fit.mu, mu, rtol=1e-12)
    np.testing.assert_allclose(fit.sigma, r.T @ r / len(y), rtol=1e-12)
    assert fit.lam == np.inf and fit.iterations == 1


def test_one_dimensional_robust_mle_is_the_planted_closed_form():
    # d = 1: the adversary adds eps sign(v), so the robust variance is mean((|v| + eps)^2)
    m = GaussianModel([1.5], [[2.0]])
    x, y = m.sample(4000, 7)
    eps = 0.8
    fit = fit_robust(m, eps, x=x, y=y, fit_mean=False)
    v = x[:, 0] - y * 1.5
    assert fit.sigma[0, 0] == pytest.approx(np.mean((np.abs(v) + eps) ** 2), rel=1e-9)
    # the per-sample multiplier solves (nu - p) |delta| = p |v| with p = 1/sigma, |delta| = eps
    p = 1 / fit.sigma[0, 0]
    assert fit.lam_multiplier == pytest.approx(np.mean(p + p * np.abs(v) / eps), rel=1e-9)


def test_fit_is_a_local_minimum_of_the_sample_objective_and_history_decreases():
    m = _fig4_model()
    x, y = m.sample(4000, 1)
    eps = 1.0
    fit = fit_robust(m, eps, x=x, y=y)
    assert np.all(np.diff(fit.history) <= 1e-12 * abs(fit.history[0]))
    base = _objective(fit.mu, fit.sigma, x, y, eps)
    assert base == pytest.approx(fit.objective, rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(6):
        a = rng.standard_normal((2, 2)) * 0.02
        sig = fit.sigma + (a + a.T) * np.sqrt(np.diag(fit.sigma))[:, None] * np.sqrt(
            np.diag(fit.sigma))[None, :] / 2
        mu = fit.mu + 0.02 * rng.standard_normal(2)
        assert _objective(mu, sig, x, y, eps) >= base


def test_robust_mean_stays_at_mu_star_and_closed_form_tracks_the_fit():
    m = _fig4_model()
    x, y = m.sample(20_000, 0)
    for eps in (0.5, 2.0):
        fit = fit_robust(m, eps, x=x, y=y, lam_method="spectral")
        assert np.linalg.norm(fit.mu - m.mu) < 0.1  # Theorem 2: mu_r = mu*
        closed = robust_covariance(fit.reference_sigma, fit.lam)
        rel = np.linalg.norm(closed - fit.sigma) / np.linalg.norm(fit.sigma)
        assert rel < 0.1
        assert np.linalg.cond(fit.sigma) < np.linalg.cond(fit.reference_sigma)
        # the two routes to lam agree within a factor of 1.5 on this model
        assert 1 / 1.5 < fit.lam_multiplier / fit.lam_spectral < 1.5


def test_warm_start_reaches_the_same_fit():
    m = _fig4_model()
    x, y = m.sample(3000, 2)
    cold = fit_robust(m, 1.5, x=x, y=y)
    warm = fit_robust(m, 1.5, x=x, y=y, init=fit_robust(m, 1.0, x=x, y=y))
    assert np.linalg.norm(warm.sigma - cold.sigma) / np.linalg.norm(cold.sigma) < 1e-3
    assert warm.objective == pytest.approx(cold.objective, rel=1e-8)
