"""The debate table: rows read from records by key, judged, summarised over seeds (docs/debate.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from empirical.debate import ROWS, Row, debate_rows, judge, lookup
from foundation.records import file_sha256, write_record
from paper_figures.debate import seed_folders, summarise


def _metrics(shift: float) -> dict[str, dict]:
    rate = lambda v: {"value": v, "stderr": 1.0, "n": 1000}  # noqa: E731
    return {
        "nontransfer": {
            "chance": 10.0,
            "sets": {"D_det": {"success": rate(99.0), "transfer_same_arch": rate(60.0 + shift), "test_xy": 30.0 + shift,
                               "test_x_y_plus_1": 20.0, "transfer": {"mlp": rate(30.0)}},
                     "D_nt": {"success": rate(97.0 + shift), "transfer_same_arch": rate(3.0 + shift), "test_xy": 8.0,
                              "test_x_y_plus_1": 60.0 - shift, "transfer": {"mlp": rate(2.0)}}},
            "fig3_placement": {"residual": 5.0 + shift, "band": 10.0}},
        "leakage": {"chance": 10.0, "robust_linear": {"certified_fraction": 85.0, "clean_accuracy": 30.0},
                    "sets": {"D_rand": {"accuracy": 20.0 + shift, "stderr": 1.2},
                             "D_det": {"accuracy": 9.0 - shift, "stderr": 0.9}}},
        "start_ablation": {"dnr_clean_drop": 12.0 + shift},
        "error_only": {"chance": 10.0, "student": {"test_accuracy": rate(30.0 + shift)}},
        "norm": {k: {"batch_minus_none": {"clean": rate(20.0 - shift), "robust_strong": rate(-3.0)}}
                 for k in ("D", "D_rand", "D_det", "D_R")},
        "squares": {"certificate": {"sampled_min_radius": 0.95, "closed_form": 0.9},
                    "network": {"flipped": rate(90.0 + shift), "train_accuracy": 100.0, "test_accuracy": 80.0},
                    "linear": {"flipped": 0.0}},
        "fig2": {"gap_fraction": {"D_R": {"worst": {"value": 0.40 + shift / 100, "stderr": 0.03},
                                          "strong": {"value": 0.45, "stderr": 0.03}}}},
        "profile": {"summary": {"std_DR": {"worst_case": {"linf_8of255": 1.0 + shift, "l2_0p25": 30.0}},
                                "dr_minus_std_spatial_worst": -5.0 + shift},
                    "n": 500,
                    "eps": {t: {"norm": norm, "eps": e,
                                **{r: {"strong_pgd": a + shift, "worst_case": a - 1.0}
                                   for r, a in (("std_D", 5.0), ("adv_D", 40.0), ("std_DR", 20.0), ("std_DNR", 0.0))},
                                "dr_gap_fraction": {"strong_pgd": {"value": 0.45}, "worst_case": {"value": 0.41}}}
                            for t, norm, e in (("l2_0p25", 0, 0.25), ("l2_0p5", 0, 0.5), ("linf_8of255", 1, 8 / 255))},
                    "spatial": {r: {"clean": 70.0, "worst": 30.0 + shift} for r in ("std_D", "adv_D", "std_DR", "std_DNR")}},
    }


def _study(tmp_path: Path, seeds=(0, 1, 2)) -> Path:
    root = tmp_path / "study"
    for s in seeds:
        folder = root / f"seed{s}" / "cifar10-cpu"       # a run's own layout: --out-dir root/seed<K>
        for name, m in _metrics(float(s)).items():
            write_record(folder / f"{name}.json", experiment=f"test.{name}", config={"name": "cifar10-cpu", "seed": s},
                         metrics=m)
        rows = debate_rows(_metrics(float(s)))
        write_record(folder / "debate.json", experiment="test.debate", config={"name": "cifar10-cpu", "seed": s},
                     metrics={"n_rows": len(rows)}, extra={"rows": rows})
    return root


def test_judge_ops():
    row = lambda op, rhs: Row("t", "s", "p", "r:x", (op, rhs), "c", refs={"a": "r:a"})  # noqa: E731
    assert judge(row("ge", 5.0), 5.0, 0.0, {})["met"] and not judge(row("gt", 5.0), 5.0, 0.0, {})["met"]
    assert judge(row("le", ("a", 0.1, 0.0)), 2.0, 0.0, {"a": 30.0})["met"]
    assert not judge(row("le", ("a", 0.1, 0.0)), 4.0, 0.0, {"a": 30.0})["met"]
    assert judge(row("abs_le", ("a", 1.0, 0.0)), -3.0, 0.0, {"a": 3.0})["met"]
    assert judge(row("clearly_gt", 10.0), 13.0, 1.0, {})["met"] and not judge(row("clearly_gt", 10.0), 11.0, 1.0, {})["met"]
    assert judge(row("not_clearly_gt", 10.0), 11.0, 1.0, {})["met"] and not judge(row("not_clearly_gt", 10.0), 13.0, 1.0, {})["met"]
    assert not judge(row("ge", 5.0), float("nan"), 0.0, {})["met"]          # a missing number never passes
    with pytest.raises(ValueError, match="op"):
        judge(row("approx", 5.0), 5.0, 0.0, {})


def test_rows_read_their_numbers_from_the_records_by_key():
    m = _metrics(0.0)
    rows = debate_rows(m)
    assert len(rows) == len(ROWS)
    scale = {row.test: row.scale for row in ROWS}
    for r in rows:
        assert r["ours"]["value"] == scale[r["test"]] * lookup(m, r["from"]) or math.isnan(r["ours"]["value"])
    gap = next(r for r in rows if r["from"] == "fig2:gap_fraction.D_R.worst.value")
    assert gap["ours"] == {"value": pytest.approx(40.0), "stderr": pytest.approx(3.0)}      # a fraction, in percent
    assert gap["refs"] == {"pgd": pytest.approx(45.0)} and gap["met"]
    by = {r["test"]: r for r in rows}
    tr = by["Non-transferable targeted examples: transfer to a fresh model of f's architecture"]
    assert tr["bound"] == pytest.approx(6.0) and tr["met"]            # 3.0 <= 0.1 x 60
    assert not debate_rows({"leakage": m["leakage"]})[0]["test"].startswith("Non-transferable")   # absent records left out


def test_summary_over_seeds_is_recomputable_from_the_records(tmp_path):
    root = _study(tmp_path)
    assert [s for s, _ in seed_folders(root)] == [0, 1, 2]
    summarise(root)
    rec = json.loads((root / "debate.json").read_text())
    assert rec["metrics"]["n_rows"] == len(ROWS)
    for row in rec["rows"]:
        per = row["ours"]["per_seed"]
        name = row["from"]["ours"].partition(":")[0]
        scale = next(r.scale for r in ROWS if r.test == row["test"])
        for s, v in per.items():
            metrics = json.loads((root / f"seed{s}" / "cifar10-cpu" / f"{name}.json").read_text())["metrics"]
            assert v == scale * lookup({name: metrics}, row["from"]["ours"])
            (path, sha), = row["records"][s].items()
            assert sha == file_sha256(root / f"seed{s}" / "cifar10-cpu" / Path(path).name)
        vals = list(per.values())
        mean = sum(vals) / 3
        assert row["ours"]["mean"] == pytest.approx(mean)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / 2)
        assert row["ours"]["stderr"] == pytest.approx(sd / math.sqrt(3))
        assert row["ours"]["n_seeds"] == 3
    md = (root / "debate.md").read_text()
    assert "| published test | their setting and number | ours |" in md and "23.5%" in md
    assert "**Headline: D_R closes 41.0% +- 0.6 of the robust-vs-standard gap under the worst case**" in md
    # the profile: one table row per threat (mean +- se of the seeds' numbers) and the figure
    assert "| l2_0p5 | 6.0 +- 0.6 / 4.0 +- 0.0 |" in md and "| 35.0 +- 0.0 | 45.0 +- 0.0 | 41.0 +- 0.0 |" in md
    assert "| standard on D_R | 70.0 +- 0.0 | 31.0 +- 0.6 |" in md
    assert (root / "profile.png").stat().st_size > 0


def test_a_record_run_with_another_seed_is_refused(tmp_path):
    root = _study(tmp_path, seeds=(0, 1))
    path = root / "seed1" / "cifar10-cpu" / "leakage.json"
    rec = json.loads(path.read_text())
    write_record(path, experiment="x", config={"name": "cifar10-cpu", "seed": 0}, metrics=rec["metrics"])
    with pytest.raises(ValueError, match="seed 0, not 1"):
        summarise(root)


def test_an_empty_study_is_refused(tmp_path):
    (tmp_path / "seed0").mkdir()
    with pytest.raises(ValueError, match="no seed<K>/ folder"):
        summarise(tmp_path)
