"""The synthetic preset end to end, with its planted ground truth asserted (runs in CI).

Planted truth (empirical.data 'synthetic'): every image carries a robust class pattern (norm 4,
agrees with y 80% of the time) and a non-robust one (norm 0.4, always agrees with y).
"""

from __future__ import annotations

import json

import pytest

from empirical.reproduce import get_preset, run_reproduce


@pytest.mark.slow
def test_synthetic_preset_recovers_the_planted_ground_truth(tmp_path):
    rec = run_reproduce(get_preset("synthetic"), out_dir=tmp_path, figures=True)
    gt = rec["metrics"]["ground_truth"]
    chance = gt["chance"]
    # D: both planted features point to the label (robust one 80% of the time)
    assert gt["D_nonrobust_agreement"] > 0.95 and gt["D_robust_agreement"] > 0.7
    # D_R: the robust model's representation ignores the non-robust pattern, so it stays as in the
    # random start image: its correlation with the label is gone; the robust feature is kept
    assert gt["D_R_nonrobust_agreement"] < chance + 0.15
    assert gt["D_R_robust_agreement"] > 0.6
    # D_NR: the standard model's representation keeps the non-robust pattern
    assert gt["D_NR_nonrobust_agreement"] > 0.7
    # D_det: the attack plants the target's non-robust pattern; the robust one still shows y != t
    assert gt["D_det_nonrobust_agreement"] > 0.7 and gt["D_det_robust_agreement"] < chance + 0.1
    # the D_det model predicts with the non-robust feature
    assert gt["ddet_model_follows_nonrobust_on_swapped"] > gt["ddet_model_follows_robust_on_swapped"]
    assert gt["ddet_model_follows_nonrobust_on_swapped"] > 0.5
    root = tmp_path / "synthetic"
    t1 = json.loads((root / "table1.json").read_text())["metrics"]
    assert t1["D_det"]["clean"] > 50 and t1["D_rand"]["clean"] > 50
    # a second run skips every stage (artifacts valid) and reproduces the records' numbers
    rec2 = run_reproduce(get_preset("synthetic"), out_dir=tmp_path, figures=False)
    stages = rec2["metrics"]["stages"]
    assert all(v["skipped"] for k, v in stages.items() if k.startswith(("train:", "construct:", "eval:")))
    assert json.loads((root / "table1.json").read_text())["metrics"] == t1
