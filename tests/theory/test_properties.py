"""The section-4 theorems as hypothesis properties over random SPD Gaussian models."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import (
    GaussianModel,
    Spectrum,
    fit_robust,
    gradient_alignment,
    linear_accuracy,
    linear_robust_accuracy,
    robust_covariance,
    robust_usefulness,
    trust_region_max,
    usefulness,
    vulnerability,
    vulnerability_mc,
    worst_case_perturbation,
)

from .strategies import gaussian_models, spd_matrices

factors = st.floats(1.05, 20.0)  # C = factor / sigma_min, so the penalty is always admissible
lams = st.floats(0.05, 50.0)


@given(sigma=spd_matrices(min_dim=2), factor=factors,
       convention=st.sampled_from(["paper", "half_nll", "penalized", "half_nll_penalized"]))
def test_isotropic_sigma_minimises_vulnerability_at_fixed_trace(sigma, factor, convention):
    d = sigma.shape[0]
    c = factor / np.linalg.eigvalsh(sigma).min()
    iso = np.eye(d) * np.trace(sigma) / d  # same trace; its sigma_min is larger, so C is admissible
    assert vulnerability(iso, c, convention) <= vulnerability(sigma, c, convention) * (1 + 1e-12)


@given(sigma=spd_matrices(), lam=lams)
def test_robust_covariance_tends_to_sigma_star_as_lam_grows(sigma, lam):
    s_max = np.linalg.eigvalsh(sigma).max()
    gaps = []
    for scale in (1.0, 10.0, 100.0, 1e4):
        gap = np.linalg.norm(robust_covariance(sigma, lam * scale) - sigma, 2)
        # r - s = 1/lam + (s/lam)/(s/2 + sqrt(s^2/4 + s/lam)) <= 1/lam + sqrt(s/lam)
        assert gap <= (1 / (lam * scale) + np.sqrt(s_max / (lam * scale))) * (1 + 1e-9)
        gaps.append(gap)
    assert all(b < a for a, b in zip(gaps, gaps[1:]))


@given(sigma=spd_matrices(), lam=lams)
def test_robust_covariance_becomes_isotropic_as_lam_shrinks(sigma, lam):
    conds = [np.linalg.cond(robust_covariance(sigma, lam / scale)) for scale in (1, 1e2, 1e4, 1e8)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(conds, conds[1:]))
    s_max = np.linalg.eigvalsh(sigma).max()
    t = lam / 1e8 * s_max  # lam s_max -> 0: cond - 1 = O(sqrt(lam s_max))
    assert conds[-1] - 1 <= 2 * np.sqrt(t) + 2 * t + 1e-9


@given(sigma=spd_matrices(), lam=lams)
def test_robust_covariance_is_better_conditioned_than_the_data_covariance(sigma, lam):
    assert np.linalg.cond(robust_covariance(sigma, lam)) <= np.linalg.cond(sigma) * (1 + 1e-9)


@given(model=gaussian_models(min_dim=2), lam=lams)
def test_robust_worst_case_cosine_is_at_least_the_standard_one(model, lam):
    spec = Spectrum.of(model.sigma)
    std = gradient_alignment(spec)
    rob = gradient_alignment(robust_covariance(spec, lam))
    assert rob.worst_case >= std.worst_case * (1 - 1e-12)
    # the actual cosine for the model's own mean is never below the worst case
    assert gradient_alignment(spec, model.mu).cosine >= std.worst_case - 1e-9


@settings(max_examples=12)
@given(sigma=spd_matrices(max_dim=4, lo=0.1, hi=10.0), lam=st.floats(0.1, 10.0))
def test_closed_form_robust_covariance_is_the_numeric_optimum(sigma, lam):
    closed = robust_covariance(sigma, lam)
    numeric = robust_covariance(sigma, lam, method="numeric")
    assert np.linalg.norm(closed - numeric) <= 1e-5 * np.linalg.norm(closed)


@settings(max_examples=8)
@given(model=gaussian_models(min_dim=2, max_dim=3, lo=0.1, hi=10.0), eps=st.floats(0.2, 2.0),
       seed=st.integers(0, 1000))
def test_numeric_eps_ball_fit_moves_monotonically_toward_isotropy(model, eps, seed):
    x, y = model.sample(1500, seed)
    conds = []
    fit = None
    for e in (0.0, eps, 3 * eps, 9 * eps):
        fit = fit_robust(model, e, x=x, y=y, init=fit)
        conds.append(np.linalg.cond(fit.sigma))
    assert all(b <= a * (1 + 1e-3) for a, b in zip(conds, conds[1:])), conds
    assert conds[-1] < conds[0]


@settings(max_examples=15)
@given(sigma=spd_matrices(max_dim=6), factor=factors, seed=st.integers(0, 2**31))
def test_closed_form_vulnerability_is_within_5_stderr_of_monte_carlo(sigma, factor, seed):
    spec = Spectrum.of(sigma)
    c = factor / spec.min
    est = vulnerability_mc(spec, c, "paper", n_samples=20_000, seed=seed)
    assert abs(est.z_score(vulnerability(spec, c))) < 5


@settings(max_examples=25)
@given(model=gaussian_models(), factor=factors, seed=st.integers(0, 2**31))
def test_lagrangian_and_ball_adversaries_agree_at_the_matching_radius(model, factor, seed):
    # delta*(C) solves the eps-ball problem with eps = ||delta*(C)|| and secular multiplier nu = C
    c = factor / model.spectrum.min
    x, y = model.sample(5, seed)
    delta = worst_case_perturbation(model, x, y, c)
    prec = np.linalg.inv(model.sigma)
    for i in range(5):
        eps = float(np.linalg.norm(delta[i]))
        res = trust_region_max(prec, x[i] - y[i] * model.mu, eps)
        assert abs(res.nu - c) <= 1e-6 * c
        np.testing.assert_allclose(res.delta, delta[i], rtol=1e-6, atol=1e-9 * eps)


@given(model=gaussian_models(), seed=st.integers(0, 2**31), eps=st.floats(0.0, 2.0),
       norm=st.sampled_from(["l2", "linf"]))
def test_usefulness_properties(model, seed, eps, norm):
    w = np.random.default_rng(seed).standard_normal(model.d)
    rho = usefulness(w, model)
    # the Bayes direction sigma^-1 mu maximises rho (Sherman-Morrison on Cov(x) = Sigma + mu mu^T)
    assert rho <= usefulness(model.bayes_direction, model) + 1e-9
    assert robust_usefulness(w, model, 0.0, norm) == rho
    assert robust_usefulness(w, model, eps, norm) <= rho + 1e-12
    b = float(np.random.default_rng(seed + 1).normal())
    assert linear_robust_accuracy(w, b, model, eps, norm) <= linear_accuracy(w, b, model) + 1e-12


@given(model=gaussian_models(max_dim=4))
def test_gaussian_model_sampling_matches_its_parameters(model):
    x, y = model.sample(40_000, 0)
    assert abs(np.mean(y)) < 5 / np.sqrt(40_000)
    mu_hat = np.mean(y[:, None] * x, axis=0)
    se = np.sqrt(np.diag(model.sigma) / 40_000)
    assert np.all(np.abs(mu_hat - model.mu) < 5 * se)
    assert isinstance(model, GaussianModel)
