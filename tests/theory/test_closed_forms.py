"""Basic checks of the closed forms: Theorems 1-3 and section 2, each against another route."""

from __future__ import annotations

import numpy as np
import pytest

from theory import (
    GaussianModel,
    gradient_alignment,
    linear_accuracy,
    linear_robust_accuracy,
    robust_covariance,
    robust_eigenvalues,
    robust_usefulness,
    trust_region_max,
    usefulness,
    vulnerability,
    worst_case_mean_direction,
    worst_case_perturbation,
)
from theory.monte_carlo import linear_robust_accuracy_mc, robust_usefulness_mc, usefulness_mc


def _model(d: int = 4, seed: int = 0) -> GaussianModel:
    rng = np.random.default_rng(seed)
    s = np.array([0.05, 0.3, 2.0, 9.0])[:d] if d <= 4 else np.exp(rng.uniform(-2, 2, d))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return GaussianModel(rng.standard_normal(d), (q * s) @ q.T)


def test_spec_appendix_numbers_are_reproduced():
    # docs/paper-notes.md sec. A: vul 8.3073; cond 180 -> 85.4; worst-case cosine 0.148 -> 0.214
    m = _model()
    c = 1.5 / 0.05
    assert vulnerability(m, c) == pytest.approx(8.3073, abs=5e-4)
    sr = robust_covariance(m, c)
    assert np.linalg.cond(m.sigma) == pytest.approx(180.0, rel=1e-9)
    assert np.linalg.cond(sr) == pytest.approx(85.4, abs=0.05)
    assert gradient_alignment(m.sigma).worst_case == pytest.approx(0.148, abs=5e-4)
    assert gradient_alignment(sr).worst_case == pytest.approx(0.214, abs=5e-4)


def test_worst_case_perturbation_is_a_stationary_maximum_of_the_penalised_loss():
    m = _model()
    c = 25.0
    rng = np.random.default_rng(1)
    x, y = m.sample(50, rng)
    delta = worst_case_perturbation(m, x, y, c)
    prec = np.linalg.inv(m.sigma)
    v = x - y[:, None] * m.mu
    # gradient of (v+d)^T P (v+d) - C ||d||^2 vanishes
    grad = 2 * (v + delta) @ prec - 2 * c * delta
    assert np.max(np.abs(grad)) < 1e-8 * max(1.0, np.max(np.abs(v @ prec)))
    # and random perturbations of delta* do worse
    f = lambda d: np.einsum("ni,ij,nj->n", v + d, prec, v + d) - c * np.sum(d * d, 1)
    base = f(delta)
    for _ in range(5):
        assert np.all(f(delta + 0.01 * rng.standard_normal(delta.shape)) <= base + 1e-12)
    single = worst_case_perturbation(m, x[0], y[0], c)
    np.testing.assert_allclose(single, delta[0], rtol=1e-12)


@pytest.mark.parametrize("convention", ["paper", "half_nll", "penalized", "half_nll_penalized"])
def test_vulnerability_closed_form_matches_numeric_and_monte_carlo(convention):
    from theory import vulnerability_mc
    from theory.model import Spectrum

    m = _model()
    c = 1.5 / 0.05
    closed = vulnerability(m, c, convention)
    assert vulnerability(m, c, convention, method="numeric") == pytest.approx(closed, rel=1e-6)
    est = vulnerability_mc(Spectrum.of(m.sigma), c, convention, n_samples=200_000, seed=3)
    assert abs(est.z_score(closed)) < 5
    factor = {"paper": 1, "half_nll": 0.5, "penalized": 1, "half_nll_penalized": 0.5}[convention]
    s = np.linalg.eigvalsh(m.sigma)
    a = np.linalg.inv(c * m.sigma - np.eye(4))
    raw = np.trace((np.eye(4) + a) @ (np.eye(4) + a)) - 4 if "pen" not in convention else np.trace(a)
    assert closed == pytest.approx(factor * raw, rel=1e-10)
    assert s.min() > 1 / c


def test_robust_covariance_closed_form_matches_numeric_optimum():
    m = _model()
    for lam in (0.3, 3.0, 40.0):
        np.testing.assert_allclose(robust_covariance(m, lam),
                                   robust_covariance(m.sigma, lam, method="numeric"),
                                   atol=1e-6, rtol=1e-6)


def test_robust_eigenvalues_limits():
    s = np.array([0.01, 1.0, 100.0])
    np.testing.assert_allclose(robust_eigenvalues(s, 1e12), s, rtol=1e-9)
    np.testing.assert_allclose(robust_eigenvalues(s, np.inf), s)
    # small lam: r ~ 1/lam + sqrt(s/lam) + s/2 (docs/paper-notes.md sec. 5.3), blends with the identity
    lam = 1e-8
    r = robust_eigenvalues(s, lam)
    np.testing.assert_allclose(r, 1 / lam + np.sqrt(s / lam) + s / 2, rtol=1e-9)
    assert r.max() / r.min() < 1.002


