"""empirical.autoattack against closed forms, its own invariants and torchattacks: linear models
(analytic worst-case margin), the ball and the box, determinism, the published schedules, a
trained digits model (at least as strong as torchattacks' APGD, APGDT and Square at equal budget),
the ensemble's bookkeeping, the sanity flags on a gradient-masked model, and argument errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from empirical.suite import SUITES
from empirical.threat import ThreatModel
from empirical.worst_case import ensemble, sanity_flags
from empirical.autoattack import (apgd, apgd_checkpoints, dlr_targeted_loss, square,
                                  square_p, square_pattern, torchattacks_reference)
from empirical.data import load_dataset
from empirical.models import build_model
from empirical.train import TrainConfig, fit


class Linear(nn.Module):
    """logits = W x + b."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.t() + self.b


def _margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = model(x)
    zy = z.gather(1, y[:, None]).squeeze(1)
    return zy - z.scatter(1, y[:, None], -float("inf")).amax(1)


def _size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    d = delta.flatten(1)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(1)


def _dual(v: torch.Tensor, norm: str) -> float:
    return float(v.norm() if norm == "l2" else v.abs().sum())


# ---------------------------------------------------------------------------------------------
# linear models: the analytic optimum
# ---------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["l2", "linf"]), eps=st.floats(0.01, 0.1),
       classes=st.sampled_from([2, 4]))
def test_apgd_on_a_linear_model_reaches_the_analytic_worst_case_margin(seed, norm, eps, classes):
    """Interior points (the box never binds): the worst case lowers the margin z_y - z_t by exactly
    eps ||w_y - w_t||_* (dual norm). Two classes: logits (0, a.x + b). Four classes: (a.x + c,
    -(a.x + c), -50, -50), where CE and the targeted DLR loss are both monotone in the margin."""
    g = torch.Generator().manual_seed(seed)
    d = 12
    a = torch.randn(d, generator=g, dtype=torch.float64)
    x = eps + (1 - 2 * eps) * torch.rand(6, 1, 3, 4, generator=g, dtype=torch.float64)
    ax = x.flatten(1) @ a
    c = 0.05 - float(ax.min())                                  # every clean margin >= 0.05: all attacked
    if classes == 2:
        model = Linear(torch.stack([torch.zeros(d, dtype=torch.float64), a]),
                       torch.tensor([0.0, c], dtype=torch.float64))
        y, w_diff, losses = torch.ones(6, dtype=torch.long), a, ["ce"]
    else:
        z = torch.zeros(d, dtype=torch.float64)
        model = Linear(torch.stack([a, -a, z, z]), torch.tensor([c, -c, -50.0, -50.0], dtype=torch.float64))
        y, w_diff, losses = torch.zeros(6, dtype=torch.long), 2 * a, ["ce", "dlr-targeted"]
    expected = _margin(model, x, y) - eps * _dual(w_diff, norm)
    for loss in losses:
        x_adv = apgd(model, x, y, norm=norm, eps=eps, steps=60, loss=loss, seed=seed % 1000)
        torch.testing.assert_close(_margin(model, x_adv, y), expected, rtol=1e-6, atol=1e-7,
                                   msg=lambda m: f"{loss} {norm}: {m}")
        assert float(_size(x_adv - x, norm).max()) <= eps * (1 + 1e-9)


def test_apgd_on_a_linear_model_respects_the_box():
    """Where the box binds the optimum is clipped: linf, w > 0 on every pixel, so the worst case
    lowers every pixel by eps or down to 0, whichever comes first (x = 0.04 < eps: to 0)."""
    d = 8
    w = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    model = Linear(torch.stack([torch.zeros(d, dtype=torch.float64), w]), torch.tensor([0.0, 1.0], dtype=torch.float64))
    eps = 0.1
    x = torch.full((3, 1, 2, 4), 0.04, dtype=torch.float64)     # closer than eps to 0
    x[1] = 0.5                                                  # interior
    y = torch.ones(3, dtype=torch.long)
    x_adv = apgd(model, x, y, norm="linf", eps=eps, steps=20)
    lowest = (x - eps).clamp_min(0)
    torch.testing.assert_close(x_adv, lowest, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the ball, the box, determinism
# ---------------------------------------------------------------------------------------------
def _small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 16), nn.Tanh(), nn.Linear(16, 5))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["l2", "linf"]), eps=st.floats(0.0, 2.0),
       attack=st.sampled_from(["apgd-ce", "apgd-t", "square"]), restarts=st.integers(1, 2),
       precision=st.sampled_from(["fp32", "bf16"]))
