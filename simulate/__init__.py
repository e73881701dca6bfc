"""Monte-Carlo engine (NumPy or CuPy) that cross-checks theory/.

simulate/ sits on the floor above theory/: it uses theory's closed forms (one source for every
formula, adapted in :mod:`simulate.closed_forms`) and never imports empirical/, paper_figures/ or
the CLI (its command is :mod:`robust_features.cli_simulate`).

Public surface, re-exported explicitly:

* backend: :func:`get_xp`, :func:`backend_of`, :func:`make_rng`, :func:`asarray`, :func:`to_numpy`
* results: :class:`Estimate` (the toolkit's one, :class:`foundation.estimate.Estimate`,
  shared with theory/), :func:`estimate`, :func:`estimate_proportion`
* Gaussian model: :func:`sample_gaussian_model`, :func:`mle_fit`, :func:`nll`, the attacks
  :func:`lagrangian_attack`, :func:`pgd_l2_attack`, :func:`trust_region_attack`, and
  :func:`adversarial_training`
* linear features/classifiers: :func:`measure_usefulness`, :func:`rho_closed_form`,
  :func:`gamma_closed_form`, :func:`pgd_linear`, :func:`train_logistic`, :func:`measure_accuracy`,
  :func:`linear_accuracy_gaussian`
* Tsipras toy: :func:`sample_tsipras`, :func:`tsipras_accuracy`, :func:`tsipras_tradeoff_bound`
* section-3 pipeline: :func:`make_d_det`, :func:`make_d_rand`, :func:`match_representation`,
  :func:`fit_classifier`, :func:`expected_accuracy`, :func:`d_det_threshold`
* experiments: :func:`run_theorems`, :func:`run_tsipras`, :func:`run_pipeline`, :func:`run_and_record`
"""

from simulate.backend import asarray, backend_of, get_xp, make_rng, to_numpy
from simulate.estimate import Estimate, estimate, estimate_proportion
from simulate.experiments import run_and_record, run_pipeline, run_theorems, run_tsipras
from simulate.gaussian import (
    TrainResult,
    adversarial_training,
    lagrangian_attack,
    mle_fit,
    nll,
    pgd_l2_attack,
    sample_gaussian_model,
    trust_region_attack,
)
from simulate.linear import (
    LinearModel,
    gamma_closed_form,
    linear_accuracy_gaussian,
    measure_accuracy,
    measure_usefulness,
    pgd_linear,
    rho_closed_form,
    train_logistic,
)
from simulate.pipeline import (
    d_det_threshold,
    expected_accuracy,
    fit_classifier,
    make_d_det,
    make_d_rand,
    match_representation,
)
from simulate.tsipras import sample_tsipras, tsipras_accuracy, tsipras_tradeoff_bound

__all__ = [
    "Estimate", "LinearModel", "TrainResult", "adversarial_training", "asarray", "backend_of",
    "d_det_threshold", "estimate", "estimate_proportion", "expected_accuracy", "fit_classifier",
    "gamma_closed_form", "get_xp", "lagrangian_attack", "linear_accuracy_gaussian", "make_d_det",
    "make_d_rand", "make_rng", "match_representation", "measure_accuracy", "measure_usefulness",
    "mle_fit", "nll", "pgd_l2_attack", "pgd_linear", "rho_closed_form", "run_and_record",
    "run_pipeline", "run_theorems", "run_tsipras", "sample_gaussian_model", "sample_tsipras",
    "to_numpy", "train_logistic", "trust_region_attack", "tsipras_accuracy", "tsipras_tradeoff_bound",
]
