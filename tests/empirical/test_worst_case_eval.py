"""The worst-case evaluation wired into the CLI and the reproduction: `eval --attack/--suite` and
the Figure 2 worst-case column (PGD then the AutoAttack-style suite, each on what is still robust)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from robust_features.cli import main


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits-model")
    assert main(["train", "--data", "digits", "--arch", "mlp", "--epochs", "4", "--no-progress", "--eval-steps", "2",
                 "--n-eval", "50", "--out-dir", str(out)]) == 0
    return out / "model.pt"


def test_eval_suite_reports_each_attack_the_worst_case_masks_and_flags(digits_ckpt, tmp_path, capsys):
    rec_path = tmp_path / "ev.json"
    rc = main(["eval", "--checkpoint", str(digits_ckpt), "--threat", "l2:0.5", "--threat", "l2:1.0", "--n", "60",
               "--suite", "standard", "--apgd-steps", "10", "--apgd-targets", "3", "--square-queries", "50",
               "--steps", "10", "--out", str(rec_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "worst case" in out
    rec = json.loads(rec_path.read_text())
    m = rec["metrics"]
    assert rec["attack_order"] == ["pgd", "apgd-ce", "apgd-t", "square"]
    for key in ("l2_eps0.5", "l2_eps1"):
        per = m["robust_accuracy"][key]
        seq = [per[a] for a in ("pgd", "apgd-ce", "apgd-t", "square")]
        assert all(b <= a + 1e-12 for a, b in zip(seq, seq[1:]))          # each attack only removes examples
        assert per["worst_case"] == seq[-1] <= m["clean_accuracy"]
        assert len(rec["mask_sha256"][key]["worst_case"]) == 64
        assert set(m["sanity_flags"][key]) == {"non_monotone_in_eps", "pgd_gap", "square_stronger", "zero_gradients"}
    assert m["robust_accuracy"]["l2_eps1"]["worst_case"] <= m["robust_accuracy"]["l2_eps0.5"]["worst_case"]
    assert m["sanity_flags"]["l2_monotone"] == {"non_monotone_in_eps": False}
    assert rec["config"]["worst_case"]["budgets"]["apgd-t"] == {"steps": 10, "n_target_classes": 3,
                                                            "targets_at_once": 1}


def test_eval_attack_names_are_checked(digits_ckpt, capsys):
    assert main(["eval", "--checkpoint", str(digits_ckpt), "--attack", "fab"]) == 2
    assert "--attack 'fab' is not an attack; valid: pgd, apgd-ce, apgd-t, square" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(digits_ckpt), "--suite", "plus"]) == 2
    assert "--suite 'plus' is not a suite; valid: standard" in capsys.readouterr().err


def test_eval_config_suite_names_are_validated():
    from empirical.experiments import EvalConfig

    assert EvalConfig(suite=("standard",)).suite == ("apgd-ce", "apgd-t", "square")
    with pytest.raises(ValueError, match=r"eval.suite=\('fab',\) holds 'fab'; valid attacks: apgd-ce, apgd-t, square"):
        EvalConfig(suite=("fab",))
    with pytest.raises(ValueError, match=r"eval.square_queries=0 must be a positive integer"):
        EvalConfig(square_queries=0)


def test_reproduce_reports_the_worst_case_column_and_a_suite_added_later_reuses_everything_else(tmp_path):
    from empirical.experiments import run_fig2, with_overrides
    from empirical.workspace import Workspace
    from empirical.reproduce import get_preset

    cfg = get_preset("synthetic-smoke")
    assert cfg.eval.suite == ("apgd-ce", "apgd-t", "square")
    bare = replace(cfg, eval=replace(cfg.eval, suite=()))
    ws = Workspace(cfg=bare, root=tmp_path / "run")
    f_bare = run_fig2(ws)
    assert "robust_worst" not in f_bare["metrics"]["std_D"]
    ws2 = Workspace(cfg=cfg, root=tmp_path / "run")
    f2 = run_fig2(ws2)
    for row in ("std_D", "adv_D", "std_DR", "std_DNR"):
        m = f2["metrics"][row]
        after = m["worst_case"]["robust_after"]          # the strong PGD, then the suite on what it left standing
        assert after["pgd"] == pytest.approx(m["robust_strong"])
        assert m["robust_worst"] <= m["robust_strong"] + 1e-9 and m["robust_worst"] <= min(after.values()) + 1e-9
        assert m["robust_strong"] == f_bare["metrics"][row]["robust_strong"]       # the PGD numbers are reused
    stages = ws2.timings
    assert all(v["skipped"] for k, v in stages.items() if k.startswith(("train:", "construct:", "eval:")))
    assert any(k.startswith("eval-suite:") and not v["skipped"] for k, v in stages.items())
    assert "worst" in f2["metrics"]["gap_fraction"]["D_R"]
    assert set(f2["metrics"]["sanity_flags"]["adv_D"]) == {"non_monotone_in_eps", "pgd_gap", "square_stronger",
                                                          "zero_gradients"}
    again = Workspace(cfg=with_overrides(cfg, {}), root=tmp_path / "run")
    run_fig2(again)
    assert all(v["skipped"] for k, v in again.timings.items() if k.startswith("eval-suite:"))
    assert "suite" in f2["attacks"]


def test_eval_records_the_budget_that_ran_beside_the_one_asked_for(digits_ckpt, tmp_path):
    """APGD-T attacks the classes ranked 2nd, 3rd, ...: at most C - 1 = 9 on digits, whatever is asked
    (and at most that many in one batch)."""
    out = tmp_path / "ev.json"
    assert main(["eval", "--checkpoint", str(digits_ckpt), "--threat", "l2:1.0", "--n", "20", "--steps", "2",
                 "--attack", "apgd-t", "--apgd-steps", "2", "--apgd-targets", "20", "--apgd-targets-at-once", "20",
                 "--seed", "7", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["config"]["worst_case"]["budgets"]["apgd-t"] == {"steps": 2, "n_target_classes": 20,
                                                             "targets_at_once": 20}  # asked
    ran = rec["budgets_run"]["l2_eps1"]
    assert ran["apgd-t"]["n_target_classes"] == 9 and ran["apgd-t"]["steps"] == 2                      # ran
    assert ran["apgd-t"]["targets_at_once"] == 9
    assert ran["pgd"]["steps"] == 2 and rec["attack_seeds"]["l2_eps1"] == {"pgd": 7, "apgd-t": 7}
    assert "autoattack" in rec["semantics"] and rec["config"]["worst_case"]["semantics"] == rec["semantics"]
