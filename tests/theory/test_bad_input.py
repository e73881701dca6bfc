"""Bad input raises ValueError naming the argument, its value and what is valid."""

from __future__ import annotations

import numpy as np
import pytest

from theory import (
    GaussianModel,
    fit_robust,
    gradient_alignment,
    linear_robust_accuracy,
    robust_covariance,
    robust_usefulness,
    trust_region_max,
    usefulness,
    vulnerability,
    worst_case_perturbation,
)

GOOD = np.diag([0.05, 1.0])


@pytest.mark.parametrize(
    ("sigma", "match"),
    [
        (np.ones((2, 3)), r"sigma must be a non-empty square \(d, d\) matrix; got shape \(2, 3\)"),
        (np.ones(3), r"square \(d, d\) matrix; got shape \(3,\)"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), r"sigma must be symmetric; max \|sigma - sigma\^T\| = 0.5"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), r"sigma must be finite; found 2 NaN/inf entries"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), r"sigma must be positive definite; its smallest eigenvalue is -1"),
    ],
)
def test_bad_covariances_are_rejected_everywhere(sigma, match):
    with pytest.raises(ValueError, match=match):
        GaussianModel(np.zeros(np.asarray(sigma).shape[0]), sigma)
    star = match.replace("sigma", "sigma_star")
    with pytest.raises(ValueError, match=star):
        robust_covariance(sigma, 1.0)
    with pytest.raises(ValueError, match=star):
        vulnerability(sigma, 100.0)
    with pytest.raises(ValueError, match=match):
        gradient_alignment(sigma)


def test_penalty_below_the_bound_says_why():
    with pytest.raises(ValueError, match=r"penalty C=0.8 must exceed 1/sigma_min\(Sigma\*\)=20 for "
                                         r"the inner maximisation to be bounded"):
        vulnerability(GOOD, 0.8)
    with pytest.raises(ValueError, match=r"penalty C=20 must exceed 1/sigma_min\(Sigma\)=20"):
        worst_case_perturbation(GaussianModel([1.0, 0.0], GOOD), [0.0, 0.0], 1, 20.0)
    with pytest.raises(ValueError, match=r"penalty C=-1 must be a positive finite number"):
        vulnerability(GOOD, -1)


def test_negative_eps_and_lam():
    m = GaussianModel([1.0, 0.0], GOOD)
    with pytest.raises(ValueError, match=r"lam=-1.0 must be a positive number \(inf allowed\)"):
        robust_covariance(GOOD, -1.0)
    with pytest.raises(ValueError, match=r"lam=0 must be a positive number"):
        robust_covariance(GOOD, 0)
    with pytest.raises(ValueError, match=r"eps=-0.5 must be a finite number >= 0"):
        fit_robust(m, -0.5)
    with pytest.raises(ValueError, match=r"eps=nan must be a finite number >= 0"):
        robust_usefulness([1.0, 0.0], m, float("nan"))
    with pytest.raises(ValueError, match=r"eps=-1 must be a finite number >= 0"):
        trust_region_max(GOOD, np.zeros((3, 2)), -1)
    with pytest.raises(ValueError, match=r"eps=-0.1 must be a finite number >= 0"):
        linear_robust_accuracy([1.0, 0.0], 0.0, m, -0.1)


def test_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"mu has shape \(3,\) but sigma is \(2, 2\); mu must have shape \(2,\)"):
        GaussianModel(np.zeros(3), GOOD)
    m = GaussianModel([1.0, 0.0], GOOD)
    with pytest.raises(ValueError, match=r"w has shape \(3,\) but the model has dimension d=2"):
        usefulness(np.ones(3), m)
    with pytest.raises(ValueError, match=r"mu has shape \(3,\) but the model has dimension d=2"):
        gradient_alignment(GOOD, np.ones(3))
    with pytest.raises(ValueError, match=r"x has shape \(3,\); expected \(2,\) or \(n, 2\)"):
        worst_case_perturbation(m, np.zeros(3), 1, 100.0)
    with pytest.raises(ValueError, match=r"v has shape \(4, 3\); expected \(2,\) or \(n, 2\)"):
        trust_region_max(GOOD, np.zeros((4, 3)), 1.0)
    with pytest.raises(ValueError, match=r"x must be \(n, 2\) and y \(n,\)"):
        fit_robust(m, 1.0, x=np.zeros((5, 3)), y=np.ones(5))


def test_invalid_choices_list_the_valid_ones():
    m = GaussianModel([1.0, 0.0], GOOD)
    with pytest.raises(ValueError, match=r"convention='nll' is not a vulnerability convention; valid: paper, half_nll"):
        vulnerability(GOOD, 100.0, "nll")
    with pytest.raises(ValueError, match=r"method='exact' is not a robust-covariance method; valid: closed_form, numeric"):
        robust_covariance(GOOD, 1.0, method="exact")
    with pytest.raises(ValueError, match=r"norm='l1' is not a threat model; valid: l2, linf"):
        robust_usefulness([1.0, 0.0], m, 0.1, norm="l1")
    with pytest.raises(ValueError, match=r"w must be nonzero"):
        usefulness([0.0, 0.0], m)
    with pytest.raises(ValueError, match=r"y must hold labels in \{-1, \+1\}"):
        worst_case_perturbation(m, [0.0, 0.0], 0, 100.0)
    with pytest.raises(ValueError, match=r"n_samples=2 must be an integer >= 3"):
        fit_robust(m, 1.0, n_samples=2)
