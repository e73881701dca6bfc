"""The Gaussian robust-features model of the paper's section 4.

Model (paper sec. 4, "Setup"; docs/paper-notes.md sec. 5.1): y is uniform on {-1, +1} and
x | y ~ N(y mu*, Sigma*). The class-conditional likelihood ratio gives the Bayes classifier
sign(w . x) with w = Sigma*^-1 mu* (linear discriminant analysis).

Every spectral quantity of the theory (Theorems 1-3) is a function of the eigenvalues of a
covariance, often with the same eigenvectors, so a covariance is eigendecomposed once into a
:class:`Spectrum` that the other functions accept and reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Union

import numpy as np
import scipy.linalg

from foundation import checks as C
from theory._checks import as_vector

Array = np.ndarray

#: relative tolerance for symmetry, in units of max |sigma_ij|
SYMMETRY_RTOL = 1e-8


def as_covariance(sigma: Any, name: str = "sigma") -> Array:
    """Validate a covariance matrix (square, finite, symmetric) and return it symmetrised.

    Positive definiteness is checked by the caller that factorises it (eigh or Cholesky), so the
    factorisation is not paid twice. Raises ``ValueError`` naming ``name``.
    """
    arr = np.asarray(sigma, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (d, d) matrix; got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be finite; found {int(bad.sum())} NaN/inf entries")
    scale = float(np.max(np.abs(arr))) or 1.0
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > SYMMETRY_RTOL * scale:
        raise ValueError(
            f"{name} must be symmetric; max |{name} - {name}^T| = {asym:.3g} exceeds the tolerance "
            f"{SYMMETRY_RTOL:g} * max|{name}| = {SYMMETRY_RTOL * scale:.3g}"
        )
    return (arr + arr.T) / 2


def _check_pd(values: Array, name: str) -> None:
    smallest = float(values[0])
    if not smallest > 0:
        raise ValueError(
            f"{name} must be positive definite; its smallest eigenvalue is {smallest:.6g} "
            f"(valid: every eigenvalue > 0)"
        )


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigendecomposition ``matrix = vectors @ diag(values) @ vectors.T`` of an SPD matrix.

    ``values`` are ascending. ``vectors`` is ``None`` when only the eigenvalues were computed
    (enough for Theorem 1 and the worst case of Theorem 3, and about twice as fast at large d).
    """

    values: Array
    vectors: Array | None
    matrix: Array

    @classmethod
    def of(cls, sigma: Any, name: str = "sigma", *, vectors: bool = True) -> "Spectrum":
        """Validate ``sigma`` and eigendecompose it once (LAPACK ``syevd``)."""
        mat = as_covariance(sigma, name)
        if vectors:
            vals, vecs = scipy.linalg.eigh(mat, driver="evd", check_finite=False)
        else:
            vals, vecs = scipy.linalg.eigh(mat, eigvals_only=True, check_finite=False), None
        _check_pd(vals, name)
        for arr in (vals, vecs, mat):
            if arr is not None:
                arr.setflags(write=False)
        return cls(values=vals, vectors=vecs, matrix=mat)

    @property
    def d(self) -> int:
        return int(self.values.shape[0])

    @property
    def min(self) -> float:
        return float(self.values[0])

    @property
    def max(self) -> float:
        return float(self.values[-1])

    @property
    def condition_number(self) -> float:
        return self.max / self.min

    def require_vectors(self, name: str = "sigma") -> "Spectrum":
        """This spectrum, or a fresh one with eigenvectors when they were not computed."""
        return self if self.vectors is not None else Spectrum.of(self.matrix, name)

    def apply(self, f: Callable[[Array], Array]) -> Array:
        """The matrix function ``V diag(f(values)) V^T`` (symmetric by construction)."""
        if self.vectors is None:
            raise ValueError("this Spectrum holds eigenvalues only; build it with vectors=True")
        vals = np.asarray(f(self.values), dtype=float)
        if np.all(vals > 0):
            # V diag(f) V^T = B B^T with B = V sqrt(f): a symmetric rank-k update (half a GEMM)
            from scipy.linalg.blas import dsyrk

            b = np.asfortranarray(self.vectors * np.sqrt(vals))
            upper = dsyrk(1.0, b)
            return np.triu(upper) + np.triu(upper, 1).T
        out = (self.vectors * vals) @ self.vectors.T
        return (out + out.T) / 2

    def solve(self, b: Array) -> Array:
        """matrix^-1 b from the eigendecomposition, O(d^2) per right-hand side."""
        if self.vectors is None:
            import scipy.linalg

            return scipy.linalg.cho_solve(scipy.linalg.cho_factor(self.matrix), b)
        coef = self.vectors.T @ b
        return self.vectors @ (coef / (self.values if coef.ndim == 1 else self.values[:, None]))

    def to_eigenbasis(self, v: Array) -> Array:
        """Coordinates of the rows of ``v`` in the eigenbasis."""
        if self.vectors is None:
            raise ValueError("this Spectrum holds eigenvalues only; build it with vectors=True")
        return v @ self.vectors

    def from_eigenbasis(self, u: Array) -> Array:
        if self.vectors is None:
            raise ValueError("this Spectrum holds eigenvalues only; build it with vectors=True")
        return u @ self.vectors.T


