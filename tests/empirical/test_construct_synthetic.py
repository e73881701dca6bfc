"""The synthetic preset end to end, with its planted ground truth asserted (runs in CI).

Planted truth (empirical.data 'synthetic'): every image carries a robust class pattern (norm 4,
agrees with y 80% of the time) and a non-robust one (norm 0.4, always agrees with y).
"""

from __future__ import annotations

import json

import pytest

from empirical.reproduce import get_preset, run_reproduce
from paper_figures.empirical_figs import build_preset


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    rec = run_reproduce(get_preset("synthetic"), out_dir=out, render=build_preset)
    return out, rec


@pytest.mark.slow
def test_synthetic_preset_recovers_the_planted_ground_truth(synthetic_run):
    out, rec = synthetic_run
    gt = rec["metrics"]["ground_truth"]
    chance = gt["chance"]
    # D: both planted features point to the label (robust one 80% of the time)
    assert gt["D_nonrobust_agreement"] > 0.95 and 0.7 < gt["D_robust_agreement"] < 0.9
    # D_R keeps the robust feature of its target image
    assert gt["D_R_robust_agreement"] > 0.7
    # D_NR: the standard model's representation keeps the non-robust pattern and drops the robust one
    assert gt["D_NR_nonrobust_agreement"] > 0.9 and gt["D_NR_robust_agreement"] < chance + 0.1
    # D_det: the attack plants the target's non-robust pattern; the robust one still shows y != t
    assert gt["D_det_nonrobust_agreement"] > 0.9 and gt["D_det_robust_agreement"] < chance + 0.05
    # the D_det model predicts with the non-robust feature (swap it and the prediction follows)
    assert gt["ddet_model_follows_nonrobust_on_swapped"] > 0.9
    assert gt["ddet_model_follows_robust_on_swapped"] < 0.1
    t1 = json.loads((out / "synthetic" / "table1.json").read_text())["metrics"]
    assert t1["D_det"]["clean"] > 90 and t1["D_rand"]["clean"] > 90
    assert (out / "synthetic" / "figures" / "samples.png").is_file()


@pytest.mark.slow
def test_synthetic_d_r_drops_the_label_information_of_the_nonrobust_feature(synthetic_run):
    """Where the robust pattern shows another class than the label (y_r != y, ~20% of D), the
    planted non-robust pattern shows y in every image of D; in D_R it no longer does (it shows
    y_r, the class the robust model sees), while in D_NR it still does."""
    gt = synthetic_run[1]["metrics"]["ground_truth"]
    assert gt["D_nonrobust_agreement_where_robust_disagrees"] > 0.95
    assert gt["D_R_nonrobust_agreement_where_robust_disagrees"] < gt["chance"]
    assert gt["D_R_nonrobust_follows_robust_pattern"] > 0.9
    assert gt["D_NR_nonrobust_agreement_where_robust_disagrees"] > 0.9
    # unconditionally, D_R's non-robust pattern agrees with y only as often as the robust one does
    assert abs(gt["D_R_nonrobust_agreement"] - gt["D_R_robust_agreement"]) < 0.05


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "known shortfall: the model trained on the synthetic D_R is not robust (0% at l2 eps 0.5; the "
    "robust model keeps 81.7%): D_R carries the non-robust pattern of the robust class y_r, which "
    "agrees with y as often as the robust pattern does, and standard training prefers it; see "
    "docs/reproduce.md"))
def test_synthetic_d_r_model_inherits_robustness(synthetic_run):
    out, _ = synthetic_run
    f2 = json.loads((out / "synthetic" / "fig2.json").read_text())["metrics"]
    assert f2["std_DR"]["robust_strong"] > f2["std_D"]["robust_strong"] + 15


@pytest.mark.slow
def test_rerunning_the_synthetic_preset_skips_every_stage_and_keeps_the_numbers(synthetic_run):
    out, _ = synthetic_run
    root = out / "synthetic"
    before = json.loads((root / "table1.json").read_text())["metrics"]
    rec2 = run_reproduce(get_preset("synthetic"), out_dir=out)
    stages = rec2["metrics"]["stages"]
    assert all(v["skipped"] for k, v in stages.items() if k.startswith(("train:", "construct:", "eval:")))
    assert json.loads((root / "table1.json").read_text())["metrics"] == before
