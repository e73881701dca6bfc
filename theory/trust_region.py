"""The exact l2-ball adversary of the Gaussian NLL: a trust-region problem per sample.

For a precision P = Sigma^-1 and residual v = x - y mu,

    max_{||delta||_2 <= eps}  (v + delta)^T P (v + delta)

is maximised on the sphere ||delta|| = eps at delta = (nu I - P)^-1 P v with nu >= lambda_max(P)
the root of the secular equation ||(nu I - P)^-1 P v|| = eps (docs/paper-notes.md sec. 5.5). nu is
exactly the Lagrange multiplier of the Lagrangian adversary of Theorems 1-2 (penalty
nu ||delta||^2): the per-sample multiplier that makes the two adversaries agree on that sample.

The root is found by Newton's method on psi(nu) = 1/||delta(nu)|| - 1/eps, which is concave and
increasing on (lambda_max, inf), started from the lower bound
nu_0 = max_i (p_i + |a_i|/eps) (a = P v in the eigenbasis), so the iterates increase monotonically
to the root with quadratic convergence (More & Sorensen 1983). The "hard case" (v has no
component along the top eigenvectors of P and ||delta(lambda_max)|| < eps) is handled exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from foundation import checks as C
from theory.model import Array, CovarianceLike, spectrum_of


class TrustRegionMax(NamedTuple):
    """delta: maximisers (n, d) (or (d,)); nu: secular multipliers (inf when eps = 0);
    value: the maxima (v + delta)^T P (v + delta)."""

    delta: Array
    nu: Array
    value: Array


def trust_region_max(sigma_inv: CovarianceLike, v: Any, eps: float, *, rtol: float = 1e-12,
                     max_iter: int = 100) -> TrustRegionMax:
    """Exact maximiser of (v + delta)^T Sigma^-1 (v + delta) over ||delta||_2 <= eps, per row of v.

    ``sigma_inv`` is the precision matrix P (array, Spectrum or GaussianModel-free array); it is
    eigendecomposed once and the rows of ``v`` ((n, d) or (d,)) are solved together. Returns
    (delta, nu, value) with ||delta|| = eps to relative accuracy ``rtol``.
    """
    spec = spectrum_of(sigma_inv, "sigma_inv")
    eps = C.non_negative_float("eps", eps)
    v_arr = np.asarray(v, dtype=float)
    single = v_arr.ndim == 1
    v2 = np.atleast_2d(v_arr)
    if v2.ndim != 2 or v2.shape[1] != spec.d:
        raise ValueError(f"v has shape {v_arr.shape}; expected ({spec.d},) or (n, {spec.d})")
    if not np.all(np.isfinite(v2)):
        raise ValueError("v must be finite")
    delta_e, nu, value = trust_region_eig(spec.values, spec.to_eigenbasis(v2), eps,
                                          rtol=rtol, max_iter=max_iter)
    delta = spec.from_eigenbasis(delta_e)
    if single:
        return TrustRegionMax(delta[0], nu[0], value[0])
    return TrustRegionMax(delta, nu, value)


def trust_region_eig(p: Array, u: Array, eps: float, *, rtol: float = 1e-12,
                     max_iter: int = 100) -> tuple[Array, Array, Array]:
    """Core solver in the eigenbasis of P: eigenvalues ``p`` (ascending, > 0), residual
    coordinates ``u`` (n, d). Returns (delta coordinates, nu, value)."""
    n, d = u.shape
    a = p * u
    if eps == 0.0:
        return np.zeros_like(u), np.full(n, np.inf), np.sum(p * u * u, axis=1)
    pmax = float(p[-1])
    gap = pmax - p  # >= 0; exactly 0 on the top eigenvalue(s)
    top = gap <= pmax * 1e-12
    gap[top] = 0.0
    a_top = np.sqrt(np.sum(a[:, top] ** 2, axis=1))
    # Work with rho = nu - pmax >= 0 so that nu close to pmax keeps full relative precision.
    # Valid lower bounds on the root: rho* >= |a_i|/eps - gap_i and rho* >= ||a_top||/eps.
    rho = np.maximum(np.max(np.abs(a) / eps - gap, axis=1), a_top / eps)
    rho = np.maximum(rho, 0.0)
    hard = np.zeros(n, dtype=bool)
    zero_top = a_top == 0.0
    if zero_top.any() and (~top).any():
        phi = np.sum((a[zero_top][:, ~top] / gap[~top]) ** 2, axis=1)
        hard[np.flatnonzero(zero_top)[phi <= eps * eps]] = True
    elif zero_top.any():  # isotropic P and v = 0
        hard[zero_top] = True

    tiny = np.finfo(float).eps
    # Newton on the rows still moving, kept compact (a row leaves when it converges); the rows of
    # a are zero where a coordinate of P v is, and then so is that coordinate of w (0 / r, with
    # r = 0 only on a top coordinate at rho = 0, where the product is set to 0 explicitly)
    idx = np.flatnonzero(~hard)
    a_k, rho_k = a[idx], rho[idx]
    for _ in range(max_iter):
        if idx.size == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / (rho_k[:, None] + gap)
            w = a_k * inv
            ww = w * w
            q = ww * inv
        if not rho_k.all():
            zero = a_k == 0.0
            w[zero] = 0.0
            ww[zero] = 0.0
            q[zero] = 0.0
        phi = np.einsum("ij->i", ww)
        norm = np.sqrt(phi)
        dphi = np.einsum("ij->i", q)
        # psi = 1/norm - 1/eps ; psi' = dphi / norm^3  (dphi = sum w^2 / r > 0)
        step = (1.0 / norm - 1.0 / eps) * norm**3 / dphi
        # converged: on the sphere, or the next step is below the resolution of rho
        done = (np.abs(norm - eps) <= rtol * eps) | (np.abs(step) <= 4 * tiny * rho_k)
        rho_k = np.where(done, rho_k, np.maximum(rho_k - step, rho_k))  # monotone from the left
        if done.any():
            rho[idx[done]] = rho_k[done]
            keep = ~done
            idx, a_k, rho_k = idx[keep], a_k[keep], rho_k[keep]
    if idx.size:
        raise RuntimeError(
            f"secular equation did not converge for {idx.size} of {n} rows in "
            f"{max_iter} Newton steps"
        )
    r = rho[:, None] + gap[None, :]
    delta = np.divide(a, r, out=np.zeros_like(a), where=a != 0.0)
    nu = pmax + rho
    if hard.any():
        nu[hard] = pmax
        h = np.flatnonzero(hard)
        rest = np.sum(delta[h][:, ~top] ** 2, axis=1)
        first_top = int(np.flatnonzero(top)[0])
        delta[h[:, None], np.flatnonzero(top)[None, :]] = 0.0
        delta[h, first_top] = np.sqrt(np.maximum(eps * eps - rest, 0.0))
    value = np.sum(p * (u + delta) ** 2, axis=1)
    return delta, nu, value
