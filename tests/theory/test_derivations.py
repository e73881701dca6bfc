"""sympy derivations (theory/derivations.py) side by side with the numpy closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import (
    GaussianModel,
    robust_covariance,
    robust_eigenvalues,
    vulnerability,
    vulnerability_per_eigenvalue,
    worst_case_perturbation,
)
from theory import derivations as dv


@pytest.mark.parametrize("convention", ["paper", "half_nll", "penalized", "half_nll_penalized"])
def test_vulnerability_term_lambdified_matches_numpy(convention):
    f = sp.lambdify((dv.s, dv.C), dv.vulnerability_term(convention), "numpy")
    rng = np.random.default_rng(0)
    s = np.exp(rng.uniform(-3, 3, 50))
    c = (1 + np.exp(rng.uniform(-4, 2, 50))) / s
    np.testing.assert_allclose(f(s, c), vulnerability_per_eigenvalue(s, c, convention), rtol=1e-10)
    # summed over a spectrum it is the public vulnerability()
    sig = np.diag(s[:6])
    cc = 2.0 / s[:6].min()
    assert vulnerability(sig, cc, convention) == pytest.approx(float(np.sum(f(s[:6], cc))), rel=1e-10)


def test_paper_form_is_trace_formula_symbolically():
    a = 1 / (dv.C * dv.s - 1)  # eigenvalue of (C Sigma - I)^-1
    assert sp.simplify(dv.vulnerability_term("paper") - ((1 + a) ** 2 - 1)) == 0
    assert sp.simplify(dv.vulnerability_term("penalized") - a) == 0


def test_theorem2_stationarity_and_root():
    quad = dv.theorem2_stationarity()
    expected = dv.r**2 - (dv.s + 2 / dv.lam) * dv.r + 1 / dv.lam**2
    assert sp.simplify(quad - expected) == 0
    root = dv.theorem2_root()
    assert sp.simplify(quad.subs(dv.r, root)) == 0
    f = sp.lambdify((dv.s, dv.lam), root, "numpy")
    rng = np.random.default_rng(1)
    s = np.exp(rng.uniform(-4, 4, 100))
    lam = np.exp(rng.uniform(-4, 4, 100))
    numpy_r = np.array([robust_eigenvalues(si, li) for si, li in zip(s, lam)])
    np.testing.assert_allclose(f(s, lam), numpy_r, rtol=1e-10)
    # the root minimises the symbolic objective: compare with a dense grid on lam r > 1
    obj = sp.lambdify((dv.r, dv.s, dv.lam), dv.theorem2_objective(), "numpy")
    for si, li in zip(s[:10], lam[:10]):
        grid = (1 / li) * (1 + np.logspace(-6, 6, 20001))
        assert obj(f(si, li), si, li) <= obj(grid, si, li).min() + 1e-9 * abs(obj(f(si, li), si, li))


def test_theorem2_closed_form_matrix_equals_lambdified_root_in_eigenbasis():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    s = np.exp(rng.uniform(-2, 2, 5))
    f = sp.lambdify((dv.s, dv.lam), dv.theorem2_root(), "numpy")
    np.testing.assert_allclose(robust_covariance((q * s) @ q.T, 0.7), (q * f(s, 0.7)) @ q.T,
                               atol=1e-12, rtol=1e-10)


def test_delta_star_scalar():
    assert sp.simplify(dv.delta_star_scalar() - dv.v / (dv.C * dv.s - 1)) == 0


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31), factor=st.floats(1.05, 20.0))
def test_delta_star_matrix_lambdified_matches_worst_case_perturbation(seed, factor):
    expr, entries, vs = dv.delta_star_matrix(2)
    f = sp.lambdify((*entries, *vs, dv.C), list(expr), "numpy")
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, 2))
    sigma = a @ a.T + 0.05 * np.eye(2)
    c = factor / np.linalg.eigvalsh(sigma).min()
    x = rng.standard_normal(2) * 3
    model = GaussianModel(np.zeros(2), sigma)
    got = worst_case_perturbation(model, x, 1, c)
    want = np.array(f(sigma[0, 0], sigma[0, 1], sigma[1, 1], x[0], x[1], c), dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.linalg.norm(want))