CovarianceLike = Union[Array, "GaussianModel", Spectrum]


def spectrum_of(sigma: CovarianceLike, name: str = "sigma", *, vectors: bool = True) -> Spectrum:
    """Spectrum of a covariance given as an array, a :class:`Spectrum` or a :class:`GaussianModel`
    (whose cached spectrum is reused; no second eigendecomposition)."""
    if isinstance(sigma, Spectrum):
        return sigma.require_vectors(name) if vectors else sigma
    if isinstance(sigma, GaussianModel):
        return sigma.spectrum
    return Spectrum.of(sigma, name, vectors=vectors)


class GaussianModel:
    """y ~ Uniform{-1,+1}, x | y ~ N(y mu, sigma) (paper sec. 4; docs/paper-notes.md sec. 5.1).

    ``mu`` (d,) and ``sigma`` (d, d) are validated: finite, matching shapes, sigma symmetric
    positive definite. Arrays are stored read-only; the eigendecomposition is computed once on
    first use (:attr:`spectrum`) and reused by every theory function that receives the model.
    """

    def __init__(self, mu: Any, sigma: Any):
        sig = as_covariance(sigma, "sigma")
        d = sig.shape[0]
        mu_arr = np.asarray(mu, dtype=float)
        if mu_arr.shape != (d,):
            raise ValueError(f"mu has shape {mu_arr.shape} but sigma is {sig.shape}; mu must have shape ({d},)")
        mu_arr = as_vector(mu_arr, "mu", d).copy()
        try:
            chol = scipy.linalg.cholesky(sig, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            _check_pd(np.linalg.eigvalsh(sig), "sigma")
            raise  # pragma: no cover - eigvalsh found it PD but Cholesky failed
        for arr in (mu_arr, sig, chol):
            arr.setflags(write=False)
        self._mu = mu_arr
        self._sigma = sig
        self._chol = chol

    # -- basic properties -------------------------------------------------------------------
    @property
    def mu(self) -> Array:
        return self._mu

    @property
    def sigma(self) -> Array:
        return self._sigma

    @property
    def d(self) -> int:
        return int(self._mu.shape[0])

    @property
    def cholesky(self) -> Array:
        """Lower Cholesky factor L of sigma (sigma = L L^T)."""
        return self._chol

    @cached_property
    def spectrum(self) -> Spectrum:
        """Eigendecomposition of sigma, computed once."""
        vals, vecs = scipy.linalg.eigh(self._sigma, driver="evd", check_finite=False)
        _check_pd(vals, "sigma")
        vals.setflags(write=False)
        vecs.setflags(write=False)
        return Spectrum(values=vals, vectors=vecs, matrix=self._sigma)

    def solve(self, b: Array) -> Array:
        """sigma^-1 b (Cholesky solve); b may be (d,) or (d, k)."""
        return scipy.linalg.cho_solve((self._chol, True), b, check_finite=False)

    @cached_property
    def bayes_direction(self) -> Array:
        """w = sigma^-1 mu: the Bayes (LDA) classifier is sign(w . x) (paper sec. 4)."""
        w = self.solve(self._mu)
        w.setflags(write=False)
        return w

    @property
    def mahalanobis_norm(self) -> float:
        """||mu||_{sigma^-1} = sqrt(mu^T sigma^-1 mu)."""
        return float(np.sqrt(self._mu @ self.bayes_direction))

    @property
    def bayes_accuracy(self) -> float:
        """Accuracy of the Bayes classifier, Phi(||mu||_{sigma^-1})."""
        from scipy.special import ndtr

        return float(ndtr(self.mahalanobis_norm))

    @property
    def input_covariance(self) -> Array:
        """Cov(x) = sigma + mu mu^T (x has mean zero under the label mixture)."""
        return self._sigma + np.outer(self._mu, self._mu)

    # -- sampling and classification -----------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> tuple[Array, Array]:
        """Draw ``n`` pairs: x of shape (n, d) and labels y in {-1, +1} of shape (n,)."""
        C.positive_int("n", n)
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        y = np.where(gen.random(n) < 0.5, -1.0, 1.0)
        z = gen.standard_normal((n, self.d))
        x = y[:, None] * self._mu + z @ self._chol.T
        return x, y

    def classify(self, x: Array) -> Array:
        """Bayes prediction sign(w . x) in {-1, +1} (ties go to +1) for rows of ``x``."""
        x = np.asarray(x, dtype=float)
        if x.shape[-1] != self.d:
            raise ValueError(f"x has last dimension {x.shape[-1]}; the model has d={self.d}")
        return np.where(x @ self.bayes_direction >= 0, 1.0, -1.0)

    def __repr__(self) -> str:
        return f"GaussianModel(d={self.d}, ||mu||={np.linalg.norm(self._mu):.4g})"
