"""Nakkiran's non-transferable targeted attack and the D_nt construction (docs/debate.md).

Planted ground truth on linear models: f reads a "shared" direction u and an "own" direction v,
every ensemble model reads only u. Targeted PGD on f steps along f's weight difference, half of it
along u, so the ensemble follows (the examples transfer); the disentangled loss must leave u alone
and move along v only, so f flips while the ensemble keeps y.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from empirical.attacks import nontransferable_pgd, pgd
from empirical.threat import Attack

D = 32


class Linear2(nn.Module):
    """Two-class linear model on flattened [0, 1] images centred at 0.5: logits (-s, s), s = w.(x - 0.5)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([-s, s], dim=1)


def _planted(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, 2, generator=g))
    u, v = q[:, 0], q[:, 1]
    f = Linear2(4.0 * (u + v))
    ensemble = [Linear2(4.0 * u + 0.2 * torch.randn(D, generator=g)) for _ in range(3)]
    # class 0: shared and own features both at -0.3 (f and the ensemble agree on y = 0)
    x = (0.5 - 0.3 * u - 0.3 * v + 0.02 * torch.randn(n, D, generator=g)).clamp(0, 1)
    y = torch.zeros(n, dtype=torch.long)
    t = torch.ones(n, dtype=torch.long)
    return f, ensemble, x, y, t, u, v


def test_empty_ensemble_is_targeted_pgd_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5))
    x = torch.rand(12, 3, 4, 4)
    y = torch.randint(0, 5, (12,))
    t = (y + 1) % 5
    atk = Attack("l2", 0.5, steps=7, step_size=0.1, targeted=True)
    a = pgd(model, x, t, atk, precision="fp32")
    b = nontransferable_pgd(model, [], x, y, t, atk, precision="fp32")
    c = nontransferable_pgd(model, [model], x, y, t, atk, ensemble_weight=0.0, precision="fp32")
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("norm,eps,step", [("l2", 1.5, 0.15), ("linf", 0.3, 0.03)])
def test_planted_nontransferable_moves_only_what_f_alone_reads(norm, eps, step):
    f, ensemble, x, y, t, u, v = _planted()
    atk = Attack(norm, eps, steps=40, step_size=step, targeted=True)
    x_pgd = pgd(f, x, t, atk, precision="fp32")
    x_nt = nontransferable_pgd(f, ensemble, x, y, t, atk, precision="fp32")
    for xa in (x_pgd, x_nt):
        delta = (xa - x).flatten(1)
        assert float(delta.norm(dim=1).max() if norm == "l2" else delta.abs().max()) <= eps + 1e-5
        assert bool((f(xa).argmax(1) == t).all())                 # both succeed on f
    ens = lambda xa: torch.stack([m(xa).argmax(1) for m in ensemble]).float()  # noqa: E731
    # plain PGD drags the shared feature along: the ensemble follows to t (it transfers) ...
    assert float((ens(x_pgd) == 1).float().mean()) > 0.9
    # ... the disentangled loss leaves it: every ensemble model keeps y
    assert float((ens(x_nt) == 0).float().mean()) > 0.95
    d_pgd, d_nt = (x_pgd - x).flatten(1), (x_nt - x).flatten(1)
    share = lambda d: float((d @ u).abs().mean() / ((d @ v).abs().mean() + 1e-12))  # noqa: E731
    assert share(d_pgd) > 0.5        # PGD moves along u about as much as along v (f's weights are u + v)
    assert share(d_nt) < share(d_pgd) / 3


def test_l2_pgd_step_direction_is_the_analytic_optimum_for_the_shared_term():
    """One l2 step of the disentangled loss on linear models points along the analytic gradient
    -(grad L(f, t) + mean_i grad L(f_i, y)) / ||.||, which for these two-class models is
    -(p_t - 1) w_f + mean_i p_i(1) w_i (up to the normalisation)."""
    f, ensemble, x, y, t, u, v = _planted(n=8)
    step = 0.01
    atk = Attack("l2", 10.0, steps=1, step_size=step, targeted=True)
    xa = nontransferable_pgd(f, ensemble, x, y, t, atk, use_best=False, precision="fp32")
    xc = x - 0.5
    s_f = xc @ f.w
    p_t = torch.sigmoid(2 * s_f)                    # softmax of (-s, s) at class 1
    g = -(1 - p_t)[:, None] * 2 * f.w               # d/dx of CE(f, t=1)
    for m in ensemble:
        p1 = torch.sigmoid(2 * (xc @ m.w))
        g = g + (p1[:, None] * 2 * m.w) / len(ensemble)       # d/dx of CE(m, y=0)
    expected = x - step * g / g.norm(dim=1, keepdim=True)
    assert torch.allclose(xa, expected.clamp(0, 1), atol=1e-5)


def test_bad_inputs_are_refused():
    f, ensemble, x, y, t, *_ = _planted(n=4)
    with pytest.raises(ValueError, match="targeted"):
        nontransferable_pgd(f, ensemble, x, y, t, Attack("l2", 0.5))
    with pytest.raises(ValueError, match="ensemble_weight"):
        nontransferable_pgd(f, ensemble, x, y, t, Attack("l2", 0.5, targeted=True), ensemble_weight=-1.0)
    with pytest.raises(ValueError, match="labels"):
        nontransferable_pgd(f, ensemble, x, y[:2], t, Attack("l2", 0.5, targeted=True))
    assert math.isfinite(float(nontransferable_pgd(f, ensemble, x, y, t, Attack("l2", 0.0, targeted=True)).sum()))
