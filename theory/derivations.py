"""Symbolic (sympy) derivations of the section-4 closed forms, independent of the numpy code.

Each function derives its result from the model's definitions rather than stating it, and returns
a sympy expression; ``tests/theory/test_derivations.py`` lambdifies them and compares with the
numpy functions of :mod:`theory`.

* :func:`delta_star_scalar`, :func:`delta_star_matrix`: the Lagrangian adversary's maximiser, from
  the first-order condition of (v + delta)^T Sigma^-1 (v + delta) - C ||delta||^2 (Theorem 1).
* :func:`vulnerability_term`: the Theorem 1 per-eigenvalue term, as an expectation over
  v ~ N(0, s) computed by ``sympy.stats``, in each convention.
* :func:`theorem2_objective`, :func:`theorem2_stationarity`, :func:`theorem2_root`: the per-eigen
  robust objective E_v[max_delta ...] + log r, its stationarity condition
  r^2 - (s + 2/lam) r + 1/lam^2 = 0, and the root with lam r > 1 (Theorem 2).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from foundation import checks  # not ``as C``: C is the penalty symbol here

s, C, v, delta, r, lam = sp.symbols("s C v delta r lambda", positive=True)


@lru_cache(maxsize=None)
def delta_star_scalar() -> sp.Expr:
    """Maximiser of (v + delta)^2 / s - C delta^2 in delta (one eigen-direction): v / (C s - 1).

    The objective is concave in delta iff C > 1/s (second derivative 2/s - 2C < 0)."""
    d = sp.Symbol("delta", real=True)
    vv = sp.Symbol("v", real=True)
    obj = (vv + d) ** 2 / s - C * d**2
    (sol,) = sp.solve(sp.diff(obj, d), d)
    return sp.simplify(sol.subs(vv, v))


@lru_cache(maxsize=None)
def delta_star_matrix(dim: int = 2) -> tuple[sp.Matrix, tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    """Maximiser of (v + delta)^T Sigma^-1 (v + delta) - C ||delta||^2 for a generic symmetric
    ``dim`` x ``dim`` Sigma, by solving the linear first-order conditions symbolically.

    Returns (delta*, the free entries of Sigma in row-major upper-triangular order, v's symbols).
    """
    entries = sp.symbols(f"sig0:{dim * (dim + 1) // 2}", real=True)
    sig = sp.zeros(dim, dim)
    k = 0
    for i in range(dim):
        for j in range(i, dim):
            sig[i, j] = sig[j, i] = entries[k]
            k += 1
    vs = sp.symbols(f"v0:{dim}", real=True)
    ds = sp.symbols(f"d0:{dim}", real=True)
    vv, dd = sp.Matrix(vs), sp.Matrix(ds)
    prec = sig.inv()
    obj = ((vv + dd).T * prec * (vv + dd))[0, 0] - C * (dd.T * dd)[0, 0]
    sol = sp.solve([sp.diff(obj, di) for di in ds], ds, dict=True)[0]
    return sp.Matrix([sp.simplify(sol[di]) for di in ds]), entries, vs


@lru_cache(maxsize=None)
def vulnerability_term(convention: str = "paper") -> sp.Expr:
    """Per-eigenvalue Theorem 1 term E_v[gain] for v ~ N(0, s), with delta* = v/(Cs - 1):

    paper: E[(v+d*)^2/s - v^2/s] = (Cs/(Cs-1))^2 - 1; penalized: minus C d*^2, = 1/(Cs - 1);
    the half_nll variants are halves (1/2-NLL with (C/2)||delta||^2 has the same delta*).
    """
    from sympy.stats import E, Normal

    checks.one_of("convention", convention, ("paper", "half_nll", "penalized", "half_nll_penalized"),
                  what="a vulnerability convention")
    V = Normal("V", 0, sp.sqrt(s))
    d = delta_star_scalar().subs(v, V)
    gain = (V + d) ** 2 / s - V**2 / s
    if convention.endswith("penalized"):
        gain -= C * d**2
    if convention.startswith("half"):
        gain = gain / 2
    return sp.simplify(E(sp.expand(gain)))


@lru_cache(maxsize=None)
def theorem2_objective() -> sp.Expr:
    """Per-eigen robust objective for model variance r and data variance s under penalty lam:
    E_v[max_delta ((v + delta)^2 / r - lam delta^2)] + log r, v ~ N(0, s), = lam s/(lam r - 1) + log r.
    """
    from sympy.stats import E, Normal

    d = delta_star_scalar().subs({s: r, C: lam})
    inner = sp.simplify((v + d) ** 2 / r - lam * d**2)  # = lam v^2 / (lam r - 1)
    V = Normal("V", 0, sp.sqrt(s))
    return sp.simplify(E(inner.subs(v, V))) + sp.log(r)


@lru_cache(maxsize=None)
def theorem2_stationarity() -> sp.Expr:
    """Numerator of d/dr of :func:`theorem2_objective`, normalised to a monic quadratic in r:
    r^2 - (s + 2/lam) r + 1/lam^2."""
    num, _ = sp.fraction(sp.together(sp.diff(theorem2_objective(), r)))
    poly = sp.Poly(sp.expand(num), r)
    return sp.expand(poly.as_expr() / poly.LC())


@lru_cache(maxsize=None)
def theorem2_root() -> sp.Expr:
    """The root of :func:`theorem2_stationarity` with lam r > 1 (the feasible one):
    s/2 + 1/lam + sqrt(s/lam + s^2/4)."""
    roots = sp.solve(theorem2_stationarity(), r)
    feasible = [x for x in roots if sp.simplify(lam * x - 1).is_positive]
    if len(feasible) != 1:
        # decide numerically at a generic point when sympy cannot prove the sign
        point = {s: sp.Rational(7, 3), lam: sp.Rational(5, 2)}
        feasible = [x for x in roots if (lam * x - 1).subs(point).evalf() > 0]
    (root,) = feasible
    return sp.simplify(root)
