"""Robustness profiles (empirical/audit.py): eps sweeps under the strong PGD and the worst case,
and the spatial grid, for every Figure 2 model."""

from __future__ import annotations

import pytest
import torch

from empirical.audit import ProfileConfig, run_profile, spatial, threat_id
from empirical.reproduce import get_preset
from empirical.workspace import Workspace


def test_spatial_identity_shift_and_rotation():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 3] = 1.0
    assert torch.equal(spatial(x, 0.0, 0, 0), x)
    moved = spatial(x, 0.0, 2, 1)                      # 2 pixels right, 1 down
    assert moved[0, 0, 3, 5] == pytest.approx(1.0, abs=1e-5) and float(moved.sum()) == pytest.approx(1.0, abs=1e-5)
    img = torch.rand(2, 3, 8, 8)
    four = img
    for _ in range(4):                                 # four quarter turns: back where it started (inner pixels)
        four = spatial(four, 90.0, 0, 0)
    assert torch.allclose(four[..., 1:-1, 1:-1], img[..., 1:-1, 1:-1], atol=1e-4)
    r = spatial(img, 90.0, 0, 0)
    assert torch.allclose(r[0, 0], torch.rot90(img[0, 0], k=1, dims=(0, 1)), atol=1e-4) or \
        torch.allclose(r[0, 0], torch.rot90(img[0, 0], k=-1, dims=(0, 1)), atol=1e-4)


def test_threat_ids_carry_no_dots():
    assert threat_id("l2", 0.25) == "l2_0p25" and threat_id("l2", 1.0) == "l2_1"
    assert threat_id("linf", 8 / 255) == "linf_8of255" and threat_id("linf", 0.1) == "linf_0p1"
    assert all("." not in threat_id(n, e) for n in ("l2", "linf") for e in (0.125, 2 / 255, 1e-7, 3.5))


def test_bad_profile_settings_are_refused():
    with pytest.raises(ValueError, match="l2_eps"):
        ProfileConfig(l2_eps=(0.0,))
    with pytest.raises(ValueError, match="rotations"):
        ProfileConfig(rotations=(400.0,))
    with pytest.raises(ValueError, match="translations"):
        ProfileConfig(translations=(1.5,))
    with pytest.raises(ValueError, match="suite=.*'pgd-x'.*valid: apgd-ce"):
        ProfileConfig(suite=("apgd-ce", "pgd-x"))
    with pytest.raises(ValueError, match="n=0"):
        ProfileConfig(n=0)


def test_profile_on_a_smoke_chain_is_monotone_and_cached(tmp_path):
    cfg = get_preset("digits-smoke")
    ws = Workspace(cfg=cfg, root=tmp_path / cfg.name)
    pc = ProfileConfig(l2_eps=(0.25, 1.0), linf_eps=(0.1,), suite=("apgd-ce",), rotations=(0.0, 15.0), translations=(0, 1))
    rec = run_profile(ws, pc)
    m = rec["metrics"]
    for row in ("std_D", "adv_D", "std_DR", "std_DNR"):
        for t in ("l2_0p25", "l2_1", "linf_0p1"):
            r = m["eps"][t][row]
            assert 0 <= r["worst_case"] <= r["strong_pgd"] + 1e-9 <= 100 + 1e-9   # the suite only removes examples
        sp = m["spatial"][row]
        assert sp["n_transforms"] == 8 and sp["worst"] <= min(sp["per_transform"].values()) + 1e-9
        assert sp["clean"] == pytest.approx(sp["per_transform"]["rot0_dx0_dy0"])
    assert set(m["eps"]["l2_1"]["dr_gap_fraction"]) == {"strong_pgd", "worst_case"}
    assert m["summary"]["std_DR"]["worst_case"]["linf_0p1"] == m["eps"]["linf_0p1"]["std_DR"]["worst_case"]
    assert m["summary"]["dr_minus_std_spatial_worst"] == pytest.approx(m["spatial"]["std_DR"]["worst"]
                                                                       - m["spatial"]["std_D"]["worst"])
    ws2 = Workspace(cfg=cfg, root=tmp_path / cfg.name)
    again = run_profile(ws2, pc)
    assert again["metrics"]["eps"] == m["eps"]                      # every (model, threat) a cached stage
    profiled = {k: v for k, v in ws2.timings.items() if k.startswith("profile:")}
    assert len(profiled) == 4 * 3 and all(v["skipped"] for v in profiled.values())


def test_profile_on_a_sample_of_the_evaluation_sample(tmp_path):
    from dataclasses import replace

    cfg = get_preset("digits-smoke")
    outer = Workspace(cfg=cfg, root=tmp_path / cfg.name).eval_subset()
    n = max(1, outer.n // 3)
    pc = ProfileConfig(l2_eps=(0.5,), linf_eps=(), suite=("square",), rotations=(0.0,), translations=(0,), n=n,
                       square_queries=7)
    rec = run_profile(Workspace(cfg=replace(cfg, profile=pc), root=tmp_path / cfg.name))   # the config's section
    ex = rec["examples"]
    assert rec["metrics"]["n"] == ex["n"] == n and ex["of_eval_sample"] == outer.n
    assert set(ex["test_indices"]) <= {int(i) for i in outer.indices}        # nested in the evaluation sample
    assert rec["budgets"]["square_queries"] == 7                               # the profile's budget, recorded
