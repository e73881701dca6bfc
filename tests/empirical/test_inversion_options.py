"""The inversion options: average-pooled representations, the straight-through last nonlinearity,
the precision of every forward pass, the decaying step schedules; and architecture specs."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from empirical.attacks import match_representation, step_factor
from empirical.checkpoint import load_model, save_checkpoint
from empirical.models import build_model, canonical_arch, parse_arch
from empirical.precision import autocast, check_precision, resolve_precision
from empirical.stats import gap_fraction

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _model(arch: str, size: int = 16):
    torch.manual_seed(0)
    return build_model(arch, num_classes=10, in_channels=3, image_size=size, mean=MEAN, std=STD).eval()


def test_straight_through_keeps_the_value_and_passes_the_gradient_of_switched_off_units():
    m = _model("mlp", 4)
    x = torch.rand(8, 3, 4, 4, requires_grad=True)
    plain, st_ = m.features(x), m.features(x, straight_through=True)
    assert torch.equal(plain, st_)
    # the straight-through gradient of sum(g) is W2^T 1 through the first ReLU's mask only,
    # whatever the sign of the last pre-activation; the plain one is masked by the last ReLU too
    lin1, lin2 = m.body[1], m.body[3]
    with torch.no_grad():
        h = torch.relu(lin1(m.normalize(x).flatten(1)))
        pre = lin2(h)
    assert bool((pre < 0).any())                         # some last-layer units are switched off
    (g_st,) = torch.autograd.grad(m.features(x, straight_through=True).sum(), x)
    (g_plain,) = torch.autograd.grad(m.features(x).sum(), x)
    w_eff_st = lin2.weight.sum(0)                        # d sum(pre) / d h
    w_eff_plain = (lin2.weight[None] * (pre > 0).float()[:, :, None]).sum(1)
    for i in range(x.shape[0]):
        mask1 = (lin1(m.normalize(x[i : i + 1]).flatten(1)) > 0).float()[0]
        expect_st = ((w_eff_st * mask1) @ lin1.weight).view(3, 4, 4) / torch.tensor(STD).view(3, 1, 1)
        expect_plain = ((w_eff_plain[i] * mask1) @ lin1.weight).view(3, 4, 4) / torch.tensor(STD).view(3, 1, 1)
        assert torch.allclose(g_st[i], expect_st, atol=1e-5)
        assert torch.allclose(g_plain[i], expect_plain, atol=1e-5)
    assert not torch.allclose(g_st, g_plain)
    # the switch is off again after the call, and off under no_grad
    assert all(not a.straight_through for a in m._final_acts)


@pytest.mark.parametrize("arch", ["fastnet:widths=8-16-16", "fastnet:widths=8-16-16,pool=avg,act=relu",
                                  "resnet18:width=8", "vgg16:width=8", "densenet121:growth=4", "inception_small",
                                  "cnn_small", "mlp"])
def test_every_architecture_has_a_marked_last_nonlinearity_that_feeds_the_representation(arch):
    m = _model(arch)
    x = torch.rand(2, 3, 16, 16)
    assert m._final_acts
    seen = []
    hooks = [a.register_forward_hook(lambda mod, i, o: seen.append(o)) for a in m._final_acts]
    g = m.features(x)
    for h in hooks:
        h.remove()
    # the representation is a pooling (or the identity) of the marked activations' outputs
    assert sum(int(o[0].numel()) > 0 for o in seen) == len(m._final_acts)
    total = sum(o.shape[1] for o in seen)
    assert total == g.shape[1]


def test_average_pooled_representation_is_the_mean_of_the_last_feature_map():
    m = _model("fastnet:widths=8-16-16,pool=avg")
    x = torch.rand(3, 3, 16, 16)
    fmap = m.body[:-1](m.normalize(x))
    assert torch.allclose(m.features(x), fmap.mean(dim=(2, 3)), atol=1e-6)
    mx = _model("fastnet:widths=8-16-16")
    assert torch.allclose(mx.features(x), mx.body[:-1](mx.normalize(x)).amax(dim=(2, 3)), atol=1e-6)


def test_arch_specs_parse_canonicalise_reject_and_survive_a_checkpoint(tmp_path):
    assert parse_arch("fastnet:widths=32-64-128,pool=avg") == ("fastnet", {"widths": (32, 64, 128), "pool": "avg"})
    assert canonical_arch("fastnet:pool=avg,widths=64-256-256") == "fastnet:pool=avg"
    assert canonical_arch("resnet18:width=64") == "resnet18"
    with pytest.raises(ValueError, match=r"architecture option 'depth=3' of 'fastnet' is not KEY=VALUE with a known key; "
                                         r"valid options: widths \(default 64-256-256\), pool \(default max\)"):
        parse_arch("fastnet:depth=3")
    with pytest.raises(ValueError, match=r"architecture option width='wide' of 'resnet18' must be like 64"):
        parse_arch("resnet18:width=wide")
    with pytest.raises(ValueError, match=r"unknown architecture 'alexnet'; valid: fastnet"):
        parse_arch("alexnet")
    with pytest.raises(ValueError, match=r"pool='min' is not a pooling; valid: max, avg"):
        _model("fastnet:pool=min")
    m = _model("fastnet:widths=8-16-16,pool=avg")
    path = save_checkpoint(m, tmp_path / "m.pt", arch=m.arch_config["arch"], dataset="x", num_classes=10,
                           in_channels=3, image_size=16, mean=MEAN, std=STD)
    back = load_model(path)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(back(x), m(x))
    assert back.arch_config["arch"] == "fastnet:pool=avg,widths=8-16-16"


def test_precision_names_resolve_per_device_and_bf16_runs_on_the_cpu():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"rep\.precision='fp16' is not a precision; valid: auto, fp32, bf16"):
        check_precision("fp16", name="rep.precision")
    m = _model("cnn_small", 8)
    x = torch.rand(4, 3, 8, 8)
    with autocast("cpu", "bf16"):
        assert m(x).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert m(x).dtype == torch.float32


@given(steps=st.integers(1, 500), it=st.integers(0, 499))
def test_step_schedules_start_at_one_and_decay_monotonically(steps, it):
    it = min(it, steps - 1)
    assert step_factor("constant", it, steps) == 1.0
    for s in ("linear", "cosine"):
        assert step_factor(s, 0, steps) == 1.0
        f = step_factor(s, it, steps)
        assert 0.0 < f <= 1.0
        if it + 1 < steps:
            assert step_factor(s, it + 1, steps) <= f
    assert step_factor("cosine", steps // 2, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * (steps // 2) / steps)))
    with pytest.raises(ValueError, match=r"step_schedule='exp' is not a schedule; valid: constant, linear, cosine"):
        step_factor("exp", 0, 10)


def test_a_decaying_schedule_lands_on_an_identity_target_that_a_constant_step_overshoots():
    # g = identity: a constant normalised step of size a ends oscillating at distance up to a/2 of
    # the target; a linear decay whose steps sum past the distance ends within the last step.
    target = torch.full((4, 1, 2, 2), 0.5)
    start = target.clone()
    start[:, 0, 0, 0] = 0.9                                # distance 0.4 along one pixel
    ident = lambda z: z.flatten(1)  # noqa: E731
    _, l_const = match_representation(ident, target, start, steps=20, step_size=0.3)
    _, l_lin = match_representation(ident, target, start, steps=20, step_size=0.3, step_schedule="linear")
    assert float(l_const.max()) > 0.05                    # 0.4 - 0.3 = 0.1, then +-0.3 oscillation
    assert float(l_lin.max()) < 0.3 / 20 + 1e-6


def test_bf16_inversion_reaches_the_fp32_representation_loss_on_a_trained_representation():
    torch.manual_seed(0)
    m = _model("cnn_small", 8)
    for p in m.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    target, start = torch.rand((32, 3, 8, 8), generator=g), torch.rand((32, 3, 8, 8), generator=g)
    kw = dict(steps=30, step_size=0.2, step_schedule="cosine")
    _, l32 = match_representation(m.features, target, start, precision="fp32", **kw)
    _, l16 = match_representation(m.features, target, start, precision="bf16", **kw)
    with torch.no_grad():
        d0 = (m.features(start) - m.features(target)).norm(dim=1)
    assert float(l32.mean()) < 0.5 * float(d0.mean())      # the inversion does progress
    # stated tolerance: bf16's mean final loss within 5% of the starting distance of fp32's
    assert abs(float(l16.mean()) - float(l32.mean())) < 0.05 * float(d0.mean())
    fn = functools.partial(m.features, straight_through=True)
    _, lst = match_representation(fn, target, start, precision="fp32", **kw)
    assert float(lst.mean()) < float(d0.mean())


def test_gap_fraction_matches_the_accuracies_and_its_stderr_matches_a_bootstrap():
    rng = np.random.default_rng(0)
    n = 2000
    s = rng.random(n) < 0.05
    a = rng.random(n) < 0.45
    o = (rng.random(n) < 0.2) | s
    gf = gap_fraction(s, a, o)
    assert gf["value"] == pytest.approx((o.mean() - s.mean()) / (a.mean() - s.mean()))
    boots = []
    for _ in range(2000):
        i = rng.integers(0, n, n)
        boots.append((o[i].mean() - s[i].mean()) / (a[i].mean() - s[i].mean()))
    assert gf["stderr"] == pytest.approx(float(np.std(boots)), rel=0.1)
    assert math.isnan(gap_fraction(s, s, o)["value"])
    with pytest.raises(ValueError, match="same examples"):
        gap_fraction(s, a[:10], o)
