"""`robust-features debate` end to end on a smoke preset: the non-transferable set, the
preference readout, the leakage probe (and the squares), their records, reuse, and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from empirical.debate import ROWS, lookup
from empirical.shards import load_constructed
from foundation.records import read_record
from robust_features.cli import main

RECORDS = ("table1", "fig3", "nontransfer", "preference", "leakage", "squares", "error_only", "norm", "start_ablation", "debate")


@pytest.fixture(scope="module")
def debated(tmp_path_factory):
    out = tmp_path_factory.mktemp("debate")
    assert main(["debate", "--preset", "digits-smoke", "--out-dir", str(out), "--quiet"]) == 0
    return out / "digits-smoke"


def test_the_records_say_what_they_measured(debated):
    for name in RECORDS:
        rec = read_record(debated / f"{name}.json")
        assert rec["provenance"]["wall_seconds"] > 0 and rec["seeds"]["seed"] == 0
    ds = load_constructed(debated / "datasets" / "D_nt")
    src = ds.manifest["source"]["models"]
    assert [s["model"] for s in src] == ["standard", "nt_ensemble_0", "nt_ensemble_1"]   # smoke: an ensemble of 2
    assert all(len(s["checkpoint_sha256"]) == 64 for s in src)
    d_det = load_constructed(debated / "datasets" / "D_det")
    assert bool(((ds.y - d_det.y) == 0).all())                 # both relabel every image with (y + 1) mod C
    nt = read_record(debated / "nontransfer.json")["metrics"]
    for kind in ("D_det", "D_nt"):
        s = nt["sets"][kind]
        assert 0 <= s["success"]["value"] <= 100 and s["success"]["n"] > 0
        assert set(s["transfer"]) == set(read_record(debated / "fig3.json")["config"]["fig3_archs"])
        assert len(s["transfer_ensemble"]) == 2
    pref = read_record(debated / "preference.json")["metrics"]
    assert set(pref) == {"D_rand", "D_det", "D_nt", "chance"}
    for kind in ("D_rand", "D_det", "D_nt"):
        assert 0 <= pref[kind]["test_xy"] <= 100 and 0 <= pref[kind]["test_x_y_plus_1"] <= 100
    # the D_det model's (X, Y + 1) readout is Table 1's shifted column, the same evaluation
    t1 = read_record(debated / "table1.json")["metrics"]
    assert pref["D_det"]["test_x_y_plus_1"] == pytest.approx(t1["D_det"]["shifted"])
    lk = read_record(debated / "leakage.json")["metrics"]
    assert set(lk["sets"]) == {"D", "D_rand", "D_det", "D_nt"} and lk["chance"] == pytest.approx(10.0)
    norm = read_record(debated / "norm.json")
    for kind in ("D", "D_rand", "D_det", "D_R"):      # BatchNorm through the chain: each set's model, with and without
        m = norm["metrics"][kind]
        assert m["batch_minus_none"]["clean"]["value"] == pytest.approx(m["batch"]["clean"] - m["none"]["clean"])
        assert norm["models"][kind]["none"]["arch"].endswith("norm=none")
        stage = json.loads((debated / "models" / norm["models"][kind]["none"]["name"] / "stage.json").read_text())
        assert stage["arch"] == norm["models"][kind]["none"]["arch"]      # the switch is in the model's own record
    assert "robust_strong" in norm["metrics"]["D_R"]["batch_minus_none"]
    # error-only distillation: the set is D relabelled by the teacher; the student saw its mistakes only
    from empirical.checkpoint import load_model
    from empirical.evaluate import predict

    err = load_constructed(debated / "datasets" / "D_err")
    teacher = load_model(debated / "models" / "err_teacher" / "model.pt")
    assert torch.equal(predict(teacher, err.x, precision="fp32"), err.y)
    eo = read_record(debated / "error_only.json")["metrics"]
    wrong = err.aux["teacher_wrong"].bool()
    assert eo["teacher"]["mistakes"] == int(wrong.sum()) == int((err.y != err.aux["orig_label"]).sum())
    assert eo["teacher"]["train_accuracy"] == pytest.approx(100.0 * (1 - float(wrong.float().mean())))
    # the start ablation: a sibling workspace whose source models are this one's (the same checkpoints)
    sa = read_record(debated / "start_ablation.json")
    sib = debated / "ablations" / "start-noise"
    for name in ("standard", "robust"):
        a = json.loads((debated / "models" / name / "stage.json").read_text())
        b = json.loads((sib / "models" / name / "stage.json").read_text())
        assert a["key"] == b["key"] and a["artifacts"] == b["artifacts"]
    assert load_constructed(sib / "datasets" / "D_NR").manifest["settings"]["start"] == "noise"
    assert set(sa["metrics"]["starts"]) == {"random_image", "noise"}
    assert sa["metrics"]["dnr_clean_drop"] == pytest.approx(
        sa["metrics"]["starts"]["random_image"]["std_DNR"]["clean"] - sa["metrics"]["starts"]["noise"]["std_DNR"]["clean"])
    debate = read_record(debated / "debate.json")
    records = {n: read_record(debated / f"{n}.json")["metrics"] for n in ("nontransfer", "leakage", "squares", "norm", "error_only",
                                                                  "start_ablation", "fig2", "profile")}
    rows = debate["rows"]
    assert len(rows) == len(ROWS)
    sq = records["squares"]
    assert sq["certificate"]["closed_form"] == pytest.approx(0.9) and sq["certificate"]["sampled_min_radius"] >= 0.9
    assert sq["linear"]["flipped"] == 0.0 and 0 <= sq["network"]["flipped"]["value"] <= 100
    scale = {r.test: r.scale for r in ROWS}
    for row in rows:      # each number is the one its record holds at the key it names (a fraction in percent)
        v = scale[row["test"]] * lookup(records, row["from"])
        assert row["ours"]["value"] == v or (v != v and row["ours"]["value"] is None)


def test_a_rerun_reuses_every_stage_and_gives_the_same_numbers(debated, capsys):
    before = read_record(debated / "nontransfer.json")["metrics"]
    assert main(["debate", "--preset", "digits-smoke", "--out-dir", str(debated.parent), "--quiet"]) == 0
    stages = read_record(debated / "debate.json")["stages"]
    built = [k for k, v in stages.items() if k.startswith(("train:", "construct:")) and not v["skipped"]]
    assert built == []
    assert read_record(debated / "nontransfer.json")["metrics"] == before
    assert "criteria met" in capsys.readouterr().out


def test_changing_the_ensemble_is_refused_naming_the_field(debated, capsys):
    code = main(["construct", "D_nt", "--preset", "digits-smoke", "--out-dir", str(debated.parent), "--quiet",
                 "--set", "nontransfer.models=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nontransfer.models 2 -> 3" in err and err.count("\n") == 1


@pytest.mark.parametrize("arg", ["D_rand", "=x", "1bad=x"])
def test_a_bad_released_argument_is_one_line_and_exit_2(arg, tmp_path, capsys):
    assert main(["debate", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--released", arg]) == 2
    err = capsys.readouterr().err
    assert "NAME=FOLDER" in err and err.count("\n") == 1


def test_a_released_folder_that_is_not_there_is_one_line_and_exit_2(debated, tmp_path, capsys):
    code = main(["debate", "--preset", "digits-smoke", "--out-dir", str(debated.parent), "--quiet", "--no-squares",
                 "--released", f"D_rand={tmp_path / 'nowhere'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err


def test_the_report_over_seeds(debated, tmp_path, capsys):
    study = tmp_path / "study"
    (study / "seed0").mkdir(parents=True)
    (study / "seed0" / "digits-smoke").symlink_to(debated, target_is_directory=True)
    assert main(["debate-report", str(study)]) == 0
    rec = json.loads((study / "debate.json").read_text())
    assert rec["metrics"]["n_rows"] == len(rec["rows"]) > 0
    assert all(r["ours"]["n_seeds"] == 1 for r in rec["rows"])
    assert "| published test |" in capsys.readouterr().out


@pytest.mark.parametrize("setting,names", [("nontransfer.models=0", "models"), ("nontransfer.eps=-1", "eps"),
                                           ("nontransfer.arch=bogus", "nontransfer.arch"),
                                           ("erroronly.teacher_epochs=0", "teacher_epochs"),
                                           ("leakage.certified_min=2", "certified_min"),
                                           ("squares.label_noise=1.5", "label_noise")])
def test_a_bad_debate_setting_is_one_line_and_exit_2_before_anything_runs(setting, names, tmp_path, capsys):
    assert main(["debate", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert names in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())
