"""Linear features (section 2), the Tsipras toy, and the Gaussian-world section-3 pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulate.backend import make_rng
from simulate.estimate import estimate
from simulate.experiments import pipeline_model, run_pipeline, run_tsipras
from simulate.gaussian import sample_gaussian_model
from simulate.linear import (
    dual_norm,
    gamma_closed_form,
    linear_accuracy_gaussian,
    measure_accuracy,
    measure_usefulness,
    pgd_linear,
    rho_closed_form,
    train_logistic,
    worst_case_linear,
)
from simulate.pipeline import (
    accuracy_on_d,
    d_det_threshold,
    expected_accuracy,
    fit_classifier,
    make_d_det,
    make_d_rand,
    match_representation,
    targeted_pgd_linear,
)
from simulate.tsipras import sample_tsipras, tsipras_accuracy, tsipras_tradeoff_bound


@settings(max_examples=30)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 8), eps=st.floats(0.0, 3.0),
       norm=st.sampled_from(["l2", "linf"]))
def test_pgd_on_a_linear_score_reaches_the_analytic_optimum(seed, d, eps, norm):
    rs = np.random.default_rng(seed)
    x, w = rs.normal(size=(8, d)), rs.normal(size=d)
    y = np.where(rs.random(8) < 0.5, -1.0, 1.0)
    delta = pgd_linear(x, y, w, eps, norm)
    np.testing.assert_allclose(delta, worst_case_linear(x, y, w, eps, norm), atol=1e-9)
    # the margin drops by exactly eps ||w||_*
    np.testing.assert_allclose(y * ((x + delta) @ w), y * (x @ w) - eps * dual_norm(w, norm), atol=1e-9)


def test_measured_rho_and_gamma_match_the_closed_forms_within_5_stderr():
    mu, sigma, mu_np, sig_np = pipeline_model(np, d=6)
    x, y = sample_gaussian_model(mu, sigma, 40_000, make_rng(2))
    for w in (np.linalg.solve(sig_np, mu_np), mu_np, np.eye(6)[2]):
        assert measure_usefulness(x, y, w, mu, sigma).agrees_with(rho_closed_form(w, mu_np, sig_np))
        for norm, eps in (("l2", 0.4), ("linf", 0.1)):
            gam = measure_usefulness(x, y, w, mu, sigma, eps=eps, norm=norm)
            assert gam.agrees_with(gamma_closed_form(w, mu_np, sig_np, eps, norm))


def test_linear_accuracy_closed_form_matches_simulation():
    mu, sigma, mu_np, sig_np = pipeline_model(np, d=6)
    x, y = sample_gaussian_model(mu, sigma, 40_000, make_rng(3))
    w = mu_np + 0.3
    for b, eps, norm in ((0.0, 0.0, "l2"), (0.3, 0.2, "l2"), (-0.2, 0.05, "linf")):
        est = measure_accuracy(x, y, w, b, eps=eps, norm=norm)
        assert est.agrees_with(linear_accuracy_gaussian(w, b, mu_np, sig_np, eps=eps, norm=norm))


def test_bad_norm_and_eps_are_rejected():
    with pytest.raises(ValueError, match="norm='l1' is not a threat model; valid: l2, linf"):
        dual_norm(np.ones(2), "l1")
    with pytest.raises(ValueError, match="eps=-0.5 must be a finite number >= 0"):
        train_logistic(np.ones((4, 2)), np.array([1.0, -1, 1, -1]), eps=-0.5)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.55, 0.99), eps=st.floats(0.0, 0.8),
       norm=st.sampled_from(["l2", "linf"]))
def test_tsipras_closed_form_accuracy_matches_simulation(seed, p, eps, norm):
    d = 10
    eta = 2 / np.sqrt(d)
    rs = np.random.default_rng(seed)
    w, b = rs.normal(size=d + 1), float(rs.normal() * 0.3)
    x, y = sample_tsipras(20_000, p=p, eta=eta, d=d, rng=make_rng(seed % 1000))
    est = measure_accuracy(x, y, w, b, eps=eps, norm=norm)
    assert est.agrees_with(tsipras_accuracy(w, b, p=p, eta=eta, eps=eps, norm=norm))


def test_tsipras_sampler_validates_arguments():
    with pytest.raises(ValueError, match=r"p=1.5 must be a number in \[0, 1\]"):
        sample_tsipras(10, p=1.5, eta=0.1, d=3, rng=make_rng(0))
    with pytest.raises(ValueError, match="eta=-0.1 must be a positive finite number"):
        sample_tsipras(10, p=0.9, eta=-0.1, d=3, rng=make_rng(0))
    with pytest.raises(ValueError, match="n=0 must be an integer >= 2"):
        sample_tsipras(0, p=0.9, eta=0.1, d=3, rng=make_rng(0))


def test_tsipras_experiment_standard_uses_nonrobust_features_robust_uses_the_robust_one():
    res = run_tsipras(np, n=4000, d=30, steps=300)
    checks = res["checks"]
    assert all(c["pass"] for c in checks.values()), checks
    models = res["curves"]["models"]
    assert models["standard"]["clean"] > 0.95 and models["standard"]["robust"] < 0.1
    assert models["robust"]["robust"] > 0.85
    assert models["robust"]["robust_feature_share"] > 0.9 > 0.5 > models["standard"]["robust_feature_share"]
    assert models["standard"]["robust"] <= tsipras_tradeoff_bound(models["standard"]["clean"], p=0.9) + 0.01


def test_targeted_pgd_on_a_linear_model_reaches_the_analytic_point():
    rs = np.random.default_rng(0)
    x, w = rs.normal(size=(50, 5)), rs.normal(size=5)
    t = np.where(rs.random(50) < 0.5, -1.0, 1.0)
    out = targeted_pgd_linear(x, t, w, 0.7)
    np.testing.assert_allclose(out, x + 0.7 * t[:, None] * (w / np.linalg.norm(w))[None, :], atol=1e-9)


def test_representation_matching_is_the_projection_formula():
    rs = np.random.default_rng(1)
    x = rs.normal(size=(40, 6))
    y = np.where(rs.random(40) < 0.5, -1.0, 1.0)
    g = rs.normal(size=(2, 6))
    rng = make_rng(9)
    z, yz = match_representation(x, y, g, rng=rng, steps=5000)
    perm = np.argsort(make_rng(9).random(40))
    proj = np.linalg.pinv(g) @ g
    np.testing.assert_allclose(z, x[perm] @ (np.eye(6) - proj).T + x @ proj.T, atol=1e-8)
    np.testing.assert_allclose(z @ g.T, x @ g.T, atol=1e-8)
    assert yz is y


def test_d_rand_accuracy_does_not_depend_on_eps_and_d_det_crosses_one_half_at_the_threshold():
    _, _, mu, sig = pipeline_model(np, d=10)
    accs = [expected_accuracy("d_rand", mu, sig, eps=e) for e in (0.01, 0.5, 5.0)]
    assert max(accs) - min(accs) < 1e-12 and accs[0] > 0.5
    thr = d_det_threshold(mu, sig)
    assert expected_accuracy("d_det", mu, sig, eps=thr) == pytest.approx(0.5, abs=1e-9)
    assert expected_accuracy("d_det", mu, sig, eps=0.9 * thr) < 0.5 < expected_accuracy("d_det", mu, sig, eps=1.1 * thr)
    with pytest.raises(ValueError, match="unknown construction 'd_x'"):
        expected_accuracy("d_x", mu, sig)


def test_d_det_and_d_rand_simulation_matches_closed_form_within_5_stderr():
    mu_x, sig_x, mu, sig = pipeline_model(np, d=10)
    for eps in (0.3, 0.8):
        det, rnd = [], []
        for r in range(6):
            rng = make_rng(50 + r)
            x, y = sample_gaussian_model(mu_x, sig_x, 10_000, rng)
            w = fit_classifier(x, y)
            det.append(accuracy_on_d(fit_classifier(*make_d_det(x, y, w, eps)), mu, sig))
            rnd.append(accuracy_on_d(fit_classifier(*make_d_rand(x, y, w, eps, rng=rng)), mu, sig))
        assert estimate(np.array(det)).agrees_with(expected_accuracy("d_det", mu, sig, eps=eps))
        assert estimate(np.array(rnd)).agrees_with(expected_accuracy("d_rand", mu, sig, eps=eps))


def test_pipeline_experiment_all_checks_pass_and_d_r_transfers_robustness():
    res = run_pipeline(np, n=8000, replicates=5, eps_grid=(0.3, 1.0))
    assert all(c["pass"] for c in res["checks"].values()), res["checks"]
    bars = res["curves"]["bars"]
    assert bars["d_r_robust"]["simulated"] > bars["d_nr_robust"]["simulated"] + 0.1