def test_gradient_alignment_worst_case_is_attained_and_numeric_agrees():
    m = _model()
    ga = gradient_alignment(m, worst_case_mean_direction(m))
    assert ga.cosine == pytest.approx(ga.worst_case, rel=1e-10)
    assert gradient_alignment(m.sigma, method="numeric").worst_case == pytest.approx(
        ga.worst_case, rel=1e-5)
    bayes = gradient_alignment(m.sigma, m.mu).cosine
    w = np.linalg.solve(m.sigma, m.mu)
    assert bayes == pytest.approx(w @ m.mu / np.linalg.norm(w) / np.linalg.norm(m.mu))


def test_feature_usefulness_closed_form_vs_monte_carlo():
    m = _model()
    rng = np.random.default_rng(5)
    for w in (m.bayes_direction, rng.standard_normal(4)):
        assert abs(usefulness_mc(w, m, n_samples=100_000, seed=1).z_score(usefulness(w, m))) < 5
        for norm in ("l2", "linf"):
            g = robust_usefulness(w, m, 0.3, norm)
            assert abs(robust_usefulness_mc(w, m, 0.3, norm, n_samples=100_000, seed=2).z_score(g)) < 5
            acc = linear_robust_accuracy(w, 0.2, m, 0.3, norm)
            est = linear_robust_accuracy_mc(w, 0.2, m, 0.3, norm, n_samples=100_000, seed=3)
            assert abs(est.z_score(acc)) < 5
    assert linear_accuracy(m.bayes_direction, 0.0, m) == pytest.approx(m.bayes_accuracy)


def test_trust_region_max_is_the_constrained_optimum():
    from scipy.optimize import minimize

    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 4))
    prec = a @ a.T + 0.2 * np.eye(4)
    v = rng.standard_normal((6, 4))
    res = trust_region_max(prec, v, 0.7)
    np.testing.assert_allclose(np.linalg.norm(res.delta, axis=1), 0.7, rtol=1e-10)
    for i in range(6):
        f = lambda d: -(v[i] + d) @ prec @ (v[i] + d)
        cons = {"type": "ineq", "fun": lambda d: 0.49 - d @ d}
        best = max(-minimize(f, rng.standard_normal(4) * 0.2, constraints=[cons], method="SLSQP",
                             options={"ftol": 1e-14, "maxiter": 500}).fun for _ in range(6))
        assert res.value[i] >= best - 1e-7
        assert res.value[i] == pytest.approx(best, rel=1e-6)


def test_trust_region_hard_case_is_solved_exactly():
    # v has no component along the top precision eigenvector and ||(3I - P)^-1 P v|| < eps:
    # nu = lambda_max, delta = (0.5, 1, sqrt(4 - 1.25)), value = 15 (worked by hand)
    res = trust_region_max(np.diag([1.0, 2.0, 3.0]), np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]), 2.0)
    np.testing.assert_allclose(res.nu, [3.0, 3.0])
    np.testing.assert_allclose(res.delta[0], [0.5, 1.0, np.sqrt(2.75)], rtol=1e-12)
    np.testing.assert_allclose(res.value, [15.0, 12.0], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(res.delta, axis=1), 2.0, rtol=1e-12)
    zero = trust_region_max(np.eye(3), np.ones(3), 0.0)
    assert zero.nu == np.inf and np.all(zero.delta == 0) and zero.value == pytest.approx(3.0)


def test_spectrum_matrix_functions_and_solve():
    from theory import Spectrum

    m = _model()
    spec = Spectrum.of(m.sigma)
    np.testing.assert_allclose(spec.apply(lambda s: s), m.sigma, atol=1e-12)
    np.testing.assert_allclose(spec.apply(lambda s: s - 1.0), m.sigma - np.eye(4), atol=1e-12)
    out = spec.apply(np.sqrt)
    assert np.array_equal(out, out.T)
    np.testing.assert_allclose(out @ out, m.sigma, atol=1e-12)
    np.testing.assert_allclose(spec.solve(m.mu), np.linalg.solve(m.sigma, m.mu), rtol=1e-9)
    values_only = Spectrum.of(m.sigma, vectors=False)
    np.testing.assert_allclose(values_only.solve(m.mu), np.linalg.solve(m.sigma, m.mu), rtol=1e-9)
    with pytest.raises(ValueError, match="eigenvalues only"):
        values_only.apply(np.sqrt)
