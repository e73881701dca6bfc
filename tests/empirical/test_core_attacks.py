"""empirical.attacks against closed forms: linear models (analytic optimum), the identity
representation (exact distance schedule), and a trained digits model (targeted success,
restarts, best iterate, torchattacks cross-check)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from empirical.attacks import fgsm_rs, match_representation, pgd, project
from empirical.threat import Attack
from empirical.data import load_dataset
from empirical.models import build_model
from empirical.train import TrainConfig, fit
from theory.features import dual_norm


class Linear2(nn.Module):
    """Binary linear model: logits (0, w.x + b), so the margin of class 1 is w.x + b."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = float(b)

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin(x)
        return torch.stack([torch.zeros_like(m), m], 1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["l2", "linf"]), eps=st.floats(0.01, 0.1),
       targeted=st.booleans())
def test_pgd_on_a_linear_model_reaches_the_analytic_optimum(seed, norm, eps, targeted):
    """Interior points: the optimum lowers the margin by exactly eps * ||w||_* (theory.features.dual_norm)."""
    g = torch.Generator().manual_seed(seed)
    d = 12
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = eps + (1 - 2 * eps) * torch.rand(4, 1, 3, 4, generator=g, dtype=torch.float64)   # box never active
    model = Linear2(w, 0.3).double()
    y = torch.ones(4, dtype=torch.long)
    # untargeted: raise CE of class 1 <=> lower its margin; targeted at class 0: the same optimum
    label = torch.zeros(4, dtype=torch.long) if targeted else y
    steps = 8 if norm == "l2" else 3
    x_adv = pgd(model, x, label, Attack(norm, eps, steps=steps, step_size=eps / 4 if norm == "l2" else eps,
                                        targeted=targeted))
    drop = (model.margin(x) - model.margin(x_adv)).detach()
    expected = eps * dual_norm(w.numpy(), norm)
    np.testing.assert_allclose(drop.numpy(), expected, rtol=1e-9)
    delta = (x_adv - x).flatten(1)
    assert float(delta.norm(dim=1).max() if norm == "l2" else delta.abs().max()) <= eps * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["l2", "linf"]), eps=st.floats(0.0, 3.0),
       restarts=st.integers(1, 3), random_start=st.booleans())
def test_pgd_iterates_stay_in_the_ball_and_the_box(seed, norm, eps, restarts, random_start):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(5, 1, 4, 4)
    x[0] = 0.0
    x[1] = 1.0                                              # points on the box boundary
    y = torch.randint(0, 3, (5,))
    gen = torch.Generator().manual_seed(seed)
    x_adv = pgd(model, x, y, Attack(norm, eps, steps=5, step_size=max(eps, 0.01) / 2, restarts=restarts,
                                    random_start=random_start), generator=gen)
    assert x_adv.shape == x.shape and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    assert all(p.grad is None for p in model.parameters())     # attacks never touch parameter grads


def test_project_is_the_euclidean_projection_onto_the_ball():
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    torch.testing.assert_close(project(v, "l2", 1.0), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    torch.testing.assert_close(project(v, "linf", 0.35), torch.tensor([[0.35, 0.35], [0.3, 0.35]]))


# ---------------------------------------------------------------------------------------------
# a trained digits model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    d = load_dataset("digits")
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=d.mean, std=d.std)
    fit(model, d.x_train, d.y_train, TrainConfig(epochs=8, batch_size=64, lr=0.05), device="cpu", progress=False)
    model.eval()
    return model, d.x_test[:200], d.y_test[:200]


def _ce(model, x, y):
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none")


