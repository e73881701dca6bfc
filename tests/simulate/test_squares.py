"""The adversarial-squares toy (simulate/squares.py): the sampler, the certificate of sign(1^T x)
and the exact law of its certified radius, checked on samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulate.backend import make_rng
from simulate.estimate import estimate, estimate_proportion
from simulate.squares import (
    CIFAR_SHAPE,
    IRWIN_HALL_MAX_D,
    certified_radius,
    irwin_hall_cdf,
    ks_critical,
    ks_distance,
    linear_certificate,
    linear_flip_probability,
    linear_predict,
    linear_robust_accuracy,
    radius_cdf,
    radius_mean,
    radius_variance,
    run_squares_certificate,
    sample_squares,
)


# ---------------------------------------------------------------------------------------------
# the sampler
# ---------------------------------------------------------------------------------------------
@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), a=st.floats(0.0, 0.999), d=st.integers(1, 64))
def test_every_sampled_radius_is_at_least_one_minus_a_and_at_most_one_plus_a(seed, a, d):
    s = sample_squares(300, shape=(d,), pixel_noise=a, label_noise=0.3, seed=seed)
    r = certified_radius(s.x)
    assert r.min() >= linear_certificate(a) - 1e-12 and r.max() <= 1 + a + 1e-12
    # the image shows its clean sign, and the linear classifier predicts exactly that sign
    assert np.array_equal(np.sign(s.x.mean(axis=1)), s.sign)
    assert np.array_equal(linear_predict(s.x), (s.sign > 0).astype(np.int64))
    # every pixel lies within a of the clean sign: |x - sign| <= a
    assert np.abs(s.x - s.sign[:, None]).max() <= a + 1e-12


def test_certificate_infimum_is_approached_at_the_corner_of_the_noise_cube():
    a, d = 0.1, 5
    worst = np.full((1, d), 1.0 - a)                      # Y = +1, every pixel's noise at -a
    assert certified_radius(worst)[0] == pytest.approx(linear_certificate(a))
    # the perturbation of size R along -1 reaches the boundary exactly; anything smaller does not
    assert linear_predict(worst - (1 - a) * 0.999)[0] == 1 and linear_predict(worst - (1 - a) * 1.001)[0] == 0
    assert linear_certificate(0.1) == pytest.approx(0.9)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), p=st.floats(0.0, 1.0))
def test_label_noise_rate_and_labels_follow_the_definition(seed, p):
    s = sample_squares(4000, shape=(4,), label_noise=p, seed=seed)
    assert set(np.unique(s.y)) <= {0, 1} and s.y.dtype == np.int64
    assert estimate_proportion(s.noisy).agrees_with(p)
    assert estimate_proportion(s.y == 1).agrees_with(0.5)
    # a flipped label is the other class's image: the label disagrees with the image's sign exactly there
    assert np.array_equal(s.noisy, (2 * s.y - 1) != np.sign(s.x.mean(axis=1)))
    # the linear classifier is right against the noisy label exactly on the clean draws: rate 1 - p
    assert estimate_proportion(linear_predict(s.x) == s.y).agrees_with(linear_robust_accuracy(0.0, label_noise=p))


def test_the_cifar_sized_default_shape_and_dtype():
    s = sample_squares(3, seed=0, dtype="float32")
    assert s.x.shape == (3, *CIFAR_SHAPE) and s.x.dtype == np.float32 and s.d == 3072
    assert s.sign.dtype == np.float64 and set(np.unique(s.sign)) <= {-1.0, 1.0}


def test_numpy_result_is_reproducible_from_a_seed_and_an_rng_gives_the_same_stream():
    a, b = sample_squares(50, shape=(2, 3, 3), seed=7), sample_squares(50, shape=(2, 3, 3), seed=7)
    c = sample_squares(50, shape=(2, 3, 3), rng=make_rng(7))
    for u in (b, c):
        assert np.array_equal(a.x, u.x) and np.array_equal(a.y, u.y) and np.array_equal(a.sign, u.sign)
    assert not np.array_equal(a.x, sample_squares(50, shape=(2, 3, 3), seed=8).x)


# ---------------------------------------------------------------------------------------------
# the law of the certified radius
# ---------------------------------------------------------------------------------------------
def test_irwin_hall_cdf_has_its_known_values():
    assert irwin_hall_cdf(np.array([0.0, 0.25, 1.0]), 1).tolist() == [0.0, 0.25, 1.0]
    np.testing.assert_allclose(irwin_hall_cdf(np.array([0.5, 1.0, 1.5]), 2), [0.125, 0.5, 0.875])
    np.testing.assert_allclose(irwin_hall_cdf(np.array([1.0, 1.5, 2.0]), 3), [1 / 6, 0.5, 5 / 6])
    # symmetric about d/2 for every d up to the cap, and monotone
    for d in (4, 11, IRWIN_HALL_MAX_D):
        t = np.linspace(0, d, 101)
        f = irwin_hall_cdf(t, d)
        np.testing.assert_allclose(f + irwin_hall_cdf(d - t, d), 1.0, atol=1e-9)
        assert np.all(np.diff(f) >= -1e-12)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_radius_cdf_matches_monte_carlo_for_small_d(d):
    a, n = 0.1, 20_000
    r = certified_radius(sample_squares(n, shape=(d,), pixel_noise=a, seed=d).x)
    assert ks_distance(r, lambda t: radius_cdf(t, d=d, pixel_noise=a)) <= ks_critical(n)
    for t in (0.93, 0.97, 1.0, 1.04):   # pointwise, in standard errors
        assert estimate_proportion(r <= t).agrees_with(float(radius_cdf(t, d=d, pixel_noise=a)))
    # the KS check has power: the radius law of another d is rejected
    assert ks_distance(r, lambda t: radius_cdf(t, d=d + 3, pixel_noise=a)) > ks_critical(n)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), a=st.floats(0.01, 0.99), d=st.sampled_from([1, 3, 16, 3072]))
def test_closed_form_mean_and_variance_of_the_radius_match_samples(seed, a, d):
    r = certified_radius(sample_squares(4000, shape=(d,), pixel_noise=a, seed=seed).x)
    assert estimate(r).agrees_with(radius_mean(a))
    assert estimate((r - 1.0) ** 2).agrees_with(radius_variance(a, d=d))


def test_linear_robust_accuracy_and_flip_probability_closed_forms():
    a, p = 0.1, 0.1
    for eps in (0.0, 0.01, 0.5, 0.8999):
        assert linear_flip_probability(eps, pixel_noise=a) == 0.0
        assert linear_robust_accuracy(eps, pixel_noise=a, label_noise=p) == pytest.approx(1 - p)
    assert linear_flip_probability(1.1, pixel_noise=a) == 1.0 and linear_robust_accuracy(1.2, label_noise=p) == 0.0
    # in between: the Irwin-Hall law, e.g. d = 3 at eps = 0.95: IH_3(0.75) = 0.75^3 / 6
    assert linear_flip_probability(0.95, pixel_noise=a, d=3) == pytest.approx(0.75**3 / 6)
    assert linear_robust_accuracy(1.0, pixel_noise=a, label_noise=p, d=3) == pytest.approx(0.9 * 0.5)


def test_run_squares_certificate_passes_at_cifar_size_and_small_d():
    big = run_squares_certificate(3000, seed=1)
    assert big["passed"] == 1 and big["config"]["d"] == 3072
    assert big["radius"]["min"] >= 0.9 and big["linear"]["flip_rate"] == 0.0
    assert "radius_irwin_hall_ks" not in big["checks"]      # no exact CDF at d = 3072
    small = run_squares_certificate(20_000, shape=(3,), eps=0.95, seed=2)
    assert small["passed"] == 1
    assert small["checks"]["radius_irwin_hall_ks"]["pass"] == 1
    assert small["linear"]["flip_rate_closed_form"] == pytest.approx(0.75**3 / 6)
    assert all(isinstance(v, (int, float)) for c in small["checks"].values() for v in c.values())


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0, "seed": 0}, r"n=0 must be a positive integer"),
    ({"n": 5, "seed": 0, "pixel_noise": 1.0}, r"pixel_noise=1.0 must be a number in \[0, 1\)"),
    ({"n": 5, "seed": 0, "pixel_noise": -0.1}, r"pixel_noise=-0.1 must be a number in \[0, 1\)"),
    ({"n": 5, "seed": 0, "label_noise": 1.5}, r"label_noise=1.5 must be a number in \[0, 1\]"),
    ({"n": 5, "seed": 0, "shape": (3, 0)}, r"shape=\(3, 0\) must be a non-empty tuple of positive integers"),
    ({"n": 5, "seed": 0, "dtype": "int8"}, r"dtype='int8' is not a float type; valid: float64, float32"),
    ({"n": 5, "seed": -1}, r"seed=-1 must be an integer seed"),
    ({"n": 5}, r"give exactly one of seed and rng"),
    ({"n": 5, "seed": 0, "rng": np.random.default_rng(0)}, r"give exactly one of seed and rng"),
])
def test_bad_sampler_input_is_one_value_error_naming_the_parameter(kwargs, message):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=message):
        sample_squares(n, **kwargs)


def test_bad_closed_form_input_is_rejected():
    with pytest.raises(ValueError, match=r"d=21 must be at most 20 for the exact Irwin-Hall CDF"):
        irwin_hall_cdf(1.0, 21)
    with pytest.raises(ValueError, match=r"d=0 must be an integer >= 1"):
        radius_cdf(1.0, d=0)
    with pytest.raises(ValueError, match=r"eps=-0.1 must be a finite number >= 0"):
        linear_flip_probability(-0.1)
    with pytest.raises(ValueError, match=r"eps=0.95 >= 1 - pixel_noise = 0.9: the flip probability needs d"):
        linear_flip_probability(0.95)
    with pytest.raises(ValueError, match=r"d=3072 must be at most 20"):
        linear_flip_probability(0.95, d=3072)
    with pytest.raises(ValueError, match=r"pixel_noise=nan must be a number in \[0, 1\)"):
        linear_certificate(math.nan)
    with pytest.raises(ValueError, match=r"x must be a batch of images"):
        certified_radius(np.ones(3))
