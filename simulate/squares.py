"""The "adversarial squares" toy of Nakkiran's Distill response ("A Discussion of 'Adversarial
Examples Are Not Bugs, They Are Features': Adversarial Examples are Just Bugs, Too", Distill 2019),
simulated, with the exact certificate of its robust linear classifier.

Distribution (docs/squares.md): the label Y is +1 or -1 with probability 1/2 each, and

    X = (Y * 1_d + u) * eta,   u ~ Uniform[-a, a]^d (pixel noise),   eta = -1 w.p. p, +1 otherwise,

so an image is all-white (+1) or all-black (-1) up to pixel noise of amplitude ``a`` (0.1 in the
article), and with probability ``p`` (label noise, 0.1) it is the image of the other class. The
images are CIFAR-sized (3 x 32 x 32, d = 3072). Everything here is in the distribution's own units
(pixels near +-1); mapping to [0, 1] pixels for a network is :mod:`empirical.squares`' business.

The robust classifier sign(1^T x) has, at every point, the exact linf certified radius
R(x) = |1^T x| / ||1||_1 = |mean(x)| (the smallest linf perturbation reaching its boundary), and
R = |Y + mean(u)| = 1 + Y mean(u). Because u is symmetric, R has the law of 1 - a + (2a/d) S with
S ~ Irwin-Hall(d) (a sum of d independent Uniform[0, 1]), so

* inf over the support of R = 1 - a (:func:`linear_certificate`: no linf attack smaller than 0.9
  flips it anywhere),
* E R = 1 and Var R = a^2 / (3 d) (:func:`radius_mean`, :func:`radius_variance`),
* P(R <= t) = IH_d((t - 1 + a) d / (2a)), exactly (:func:`radius_cdf`, small d).

Against the noisy label Y its accuracy is exactly 1 - p, and it stays 1 - p under every linf
attack smaller than 1 - a (:func:`linear_robust_accuracy`). :func:`run_squares_certificate` checks
all of this on samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from foundation import checks as C
from simulate.backend import (
    Array,
    XP,
    backend_of,
    get_xp,
    make_rng,
    rng_xp,
    to_float,
    to_numpy,
)
from simulate.estimate import estimate, estimate_proportion
from simulate.experiments import check_line

CIFAR_SHAPE: tuple[int, int, int] = (3, 32, 32)
PIXEL_NOISE: float = 0.1      # the article's a: u ~ Uniform[-0.1, 0.1]^d
LABEL_NOISE: float = 0.1      # the article's 10% label noise: P(eta = -1)
IRWIN_HALL_MAX_D: int = 20    # the alternating-sum CDF loses < 1e-8 to cancellation up to here
DTYPES: tuple[str, ...] = ("float64", "float32")


@dataclass(frozen=True)
class SquaresSample:
    """Draws of the squares distribution.

    ``x``: images (n, *shape) in the distribution's units (pixels near +-1); ``y``: the labels as
    class indices, int64 0/1 with class 1 = Y = +1 (what a network is trained on; they carry the
    label noise); ``sign``: the clean sign Y * eta in {-1.0, +1.0}, the class the image actually
    shows (= sign(mean(x)), what the robust linear classifier predicts).
    """

    x: Array
    y: Array
    sign: Array

    @property
    def label_pm(self) -> Array:
        """The labels as Y in {-1.0, +1.0}."""
        return 2.0 * self.y - 1.0

    @property
    def noisy(self) -> Array:
        """Boolean mask of the draws whose label disagrees with their image (eta = -1)."""
        return self.label_pm != self.sign

    @property
    def d(self) -> int:
        """Pixels per image."""
        return int(math.prod(self.x.shape[1:]))


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not shape or any(not C.is_int(s) or s < 1 for s in shape):
        raise ValueError(f"shape={shape!r} must be a non-empty tuple of positive integers, e.g. (3, 32, 32)")
    return tuple(shape)


def check_pixel_noise(pixel_noise: Any) -> float:
    """The pixel-noise amplitude a: a number in [0, 1) (at a >= 1 the two classes' supports touch
    and the certificate 1 - a is gone)."""
    return C.in_range("pixel_noise", pixel_noise, 0.0, 1.0, hi_open=True)  # type: ignore[return-value]


def sample_squares(
    n: int,
    *,
    shape: tuple[int, ...] = CIFAR_SHAPE,
    pixel_noise: float = PIXEL_NOISE,
    label_noise: float = LABEL_NOISE,
    seed: int | None = None,
    rng: Any = None,
    xp: str | XP | None = None,
    dtype: str = "float64",
) -> SquaresSample:
    """Draw ``n`` images of ``shape`` from the squares distribution (module docstring).

    Randomness comes from ``rng`` (a generator from :func:`simulate.backend.make_rng`, which fixes
    the backend) or from ``seed`` on backend ``xp`` (default NumPy); give exactly one of them. The
    draws per call, in order: the label coins, the label-noise coins, the pixel noise; so a seed
    reproduces the sample exactly on its backend. ``dtype`` ('float64' or 'float32') is the
    images' float type (float32 halves the memory of a 10k x 3072 training set).
    """
    C.positive_int("n", n)
    shape = _check_shape(shape)
    a = check_pixel_noise(pixel_noise)
    p = C.probability("label_noise", label_noise)
    C.one_of("dtype", dtype, DTYPES, what="a float type")
    if (seed is None) == (rng is None):
        raise ValueError(f"give exactly one of seed and rng; got seed={seed!r} and rng={rng!r}")
    if rng is None:
        C.seed("seed", seed)
        rng = make_rng(seed, "numpy" if xp is None else xp)
    mod = rng_xp(rng)
    if xp is not None and get_xp(xp) is not mod:
        raise TypeError(f"xp={get_xp(xp).__name__!r} was requested but rng draws on {mod.__name__!r}")
    dt = getattr(mod, dtype)
    y_pm = mod.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dt)
    eta = mod.where(rng.random(n) < p, -1.0, 1.0).astype(dt)
    u = (2.0 * rng.random((n, *shape), dtype=dt) - 1.0) * dt(a)
    bcast = (n,) + (1,) * len(shape)
    x = (y_pm.reshape(bcast) + u) * eta.reshape(bcast)
    return SquaresSample(x=x, y=((y_pm + 1) / 2).astype(mod.int64), sign=(y_pm * eta).astype(mod.float64))


# ---------------------------------------------------------------------------------------------
# the robust linear classifier sign(1^T x) and its certificate
# ---------------------------------------------------------------------------------------------


def linear_predict(x: Array) -> Array:
    """sign(1^T x) per image, as class indices 0/1 (class 1 = +1; a tie, measure zero, gives 0)."""
    xp = backend_of(x)
    return (x.reshape(x.shape[0], -1).sum(axis=1, dtype=xp.float64) > 0).astype(xp.int64)


def certified_radius(x: Array) -> Array:
    """The exact linf certified radius of sign(1^T x) at each image of ``x`` (n, ...): the smallest
    linf perturbation that reaches its decision boundary, |1^T x| / ||1||_1 = |mean(x)| (float64).

    Any perturbation of linf size below it leaves the prediction unchanged; -R sign(mean x) 1_d
    reaches the boundary. The radius ignores any box on the pixels (here there is none; in
    [0, 1] units the box only makes attacks weaker, so the certificate still holds).
    """
    xp = backend_of(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a batch of images (n, ...); got shape {tuple(x.shape)}")
    return xp.abs(x.reshape(x.shape[0], -1).mean(axis=1, dtype=xp.float64))


def linear_certificate(pixel_noise: float = PIXEL_NOISE) -> float:
    """inf over the support of the certified radius: 1 - a (0.9 in the article), for every d.
    The infimum is approached (every pixel's noise at -a against the label) but has probability 0."""
    return 1.0 - check_pixel_noise(pixel_noise)


def radius_mean(pixel_noise: float = PIXEL_NOISE) -> float:
    """E R = E |Y + mean(u)| = 1 (|mean(u)| <= a < 1 and u is symmetric), for every d."""
    check_pixel_noise(pixel_noise)
    return 1.0


def radius_variance(pixel_noise: float = PIXEL_NOISE, *, d: int) -> float:
    """Var R = Var mean(u) = a^2 / (3 d) (a Uniform[-a, a] pixel has variance a^2 / 3)."""
    a = check_pixel_noise(pixel_noise)
    C.positive_int("d", d)
    return a * a / (3.0 * d)


def irwin_hall_cdf(s: Any, d: int) -> np.ndarray:
    """P(U_1 + ... + U_d <= s) for d independent Uniform[0, 1], exactly:
    (1/d!) sum_{k=0}^{floor(s)} (-1)^k C(d, k) (s - k)^d, evaluated on the nearer tail
    (F(s) = 1 - F(d - s) above d/2) to halve the cancellation. NumPy in, NumPy out (a host formula).
    Only ``d <= IRWIN_HALL_MAX_D`` (20): beyond it the alternating sum loses digits."""
    C.int_at_least("d", d, 1)
    if d > IRWIN_HALL_MAX_D:
        raise ValueError(f"d={d!r} must be at most {IRWIN_HALL_MAX_D} for the exact Irwin-Hall CDF "
                         "(the alternating sum cancels beyond it)")
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, float(d))
    upper = s > d / 2
    t = np.where(upper, d - s, s)
    total = np.zeros_like(t)
    for k in range(d // 2 + 1):      # t <= d/2, so no term beyond floor(d/2) is non-zero
        total += (-1) ** k * math.comb(d, k) * np.maximum(t - k, 0.0) ** d
    low = np.clip(total / math.factorial(d), 0.0, 1.0)
    return np.where(upper, 1.0 - low, low)


def radius_cdf(t: Any, *, d: int, pixel_noise: float = PIXEL_NOISE) -> np.ndarray:
    """P(R <= t) for the certified radius of a d-pixel image: R = 1 - a + (2a/d) S with
    S ~ Irwin-Hall(d), so P(R <= t) = IH_d((t - 1 + a) d / (2a)); exact, d <= 20 (at a = 0, R = 1)."""
    a = check_pixel_noise(pixel_noise)
    C.int_at_least("d", d, 1)
    t = np.asarray(t, dtype=np.float64)
    if a == 0.0:
        if d > IRWIN_HALL_MAX_D:
            irwin_hall_cdf(0.0, d)   # the same refusal for every a
        return (t >= 1.0).astype(np.float64)
    return irwin_hall_cdf((t - 1.0 + a) * d / (2.0 * a), d)


def linear_flip_probability(eps: float, *, pixel_noise: float = PIXEL_NOISE, d: int | None = None) -> float:
    """P(some linf perturbation of size <= eps changes sign(1^T x)) = P(R <= eps): exactly 0 for
    eps < 1 - a and 1 for eps >= 1 + a (any d); in between the Irwin-Hall CDF (needs d <= 20)."""
    a = check_pixel_noise(pixel_noise)
    C.non_negative_float("eps", eps)
    if eps < 1.0 - a:
        return 0.0
    if eps >= 1.0 + a:
        return 1.0
    if d is None:
        raise ValueError(f"eps={eps!r} >= 1 - pixel_noise = {1 - a:g}: the flip probability needs d "
                         f"(the number of pixels, <= {IRWIN_HALL_MAX_D})")
    return float(radius_cdf(eps, d=d, pixel_noise=a))


def linear_robust_accuracy(eps: float, *, pixel_noise: float = PIXEL_NOISE, label_noise: float = LABEL_NOISE,
                           d: int | None = None) -> float:
    """Accuracy of sign(1^T x) against the noisy label Y under the worst linf perturbation of size
    eps: it is right exactly when eta = +1 and the attack cannot reach the boundary, so
    (1 - p) (1 - P(R <= eps)) (R and eta are independent); = 1 - p for every eps < 1 - a."""
    p = C.probability("label_noise", label_noise)
    return (1.0 - p) * (1.0 - linear_flip_probability(eps, pixel_noise=pixel_noise, d=d))


# ---------------------------------------------------------------------------------------------
# Monte-Carlo check of the closed forms
# ---------------------------------------------------------------------------------------------


def ks_distance(samples: Any, cdf: Any) -> float:
    """Kolmogorov-Smirnov distance sup_t |F_n(t) - F(t)| of 1-D ``samples`` (host) from ``cdf``
    (a vectorised callable)."""
    s = np.sort(np.asarray(to_numpy(samples), dtype=np.float64).ravel())
    n = s.shape[0]
    f = np.asarray(cdf(s), dtype=np.float64)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def ks_critical(n: int, alpha: float = 0.001) -> float:
    """The asymptotic one-sample KS critical value sqrt(-ln(alpha/2) / (2n)) at level ``alpha``."""
    C.positive_int("n", n)
    C.in_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    return math.sqrt(-math.log(alpha / 2.0) / (2.0 * n))


def run_squares_certificate(
    n: int = 20_000,
    *,
    shape: tuple[int, ...] = CIFAR_SHAPE,
    pixel_noise: float = PIXEL_NOISE,
    label_noise: float = LABEL_NOISE,
    eps: float = 0.01,
    seed: int = 0,
    xp: str | XP = "numpy",
) -> dict[str, Any]:
    """Sample ``n`` images and compare the certified radii of sign(1^T x) with the closed forms.

    Checks (z = (simulated - closed form) / stderr, pass = |z| <= 5, as in
    :func:`simulate.experiments.check_line`): the smallest sampled radius is >= 1 - a (a hard
    bound, no tolerance); the mean radius vs 1; the mean of (R - 1)^2 vs a^2/(3d); the label-noise
    rate vs p; the linear classifier's accuracy against the noisy label vs 1 - p and its flip rate
    under the linf attack of size ``eps`` (the exact -eps sign(mean x) 1_d, a real perturbation)
    vs :func:`linear_flip_probability`; for d <= 20 the KS distance of the radii from the
    Irwin-Hall law against the 0.1% critical value. Returns a JSON-able dict of numbers.
    """
    C.int_at_least("n", n, 2)
    shape = _check_shape(shape)
    a = check_pixel_noise(pixel_noise)
    p = C.probability("label_noise", label_noise)
    C.non_negative_float("eps", eps)
    C.seed("seed", seed)
    mod = get_xp(xp)
    s = sample_squares(n, shape=shape, pixel_noise=a, label_noise=p, rng=make_rng(seed, mod))
    d = s.d
    r = certified_radius(s.x)
    r_min = to_float(r.min())
    cert = linear_certificate(a)
    checks: dict[str, Any] = {
        "min_radius_at_least_certificate": {"min_radius": r_min, "certificate": cert, "pass": int(r_min >= cert)},
        "radius_mean": check_line(estimate(r, seed=seed), radius_mean(a)),
        "radius_variance": check_line(estimate((r - 1.0) ** 2, seed=seed), radius_variance(a, d=d)),
        "label_noise_rate": check_line(estimate_proportion(s.noisy, seed=seed), p),
    }
    pred = linear_predict(s.x)
    checks["linear_accuracy_noisy_label"] = check_line(estimate_proportion(pred == s.y, seed=seed),
                                                       linear_robust_accuracy(0.0, pixel_noise=a, label_noise=p))
    # the worst linf perturbation of size eps for a linear score: -eps sign(mean x) on every pixel
    direction = mod.where(pred == 1, 1.0, -1.0).reshape((n,) + (1,) * len(shape))
    attacked = linear_predict(s.x - eps * direction)
    exact = eps < 1 - a or eps >= 1 + a or d <= IRWIN_HALL_MAX_D   # else the flip rate has no exact form here
    flip_closed = linear_flip_probability(eps, pixel_noise=a, d=d) if exact else None
    flips = estimate_proportion(attacked != pred, seed=seed)
    if flip_closed is not None:
        checks["linear_flip_rate"] = check_line(flips, flip_closed)
    if d <= IRWIN_HALL_MAX_D:
        ks = ks_distance(r, lambda t: radius_cdf(t, d=d, pixel_noise=a))
        crit = ks_critical(n)
        checks["radius_irwin_hall_ks"] = {"ks_distance": ks, "critical_0.001": crit, "n": n, "pass": int(ks <= crit)}
    return {
        "config": {"n": n, "shape": list(shape), "d": d, "pixel_noise": a, "label_noise": p, "eps": eps,
                   "seed": seed, "backend": mod.__name__},
        "radius": {"min": r_min, "mean": to_float(r.mean()), "var": to_float(r.var()),
                   "certificate": cert, "closed_mean": radius_mean(a), "closed_var": radius_variance(a, d=d)},
        "linear": {"accuracy": to_float((pred == s.y).mean()), "flip_rate": flips.mean,
                   "flip_rate_closed_form": flip_closed},
        "checks": checks,
        "passed": int(all(c["pass"] for c in checks.values())),
    }


__all__ = ["CIFAR_SHAPE", "IRWIN_HALL_MAX_D", "LABEL_NOISE", "PIXEL_NOISE", "SquaresSample", "certified_radius",
           "check_pixel_noise", "irwin_hall_cdf", "ks_critical", "ks_distance", "linear_certificate",
           "linear_flip_probability", "linear_predict", "linear_robust_accuracy", "radius_cdf", "radius_mean",
           "radius_variance", "run_squares_certificate", "sample_squares"]