def test_targeted_pgd_reaches_the_target_class_on_a_trained_model(digits_model):
    model, x, y = digits_model
    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    assert clean_acc > 0.9
    t = (y + 1) % 10
    x_adv = pgd(model, x, t, Attack("l2", 4.0, steps=50, step_size=0.2, targeted=True))
    with torch.no_grad():
        success = float((model(x_adv).argmax(1) == t).float().mean())
    assert success > 0.95
    assert float(_ce(model, x_adv, t).mean()) < float(_ce(model, x, t).mean())
    x_small = pgd(model, x, t, Attack("l2", 0.05, steps=10, step_size=0.01, targeted=True))
    with torch.no_grad():
        assert float((model(x_small).argmax(1) == t).float().mean()) < 0.1      # tiny budget: little success


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.05)])
def test_restarts_are_never_weaker_than_one_start(digits_model, norm, eps):
    model, x, y = digits_model
    kw = dict(norm=norm, eps=eps, steps=10, step_size=2.5 * eps / 10, random_start=True)
    one = pgd(model, x, y, Attack(**kw), generator=torch.Generator().manual_seed(11))
    many = pgd(model, x, y, Attack(**kw, restarts=4), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        wrong1, wrongR = model(one).argmax(1) != y, model(many).argmax(1) != y
    assert bool((wrongR | ~wrong1).all())                      # every success of 1 start is kept
    same = wrong1 == wrongR
    ce1, ceR = _ce(model, one, y), _ce(model, many, y)
    assert bool((ceR[same] >= ce1[same] - 1e-5).all())
    assert int(wrongR.sum()) >= int(wrong1.sum())


def test_best_iterate_is_never_worse_than_the_last_iterate(digits_model):
    model, x, y = digits_model
    kw = dict(norm="linf", eps=0.1, steps=10, step_size=0.08)          # big steps: the last iterate oscillates
    last = pgd(model, x, y, Attack(**kw), use_best=False)
    best = pgd(model, x, y, Attack(**kw), use_best=True)
    with torch.no_grad():
        w_last, w_best = model(last).argmax(1) != y, model(best).argmax(1) != y
    assert bool((w_best | ~w_last).all())
    same = w_last == w_best
    assert bool((_ce(model, best, y)[same] >= _ce(model, last, y)[same] - 1e-5).all())


def test_batch_size_chunks_give_the_same_attack(digits_model):
    model, x, y = digits_model
    a = pgd(model, x, y, Attack("l2", 0.5, steps=5, step_size=0.2))
    b = pgd(model, x, y, Attack("l2", 0.5, steps=5, step_size=0.2), batch_size=64)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_our_pgd_is_at_least_as_strong_as_torchattacks_at_equal_budget(digits_model):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_model
    for norm, eps, cls in (("l2", 0.5, torchattacks.PGDL2), ("linf", 0.05, torchattacks.PGD)):
        steps, alpha = 10, 2.5 * eps / 10
        ta = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        x_ta = ta(x, y)
        x_ours = pgd(model, x, y, Attack(norm, eps, steps=steps, step_size=alpha))
        with torch.no_grad():
            acc_ta = float((model(x_ta).argmax(1) == y).float().mean())
            acc_ours = float((model(x_ours).argmax(1) == y).float().mean())
        assert acc_ours <= acc_ta + 1e-9, (norm, acc_ours, acc_ta)
        assert acc_ours < 0.9                                     # the budget matters on this model


# ---------------------------------------------------------------------------------------------
# representation matching
# ---------------------------------------------------------------------------------------------
def test_match_representation_with_the_identity_map_walks_straight_to_the_target():
    """g(x) = x: each normalised step moves exactly step_size toward the target (convex box,
    both endpoints inside), so the loss after k steps is |d0 - k s| until it oscillates below s."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 4, 4, generator=g)
    start = torch.rand(3, 1, 4, 4, generator=g)
    d0 = (target - start).flatten(1).norm(dim=1)
    s = 0.1
    k = int(float(d0.min()) / s) - 1
    x, loss = match_representation(lambda z: z.flatten(1), target, start, steps=k, step_size=s)
    torch.testing.assert_close(loss, d0 - k * s, atol=1e-5, rtol=0)
    torch.testing.assert_close((x - target).flatten(1).norm(dim=1), loss, atol=1e-6, rtol=0)
    _, loss_far = match_representation(lambda z: z.flatten(1), target, start, steps=k + 40, step_size=s,
                                       use_best=True)
    assert float(loss_far.max()) <= s / 2 + 1e-5


def test_match_representation_reduces_a_network_representation_distance(digits_model):
    model, x, _ = digits_model
    start = x.flip(0)
    with torch.no_grad():
        d_start = (model.features(start) - model.features(x)).norm(dim=1)
    x_new, loss = match_representation(model.features, x, start, steps=60, step_size=0.1, normalize_loss=False)
    assert float(loss.mean()) < 0.3 * float(d_start.mean())
    assert float(x_new.min()) >= 0 and float(x_new.max()) <= 1
    _, rel = match_representation(model.features, x, start, steps=0, step_size=0.1, normalize_loss=True)
    with torch.no_grad():
        torch.testing.assert_close(rel, d_start / model.features(x).norm(dim=1), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_attack_parameters_raise_errors_naming_them():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"eps=-0.1 must be a finite number >= 0"):
        pgd(model, x, y, Attack("l2", -0.1, steps=3, step_size=0.1))
    with pytest.raises(ValueError, match=r"norm='l3' is not a threat model; valid: l2, linf"):
        pgd(model, x, y, Attack("l3", 0.1, steps=3, step_size=0.1))
    with pytest.raises(ValueError, match=r"x has values in \[0, 2\]; images must lie in \[0, 1\]"):
        pgd(model, x * 0 + torch.tensor([0.0, 2.0]).view(2, 1, 1, 1), y, Attack("l2", 0.1, steps=3, step_size=0.1))
    with pytest.raises(ValueError, match=r"restarts=0 must be a positive integer"):
        pgd(model, x, y, Attack("l2", 0.1, steps=3, step_size=0.1, restarts=0))
    with pytest.raises(ValueError, match=r"step_size=0 must be a positive finite number"):
        match_representation(model, x, x, steps=3, step_size=0)
    with pytest.raises(ValueError, match=r"step_size=-0.5 must be None or a positive finite number"):
        fgsm_rs(model, x, y, Attack.fgsm("linf", 0.1, step_size=-0.5))
    x_bad = x.clone()
    x_bad[0, 0, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"x has values in \[-1, .*\]; images must lie in \[0, 1\]"):
        fgsm_rs(model, x_bad, y, Attack.fgsm("l2", 0.1))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\); got \(3,\)"):
        fgsm_rs(model, x, torch.zeros(3, dtype=torch.long), Attack.fgsm("l2", 0.1))
    assert math.isfinite(float(pgd(model, x, y, Attack("l2", 0.0, steps=3, step_size=0.1)).sum()))


@pytest.mark.gpu
def test_bf16_pgd_on_cuda_is_as_strong_as_fp32_on_cpu(digits_model):
    model, x, y = digits_model
    cpu = pgd(model, x, y, Attack("l2", 0.5, steps=10, step_size=0.125))
    gpu_model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=model.arch_config["mean"],
                            std=model.arch_config["std"]).cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    gpu = pgd(gpu_model, x.cuda(), y.cuda(), Attack("l2", 0.5, steps=10, step_size=0.125)).cpu()
    assert float((gpu - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-4
    with torch.no_grad():
        acc_cpu = float((model(cpu).argmax(1) == y).float().mean())
        acc_gpu = float((model(gpu).argmax(1) == y).float().mean())
    assert acc_gpu <= acc_cpu + 0.05
