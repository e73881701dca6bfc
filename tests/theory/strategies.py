"""Hypothesis strategies for random SPD Gaussian models (built directly, never filtered)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from theory import GaussianModel


@st.composite
def spectra(draw, min_dim: int = 1, max_dim: int = 8, lo: float = 0.05, hi: float = 20.0):
    """Eigenvalues in [lo, hi] (log-uniform-ish) of a random dimension."""
    d = draw(st.integers(min_dim, max_dim))
    logs = draw(st.lists(st.floats(np.log(lo), np.log(hi)), min_size=d, max_size=d))
    return np.sort(np.exp(np.array(logs)))


@st.composite
def spd_matrices(draw, min_dim: int = 1, max_dim: int = 8, lo: float = 0.05, hi: float = 20.0):
    """Sigma = Q diag(s) Q^T with a random orthogonal Q (seeded by hypothesis)."""
    s = draw(spectra(min_dim, max_dim, lo, hi))
    seed = draw(st.integers(0, 2**32 - 1))
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((s.size, s.size)))
    sigma = (q * s) @ q.T
    return (sigma + sigma.T) / 2


@st.composite
def gaussian_models(draw, min_dim: int = 1, max_dim: int = 8, lo: float = 0.05, hi: float = 20.0):
    sigma = draw(spd_matrices(min_dim, max_dim, lo, hi))
    d = sigma.shape[0]
    mu = np.array(draw(st.lists(st.floats(-3, 3), min_size=d, max_size=d)))
    if not np.any(np.abs(mu) > 1e-3):
        mu[0] = 1.0
    return GaussianModel(mu, sigma)
