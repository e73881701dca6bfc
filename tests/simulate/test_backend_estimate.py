"""Backend selection, seeded streams, Estimate, and the n^-1/2 law of the Monte-Carlo error."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from simulate.backend import backend_of, check_finite, get_xp, make_rng, to_numpy
from simulate.closed_forms import vulnerability_closed_form
from simulate.estimate import Estimate, estimate, estimate_proportion
from simulate.experiments import spec_model
from simulate.gaussian import lagrangian_attack, mahalanobis_sq, sample_gaussian_model

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def test_numpy_backend_and_inference():
    assert get_xp("numpy") is np
    assert get_xp(np) is np
    assert backend_of(np.zeros(3), 1.0, None) is np


def test_unknown_backend_is_rejected_naming_the_flag():
    with pytest.raises(ValueError, match=r"unknown backend \(--backend / xp\) 'torch'; valid: numpy, cupy"):
        get_xp("torch")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_cupy_without_cupy_is_a_clear_error():
    with pytest.raises(ValueError, match=r"backend 'cupy' \(--backend cupy / xp='cupy'\).*not installed"):
        get_xp("cupy")


def test_seeded_streams_reproduce_and_differ_across_seeds():
    mu, sigma, _, _ = spec_model(np)
    a = sample_gaussian_model(mu, sigma, 50, make_rng(3))
    b = sample_gaussian_model(mu, sigma, 50, make_rng(3))
    c = sample_gaussian_model(mu, sigma, 50, make_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed=.* must be a non-negative integer"):
        make_rng(seed)


def test_check_finite_names_the_argument():
    with pytest.raises(ValueError, match="mu must be finite"):
        check_finite("mu", np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="eps=inf must be a finite number"):
        check_finite("eps", math.inf)


def test_estimate_mean_stderr_and_ci():
    e = estimate(np.array([1.0, 2.0, 3.0, 4.0]), seed=7)
    assert e.mean == 2.5 and e.n == 4 and e.seed == 7
    assert e.stderr == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    lo, hi = e.ci(0.95)
    assert lo == pytest.approx(2.5 - 1.959964 * e.stderr, rel=1e-5) and hi > e.mean
    assert e.z_score(2.5) == 0.0 and e.agrees_with(2.5 + 4.9 * e.stderr)
    assert not e.agrees_with(2.5 + 5.1 * e.stderr)
    with pytest.raises(ValueError, match=r"level=1.5 must be a number in \(0, 1\)"):
        e.ci(1.5)


def test_one_estimate_class_and_one_z_sign_for_theory_and_simulate():
    import theory
    import theory.monte_carlo
    from foundation.estimate import Estimate as Shared

    assert Estimate is Shared and theory.Estimate is Shared and theory.monte_carlo.Estimate is Shared
    e = Shared(2.0, 0.5, 10)
    assert e.z_score(1.0) == 2.0 and e.z_score(3.0) == -2.0  # (mean - value) / stderr
    assert Shared(1.0, 0.0, 5).z_score(0.0) == math.inf and Shared(1.0, 0.0, 5).z_score(1.0) == 0.0
    # theory's Monte-Carlo route uses the same sign: an estimate above a value has z > 0
    mc = theory.usefulness_mc(np.array([1.0, 0.0]), theory.GaussianModel([1.0, 0.5], np.eye(2)),
                              n_samples=1000, seed=0)
    assert mc.z_score(mc.mean - mc.stderr) == pytest.approx(1.0)
    assert mc.ci(0.95) == pytest.approx((mc.mean - 1.959964 * mc.stderr, mc.mean + 1.959964 * mc.stderr))


def test_estimate_needs_two_samples():
    with pytest.raises(ValueError, match=r"samples=1 must be an integer >= 2"):
        estimate(np.array([1.0]))


def test_proportion_stderr_is_never_zero():
    e = estimate_proportion(np.zeros(100, dtype=bool))
    assert e.mean == 0.0 and e.stderr > 0


def test_estimate_is_frozen():
    e = Estimate(1.0, 0.1, 10)
    with pytest.raises(AttributeError):
        e.mean = 2.0  # type: ignore[misc]


def test_monte_carlo_error_shrinks_like_inverse_sqrt_n():
    """Theorem-1 vulnerability estimates: the RMS error over 24 replicates against the closed
    form falls with slope -1/2 in log n, and the reported stderr matches the observed spread."""
    mu, sigma, _, sig_np = spec_model(np)
    c = 2.0 / np.linalg.eigvalsh(sig_np)[0]
    a_inv = np.linalg.inv(sigma)
    truth = vulnerability_closed_form(sig_np, c)
    ns = [500, 2000, 8000, 32000]
    rms, se_ratio = [], []
    for n in ns:
        errs, ses = [], []
        for r in range(24):
            x, y = sample_gaussian_model(mu, sigma, n, make_rng(10_000 * n + r))
            v = x - y[:, None] * mu
            gain = estimate(mahalanobis_sq(v + lagrangian_attack(v, a_inv, c), a_inv) - mahalanobis_sq(v, a_inv))
            errs.append(gain.mean - truth)
            ses.append(gain.stderr)
        rms.append(math.sqrt(np.mean(np.square(errs))))
        se_ratio.append(rms[-1] / np.mean(ses))
    slope = np.polyfit(np.log(ns), np.log(rms), 1)[0]
    assert -0.7 < slope < -0.3, (slope, rms)
    assert all(0.6 < r < 1.6 for r in se_ratio), se_ratio
    assert to_numpy(np.float64(1.0)) == 1.0
