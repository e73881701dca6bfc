"""The four constructions on models with known optima (linear representations, linear classifiers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from empirical.construct import (
    RepresentationConfig,
    TargetedConfig,
    build_representation_dataset,
    build_targeted_dataset,
)
from empirical.shards import load_constructed


class LinearRep(nn.Module):
    """g(x) = W x (k < d rows): representation matching can only move x within W's row space."""

    def __init__(self, w: torch.Tensor, num_classes: int = 4):
        super().__init__()
        self.register_buffer("w", w)
        self.head = nn.Linear(w.shape[0], num_classes)

    def features(self, x):
        return x.flatten(1) @ self.w.T

    def forward(self, x):
        return self.head(self.features(x))


def _data(n=24, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand((n, 1, 4, 4), generator=g)       # inside the box, away from its faces
    return x, torch.randint(0, 4, (n,), generator=g)


def test_representation_matching_keeps_the_start_outside_the_representation_and_matches_inside(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    w = q[:, :4].T.contiguous()                                   # orthonormal rows: P = W^T W
    model = LinearRep(w)
    cfg = RepresentationConfig(steps=300, step_size=0.02, shard_size=10, use_best=True, seed=1)
    res = build_representation_dataset(tmp_path / "dr", kind="D_R", model=model, x=x, y=y, num_classes=4, cfg=cfg)
    ds = load_constructed(tmp_path / "dr")
    assert torch.equal(ds.y, y)                                   # label y kept
    start = x[ds.aux["start_index"]]
    assert not bool((ds.aux["start_index"] == torch.arange(24)).any())
    P = w.T @ w
    flat, s = ds.x.flatten(1), start.flatten(1)
    # the component the representation cannot see is exactly the start image's (paper: x' ~ D)
    assert torch.allclose((flat - s) @ (torch.eye(16) - P), torch.zeros_like(flat), atol=1e-4)
    # the component it sees matches the target's
    assert torch.allclose(flat @ P, x.flatten(1) @ P, atol=0.03)
    assert res.manifest["metrics"]["rep_loss_mean"] < 0.03
    assert res.manifest["metrics"]["rep_loss_rel_mean"] < 0.03


def test_targeted_constructions_relabel_stay_in_the_ball_and_fool_the_source(tmp_path):
    torch.manual_seed(0)
    x, y = _data(n=40)
    model = LinearRep(torch.eye(16)[:8].contiguous())
    nn.init.normal_(model.head.weight, std=3.0)
    cfg = TargetedConfig(eps=1.5, steps=40, step_size=0.15, shard_size=16, seed=2)
    res = build_targeted_dataset(tmp_path / "det", kind="D_det", model=model, x=x, y=y, num_classes=4, cfg=cfg)
    ds = load_constructed(tmp_path / "det")
    assert torch.equal(ds.y, (y + 1) % 4) and torch.equal(ds.aux["orig_label"], y)
    assert float(ds.aux["l2"].max()) <= 1.5 + 1e-4
    assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1
    assert res.manifest["metrics"]["target_success_rate"] > 0.9
    with torch.no_grad():
        assert (model(ds.x).argmax(1) == ds.y).float().mean().item() == pytest.approx(
            res.manifest["metrics"]["target_success_rate"])
    rand = build_targeted_dataset(tmp_path / "rand", kind="D_rand", model=model, x=x, y=y, num_classes=4,
                                  cfg=TargetedConfig(eps=1.5, steps=40, step_size=0.15, exclude_true_label=True))
    assert rand.manifest["metrics"]["target_is_true_rate"] == 0.0
    assert rand.manifest["settings"]["exclude_true_label"] is True


def test_a_real_construction_interrupted_mid_way_resumes_to_the_same_bytes(tmp_path):
    torch.manual_seed(0)
    x, y = _data(n=30)
    model = LinearRep(torch.eye(16)[:8].contiguous())
    cfg = TargetedConfig(eps=0.5, steps=5, step_size=0.2, shard_size=7, random_start=True, restarts=2,
                         storage="float16", seed=5)
    build_targeted_dataset(tmp_path / "a", kind="D_rand", model=model, x=x, y=y, num_classes=4, cfg=cfg)

    def crash(i, entry):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_targeted_dataset(tmp_path / "b", kind="D_rand", model=model, x=x, y=y, num_classes=4, cfg=cfg,
                               on_shard=crash)
    res = build_targeted_dataset(tmp_path / "b", kind="D_rand", model=model, x=x, y=y, num_classes=4, cfg=cfg)
    assert res.reused_shards == (0, 1, 2) and res.built_shards == (3, 4)
    for i in range(5):
        assert (tmp_path / "a" / f"shard-{i:05d}.bin").read_bytes() == (tmp_path / "b" / f"shard-{i:05d}.bin").read_bytes()
    assert load_constructed(tmp_path / "a").content_sha256 == load_constructed(tmp_path / "b").content_sha256


def test_wrong_kinds_are_rejected(tmp_path):
    x, y = _data(n=4)
    model = LinearRep(torch.eye(16)[:4].contiguous())
    with pytest.raises(ValueError, match=r"kind='D_det' is not a representation construction; valid: D_R, D_NR"):
        build_representation_dataset(tmp_path, kind="D_det", model=model, x=x, y=y, num_classes=4)
    with pytest.raises(ValueError, match=r"kind='D_R' is not a targeted-attack construction; valid: D_rand, D_det"):
        build_targeted_dataset(tmp_path, kind="D_R", model=model, x=x, y=y, num_classes=4)