def test_outputs_stay_in_the_ball_and_the_box(seed, norm, eps, attack, restarts, precision):
    model = _small_net(seed % 97)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 2, 5, 5, generator=gen)
    x[0] = 0.0
    x[1] = 1.0                                                  # points on the box boundary
    with torch.no_grad():
        y = model(x).argmax(1)                                  # all clean-correct: all attacked
    if attack == "square":
        x_adv = square(model, x, y, norm=norm, eps=eps, queries=15, seed=seed % 1000, precision=precision)
    else:
        x_adv = apgd(model, x, y, norm=norm, eps=eps, steps=6, restarts=restarts, seed=seed % 1000,
                     loss="ce" if attack == "apgd-ce" else "dlr-targeted", n_target_classes=2, precision=precision)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(_size(x_adv - x, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    assert all(p.grad is None for p in model.parameters())     # attacks never touch parameter grads


def test_a_fixed_seed_gives_the_same_attack_and_another_seed_another():
    model = _small_net(3)
    x = torch.rand(8, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    for fn in (lambda s: apgd(model, x, y, norm="l2", eps=1.0, steps=8, restarts=2, seed=s),
               lambda s: apgd(model, x, y, norm="linf", eps=0.2, steps=8, loss="dlr-targeted", n_target_classes=2, seed=s),
               lambda s: square(model, x, y, norm="linf", eps=0.2, queries=30, seed=s),
               lambda s: square(model, x, y, norm="l2", eps=1.0, queries=30, seed=s)):
        a, b, c = fn(4), fn(4), fn(5)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_clean_misclassified_examples_come_back_unchanged_and_eps_zero_is_the_identity():
    model = _small_net(1)
    x = torch.rand(6, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:3] = (pred[:3] + 1) % 5                                  # three already wrong
    for x_adv in (apgd(model, x, y, norm="linf", eps=0.3, steps=5), square(model, x, y, norm="l2", eps=1.0, queries=10)):
        assert torch.equal(x_adv[:3], x[:3])
    assert torch.equal(apgd(model, x, pred, norm="l2", eps=0.0, steps=5), x)
    assert torch.equal(square(model, x, pred, norm="linf", eps=0.0, queries=5), x)


# ---------------------------------------------------------------------------------------------
# the published schedules
# ---------------------------------------------------------------------------------------------
def test_apgd_checkpoints_follow_the_published_schedule():
    # p_j: 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, sec. 3.2)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
    assert apgd_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert apgd_checkpoints(1) == [1]


def test_square_p_halves_at_the_published_iterations_rescaled_to_the_budget():
    p = [square_p(it, 10000, 0.8) for it in (0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999)]
    assert p == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 256, 0.8 / 512, 0.8 / 512])
    # 1000 queries: iteration it counts as 10 it on the 10 000 scale
    assert square_p(1, 1000, 0.8) == 0.8 and square_p(2, 1000, 0.8) == 0.4 and square_p(801, 1000, 0.8) == 0.8 / 512
    assert square_p(11, 1000, 0.8, rescale=False) == 0.4


def _rect_reference(a: int, b: int) -> torch.Tensor:
    """The paper's concentric rectangles written as the loop it describes: ring k (Chebyshev radius
    k around (a // 2, b // 2)) adds 1 / (k + 1)^2, for k < max(a // 2, b // 2) + 1."""
    m = torch.zeros(a, b, dtype=torch.float64)
    for k in range(max(a // 2, b // 2) + 1):
        m[max(a // 2 - k, 0) : a // 2 + k + 1, max(b // 2 - k, 0) : b // 2 + k + 1] += 1.0 / (k + 1) ** 2
    return m / m.norm()


@pytest.mark.parametrize("s", [1, 3, 4, 5, 8])
def test_square_l2_pattern_is_the_papers_eta(s):
    e = square_pattern(s, dtype=torch.float64)
    top, bottom = _rect_reference(s // 2, s) if s // 2 else torch.zeros(0, s, dtype=torch.float64), _rect_reference(s - s // 2, s)
    ref = torch.cat([top, -bottom])
    torch.testing.assert_close(e, ref / ref.norm(), rtol=0, atol=1e-12)
    assert float(e.norm()) == pytest.approx(1.0)


def test_dlr_targeted_loss_matches_its_formula():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0, -1.0]])
    # pi: 4, 3, 1, 0, -1 -> denominator 4 - (1 + 0) / 2 = 3.5; y = 0, t = 2: -(4 - 3) / 3.5
    got = dlr_targeted_loss(z, torch.tensor([0]), torch.tensor([2]))
    torch.testing.assert_close(got, torch.tensor([-1.0 / 3.5]))


# ---------------------------------------------------------------------------------------------
# a trained digits model
# ---------------------------------------------------------------------------------------------
def _trained_mlp(name: str):
    torch.manual_seed(0)
    d = load_dataset(name)
    model = build_model("mlp", num_classes=d.num_classes, in_channels=d.x_train.shape[1],
                        image_size=d.x_train.shape[-1], mean=d.mean, std=d.std)
    fit(model, d.x_train, d.y_train, TrainConfig(epochs=8, batch_size=64, lr=0.05), device="cpu", progress=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, d.x_test[:200], d.y_test[:200]


@pytest.fixture(scope="module")
def digits():
    return _trained_mlp("digits")


#: per data set, the linf and l2 eps where the MLP's robust accuracy is mid-range under APGD-CE
#: (digits: about 50% and 36%; synthetic, whose planted non-robust patterns have l2 norm 0.4:
#: about 45% and 40%), so that a weaker attack shows
BUDGETS = {"digits": {"linf": 0.1, "l2": 0.6}, "synthetic": {"linf": 0.013, "l2": 0.27}}
LINF = BUDGETS["digits"]["linf"]


@pytest.fixture(scope="module", params=sorted(BUDGETS))
def trained(request):
    """(data set name, model, x, y): the same MLP recipe trained on digits and on synthetic."""
    return (request.param, *_trained_mlp(request.param))


def _robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def _compare(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> str:
    agree = float((ours == theirs).float().mean())
    return (f"{name}: robust accuracy ours {float(ours.float().mean()):.3f} vs torchattacks "
            f"{float(theirs.float().mean()):.3f}; per-example agreement {agree:.1%} (robust only under ours: "
            f"{int((ours & ~theirs).sum())}, only under torchattacks: {int((~ours & theirs).sum())})")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_is_at_least_as_strong_as_torchattacks_apgd(trained, norm):
    pytest.importorskip("torchattacks")
    data, model, x, y = trained
    eps = BUDGETS[data][norm]
    ours = _robust(model, apgd(model, x, y, norm=norm, eps=eps, steps=100), y)
    theirs = _robust(model, torchattacks_reference(model, x, y, attack="apgd-ce", norm=norm, eps=eps, steps=100), y)
    msg = _compare(f"{data} APGD-CE {norm} eps={eps}", ours, theirs)
    assert float(ours.float().mean()) <= float(theirs.float().mean()) + 0.01, msg
    assert 0.1 < float(ours.float().mean()) < 0.9, msg                 # the budget matters on this model


def test_apgd_t_is_at_least_as_strong_as_torchattacks_apgdt(trained):
    pytest.importorskip("torchattacks")
    data, model, x, y = trained
    eps = BUDGETS[data]["linf"]
    ours = _robust(model, apgd(model, x, y, norm="linf", eps=eps, steps=50, loss="dlr-targeted", n_target_classes=9), y)
    theirs = _robust(model, torchattacks_reference(model, x, y, attack="apgd-t", norm="linf", eps=eps, steps=50,
                                                   n_target_classes=9), y)
    msg = _compare(f"{data} APGD-T linf eps={eps}", ours, theirs)
    assert float(ours.float().mean()) <= float(theirs.float().mean()) + 0.01, msg


def test_apgd_t_targets_at_once_runs_the_same_attack_batched(trained):
    """Targets run as one batch (run_apgd targets_at_once, for wide devices) break the same examples
    as one target at a time, up to the random starts: the same robust accuracy within 1 point, each
    returned point inside the ball, the success mask exactly the examples the returned points break."""
    from empirical.autoattack import run_apgd
    data, model, x, y = trained
    eps = BUDGETS[data]["linf"]
    kw = dict(norm="linf", eps=eps, steps=30, loss="dlr-targeted", n_target_classes=9, seed=3)
    xa1, s1 = run_apgd(model, x, y, **kw)
    xa9, s9 = run_apgd(model, x, y, targets_at_once=9, **kw)
    xa4, s4 = run_apgd(model, x, y, targets_at_once=4, **kw)
    r1, r9, r4 = (_robust(model, xa, y) for xa in (xa1, xa9, xa4))
    for xa in (xa9, xa4):
        assert float((xa - x).abs().amax()) <= eps + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1
    acc = [float(r.float().mean()) for r in (r1, r9, r4)]
    assert max(acc) - min(acc) <= 0.01, acc
    assert 0.05 < acc[0] < 0.95, acc                                 # the budget matters on this model
    clean = model(x).argmax(1) == y
    for s, r in ((s1, r1), (s9, r9), (s4, r4)):                       # success = broken, on the clean-correct
        assert torch.equal(s, ~r & clean)
    with pytest.raises(ValueError, match="targets_at_once"):
        run_apgd(model, x, y, targets_at_once=0, **kw)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_is_at_least_as_strong_as_torchattacks_square(trained, norm):
    pytest.importorskip("torchattacks")
    data, model, x, y = trained
    eps = BUDGETS[data][norm]
    ours = _robust(model, square(model, x, y, norm=norm, eps=eps, queries=1000), y)
    theirs = _robust(model, torchattacks_reference(model, x, y, attack="square", norm=norm, eps=eps, queries=1000), y)
    msg = _compare(f"{data} Square {norm} eps={eps}", ours, theirs)
    assert float(ours.float().mean()) <= float(theirs.float().mean()) + 0.01, msg


SMALL = {"apgd-ce": {"steps": 20}, "apgd-t": {"steps": 10, "n_target_classes": 3}, "square": {"queries": 150}}


def test_ensemble_bookkeeping_is_the_worst_case_over_its_attacks(digits):
    model, x, y = digits
    x, y = x[:120], y[:120]
    res = ensemble(model, x, y, ThreatModel("linf", LINF), attacks="standard", budgets=SMALL)
    names = SUITES["standard"]
    assert res["attacks"] == names
    correct = res["clean_correct"]
    assert res["clean_accuracy"] == pytest.approx(float(correct.float().mean()))
    # worst-case robust mask = clean-correct AND every per-attack "not broken" mask
    expected = correct.clone()
    for a in names:
        expected &= ~res["success"][a]
    assert torch.equal(res["robust"], expected)
    assert res["worst_case_robust_accuracy"] == pytest.approx(float(expected.float().mean()))
    # cumulative robust accuracy never rises; each attack ran exactly on what was still robust
    accs = [res["clean_accuracy"]] + [res["robust_accuracy"][a] for a in names]
    assert all(b <= a + 1e-12 for a, b in zip(accs, accs[1:])), accs
    still = correct.clone()
    for a in names:
        assert torch.equal(res["ran_on"][a], still), a
        assert not bool((res["success"][a] & ~res["ran_on"][a]).any())
        assert res["n_run"][a] == int(still.sum())
        if res["n_run"][a]:
            where = 1 - float(res["success"][a][still].float().mean())
            assert res["robust_accuracy_where_run"][a] == pytest.approx(where)
        still &= ~res["success"][a]
        assert res["seconds"][a] >= 0
    # the breaking points are real: in the ball and misclassified
    broken = correct & ~res["robust"]
    assert float((res["x_adv"] - x).abs().flatten(1).amax(1).max()) <= LINF + 1e-6
    assert bool((~_robust(model, res["x_adv"], y))[broken].all())
    # the first stage is exactly the attack alone (same seed, same single chunk)
    alone = _robust(model, apgd(model, x, y, norm="linf", eps=LINF, steps=20, batch_size=500), y)
    assert torch.equal(alone, correct & ~res["success"]["apgd-ce"])


def test_sanity_flags_fire_on_a_gradient_masked_model(digits):
    """A model that rounds its input to the digits' 17 grey levels classifies the clean digits
    exactly as before but has zero input gradient everywhere: APGD cannot move, Square can."""
    model, x, y = digits
    x, y = x[:60], y[:60]

    class Rounded(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.net(torch.round(v * 16) / 16)

    masked = Rounded(model)
    res = ensemble(masked, x, y, ThreatModel("linf", 0.1), attacks=("apgd-ce", "square"),
                   budgets={"apgd-ce": {"steps": 10}, "square": {"queries": 200}})
    out = sanity_flags(result=res, model=masked, x=x, y=y)
    assert out["flags"]["zero_gradients"], out["explanations"]["zero_gradients"]
    assert out["flags"]["square_stronger"], out["explanations"]["square_stronger"]
    assert "60 of 60" in out["explanations"]["zero_gradients"]
    # the unmasked model: gradients everywhere
    plain = sanity_flags(model=model, x=x, y=y)
    assert not plain["flags"]["zero_gradients"], plain["explanations"]["zero_gradients"]
    assert not plain["flags"]["square_stronger"] and "not checked" in plain["explanations"]["square_stronger"]
    # PGD gap and monotonicity in eps
    worst = res["worst_case_robust_accuracy"]
    assert sanity_flags(result=res, pgd_robust_accuracy=worst + 0.06)["flags"]["pgd_gap"]
    assert not sanity_flags(result=res, pgd_robust_accuracy=worst + 0.04)["flags"]["pgd_gap"]
    bad = sanity_flags(robust_accuracy_by_eps={0.1: 0.5, 0.2: 0.6, 0.3: 0.2})
    assert bad["flags"]["non_monotone_in_eps"] and "eps=0.2" in bad["explanations"]["non_monotone_in_eps"]
    good = sanity_flags(robust_accuracy_by_eps={0.2: 0.2, 0.05: 0.5, 0.0: 0.9})
    assert not good["flags"]["non_monotone_in_eps"], good["explanations"]["non_monotone_in_eps"]
    assert not sanity_flags(robust_accuracy_by_eps={0.0: 1.0, 0.1: res})["flags"]["non_monotone_in_eps"]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_arguments_raise_errors_naming_them():
    model = _small_net(0)
    x, y = torch.rand(2, 2, 5, 5), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"norm='l1' is not a threat model; valid: l2, linf"):
        apgd(model, x, y, norm="l1", eps=0.1)
    with pytest.raises(ValueError, match=r"eps=-0.1 must be a finite number >= 0"):
        square(model, x, y, norm="linf", eps=-0.1)
    with pytest.raises(ValueError, match=r"steps=0 must be a positive integer"):
        apgd(model, x, y, norm="l2", eps=0.1, steps=0)
    with pytest.raises(ValueError, match=r"restarts=0 must be a positive integer"):
        apgd(model, x, y, norm="l2", eps=0.1, restarts=0)
    with pytest.raises(ValueError, match=r"loss='dlr' is not an APGD loss; valid: ce, dlr-targeted"):
        apgd(model, x, y, norm="l2", eps=0.1, loss="dlr")
    with pytest.raises(ValueError, match=r"n_target_classes=0 must be a positive integer"):
        apgd(model, x, y, norm="l2", eps=0.1, loss="dlr-targeted", n_target_classes=0)
    with pytest.raises(ValueError, match=r"rho=1.5 must be a number in \(0, 1\]"):
        apgd(model, x, y, norm="l2", eps=0.1, rho=1.5)
    with pytest.raises(ValueError, match=r"precision='fp16' is not a precision; valid: auto, fp32, bf16"):
        apgd(model, x, y, norm="l2", eps=0.1, precision="fp16")
    with pytest.raises(ValueError, match=r"queries=0 must be a positive integer"):
        square(model, x, y, norm="l2", eps=0.1, queries=0)
    with pytest.raises(ValueError, match=r"p_init=0 must be a number in \(0, 1\]"):
        square(model, x, y, norm="l2", eps=0.1, p_init=0)
    with pytest.raises(ValueError, match=r"seed=-1 must be an integer seed in \[0, "):
        square(model, x, y, norm="l2", eps=0.1, seed=-1)
    with pytest.raises(ValueError, match=r"x has values in \[0, 2\]; images must lie in \[0, 1\]"):
        apgd(model, x * 0 + torch.tensor([0.0, 2.0]).view(2, 1, 1, 1), y, norm="l2", eps=0.1)
    with pytest.raises(ValueError, match=r"x must be a floating NCHW image batch; got torch.float32, shape \(2, 50\)"):
        apgd(model, x.flatten(1), y, norm="l2", eps=0.1)
    with pytest.raises(ValueError, match=r"y must be integer labels of shape \(2,\); got torch.int64, shape \(3,\)"):
        square(model, x, torch.zeros(3, dtype=torch.long), norm="l2", eps=0.1)
    with pytest.raises(ValueError, match=r"y has labels in \[0, 7\]; the model has 5 classes \(0..4\)"):
        apgd(model, x, torch.tensor([0, 7]), norm="l2", eps=0.1)
    with pytest.raises(ValueError, match=r"loss='dlr-targeted' needs at least 4 classes; the model has 3"):
        apgd(nn.Sequential(nn.Flatten(), nn.Linear(50, 3)), x, y, norm="l2", eps=0.1, loss="dlr-targeted")
    with pytest.raises(ValueError, match=r"attack 'fab-t' is not an attack; valid: apgd-ce, apgd-t, square"):
        ensemble(model, x, y, ThreatModel("l2", 0.1), attacks=("apgd-ce", "fab-t"))
    with pytest.raises(ValueError, match=r"attacks='plus' is not a suite; valid: standard"):
        ensemble(model, x, y, ThreatModel("l2", 0.1), attacks="plus")
    with pytest.raises(ValueError, match=r"budgets\['square'\] has no setting 'steps'; valid: queries, p_init"):
        ensemble(model, x, y, ThreatModel("l2", 0.1), budgets={"square": {"steps": 3}})
    with pytest.raises(ValueError, match=r"budgets names 'square', which is not among the attacks run: apgd-ce"):
        ensemble(model, x, y, ThreatModel("l2", 0.1), attacks=("apgd-ce",), budgets={"square": {"queries": 3}})
    with pytest.raises(ValueError, match=r"steps=0 must be a positive integer"):
        ensemble(model, x, y, ThreatModel("l2", 0.1), budgets={"apgd-t": {"steps": 0}})
    with pytest.raises(ValueError, match=r"pgd_gap=5 must be a number in \[0, 1\)"):
        sanity_flags(pgd_gap=5)


@pytest.mark.gpu
def test_cuda_apgd_matches_cpu_robust_accuracy(digits):
    if not torch.cuda.is_available():
        pytest.skip("needs torch.cuda")
    model, x, y = digits
    gpu_model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=model.arch_config["mean"],
                            std=model.arch_config["std"]).cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    cpu = _robust(model, apgd(model, x, y, norm="linf", eps=LINF, steps=50), y)
    x_gpu = apgd(gpu_model, x.cuda(), y.cuda(), norm="linf", eps=LINF, steps=50).cpu()
    assert float((x_gpu - x).abs().max()) <= LINF + 1e-6
    gpu = _robust(model, x_gpu, y)
    assert abs(float(gpu.float().mean()) - float(cpu.float().mean())) <= 0.02, _compare("cuda vs cpu", gpu, cpu)
