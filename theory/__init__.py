"""Gaussian robust-features model (paper section 4) in closed form and numerically.

Public API (see docs/theory.md):

* model:       GaussianModel, Spectrum, spectrum_of, as_covariance
* Theorem 1:   worst_case_perturbation, vulnerability, vulnerability_per_eigenvalue
* Theorem 2:   robust_eigenvalues, robust_covariance, robust_objective, trust_region_max,
               fit_robust, RobustFit
* Theorem 3:   gradient_alignment, GradientAlignment, kantorovich_cosine,
               worst_case_mean_direction
* Section 2:   usefulness, robust_usefulness, linear_accuracy, linear_robust_accuracy, dual_norm
* Monte Carlo: Estimate, vulnerability_mc, usefulness_mc, robust_usefulness_mc,
               linear_robust_accuracy_mc

``Estimate`` is the toolkit's one estimate type (:class:`foundation.estimate.Estimate`,
``z_score(value) = (mean - value) / stderr``). theory/ imports only robust_features' records,
checks and estimate; never simulate/, empirical/, paper_figures/ or the CLI (its command is
:mod:`robust_features.cli_theory`).
"""

from theory.alignment import (
    GradientAlignment,
    gradient_alignment,
    kantorovich_cosine,
    worst_case_mean_direction,
)
from theory.features import (
    dual_norm,
    linear_accuracy,
    linear_robust_accuracy,
    robust_usefulness,
    usefulness,
)
from theory.misalignment import (
    VULNERABILITY_CONVENTIONS,
    vulnerability,
    vulnerability_per_eigenvalue,
    worst_case_perturbation,
)
from theory.model import GaussianModel, Spectrum, as_covariance, spectrum_of
from theory.monte_carlo import (
    Estimate,
    linear_robust_accuracy_mc,
    robust_usefulness_mc,
    usefulness_mc,
    vulnerability_mc,
)
from theory.robust_fit import RobustFit, fit_robust, spectral_lam
from theory.robust_learning import robust_covariance, robust_eigenvalues, robust_objective
from theory.trust_region import TrustRegionMax, trust_region_max

__all__ = [
    "Estimate",
    "GaussianModel",
    "GradientAlignment",
    "Spectrum",
    "TrustRegionMax",
    "VULNERABILITY_CONVENTIONS",
    "as_covariance",
    "dual_norm",
    "gradient_alignment",
    "kantorovich_cosine",
    "linear_accuracy",
    "linear_robust_accuracy",
    "linear_robust_accuracy_mc",
    "RobustFit",
    "fit_robust",
    "robust_covariance",
    "robust_eigenvalues",
    "robust_objective",
    "robust_usefulness",
    "robust_usefulness_mc",
    "spectral_lam",
    "spectrum_of",
    "trust_region_max",
    "usefulness",
    "usefulness_mc",
    "vulnerability",
    "vulnerability_mc",
    "vulnerability_per_eigenvalue",
    "worst_case_mean_direction",
    "worst_case_perturbation",
]
