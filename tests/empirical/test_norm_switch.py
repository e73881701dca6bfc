"""The normalisation switch of every architecture (``ARCH:norm=batch|group|none``; Benz, Zhang &
Kweon, ICCV 2021, train the same networks with and without BatchNorm)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from empirical.checkpoint import load_model, save_checkpoint
from empirical.models import ARCHS, build_model, canonical_arch, parse_arch
from empirical.models.base import group_count, set_norm

SMALL = {"fastnet": "fastnet:widths=8-16-16", "resnet18": "resnet18:width=8", "resnet50": "resnet50:width=4",
         "vgg16": "vgg16:width=8", "densenet121": "densenet121:growth=4", "inception_small": "inception_small",
         "cnn_small": "cnn_small:width=4", "mlp": "mlp:width=16"}


def _build(spec: str, size: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return build_model(spec, num_classes=3, in_channels=3, image_size=size, mean=[0.5] * 3, std=[0.25] * 3)


def _kinds(m: nn.Module) -> set[type]:
    return {type(x) for x in m.modules() if isinstance(x, (nn.BatchNorm2d, nn.GroupNorm, nn.BatchNorm1d))}


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "mlp"])
@pytest.mark.parametrize("norm,expect", [("batch", {nn.BatchNorm2d}), ("group", {nn.GroupNorm}), ("none", set())])
def test_every_architecture_switches_its_normalisation(arch, norm, expect):
    spec = f"{SMALL[arch]},norm={norm}" if ":" in SMALL[arch] else f"{arch}:norm={norm}"
    m = _build(spec)
    assert _kinds(m) == expect
    assert m(torch.rand(4, 3, 8, 8)).shape == (4, 3)
    # the same layers, only the normalisation differs: with GroupNorm the convolutions' weights are drawn
    # identically; without a normalisation they are He's fan-in draws (std sqrt(2 / fan_in)), which keep the signal
    base = _build(SMALL[arch])
    convs = lambda mm: [p for n, p in mm.named_parameters() if p.ndim == 4]  # noqa: E731
    assert len(convs(m)) == len(convs(base))
    if norm != "none":
        assert all(torch.equal(a, b) for a, b in zip(convs(m), convs(base)))
    else:
        big = [w for w in convs(m) if w[0].numel() * w.shape[0] >= 2000]
        assert all(abs(float(w.detach().std()) / math.sqrt(2.0 / w[0].numel()) - 1) < 0.15 for w in big)
    assert (canonical_arch(spec) == canonical_arch(SMALL[arch])) == (norm == "batch")   # the default is dropped


def test_without_normalisation_the_signal_reaches_the_logits():
    """The default draws shrink a deep network's signal to ~1e-5 at the logits without BatchNorm
    (fastnet then never trains); He's draws keep it within a factor of the BatchNorm network's
    (batch statistics, as it trains: measured 2.6x fastnet, 25x resnet18 whose residual sums add up, 1x vgg16)."""
    x = torch.rand(16, 3, 32, 32)
    for spec in ("fastnet:widths=32-64-128", "resnet18:width=16", "vgg16:width=16"):
        with_bn, without = _build(spec, 32).train(), _build(f"{spec},norm=none", 32).eval()
        with torch.no_grad():
            ratio = float(without(x).std() / with_bn(x).std())
        assert 0.1 < ratio < 50, (spec, ratio)


def test_without_normalisation_training_mode_changes_nothing_a_batch_statistic_would():
    m = _build("fastnet:widths=8-16-16,norm=none")
    x = torch.rand(6, 3, 8, 8)
    m.train()
    a = m(x)
    m.eval()
    assert torch.allclose(a, m(x))            # no running statistics, no batch dependence
    assert torch.allclose(m(x[:1]), a[:1], atol=1e-6)


def test_group_counts_divide_the_channels():
    for c in (1, 3, 8, 16, 24, 48, 64, 96, 256):
        g = group_count(c)
        assert c % g == 0 and 32 % g == 0 and g == max(d for d in range(1, 33) if c % d == 0 and 32 % d == 0)


def test_a_checkpoint_rebuilds_the_switched_model(tmp_path):
    m = _build("resnet18:width=8,norm=group")
    m.eval()
    x = torch.rand(3, 3, 8, 8)
    path = save_checkpoint(m, tmp_path / "m.pt", arch=m.arch_config["arch"], dataset="t", num_classes=3,
                           in_channels=3, image_size=8, mean=[0.5] * 3, std=[0.25] * 3)
    back = load_model(path)
    assert back.arch_config["arch"] == "resnet18:norm=group,width=8"
    assert _kinds(back) == {nn.GroupNorm} and torch.allclose(back(x), m(x))


@pytest.mark.parametrize("spec,msg", [("fastnet:norm=layer", "valid: batch, group, none"),
                                      ("mlp:norm=batch", "no normalisation layer")])
def test_bad_norms_are_refused_naming_the_valid_ones(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_arch(spec)
    with pytest.raises(ValueError, match="valid"):
        set_norm(nn.Sequential(), "layer")


def test_arch_with_norm_switches_only_the_normalisation():
    from empirical.controls import arch_with_norm

    assert arch_with_norm("fastnet:widths=32-64-128", "none") == "fastnet:norm=none,widths=32-64-128"
    assert arch_with_norm("fastnet:widths=32-64-128,norm=none", "batch") == "fastnet:widths=32-64-128"
    assert arch_with_norm("resnet18", "group") == "resnet18:norm=group"
    with pytest.raises(ValueError, match="not valid"):
        arch_with_norm("mlp", "batch")
