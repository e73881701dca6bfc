"""paper_figures.empirical_figs renders every figure from small fixture records (no training)."""

from __future__ import annotations

import hashlib
import json

import pytest

from paper_figures import empirical_figs as F
from foundation.records import atomic_write_json, write_record


def _fixture(root, channels=1, size=8):
    row = lambda c, rp, rs: {"clean": c, "robust_paper": rp, "robust_strong": rs, "n_robust": 100}  # noqa: E731
    cfg = {"name": "fixture"}
    write_record(root / "fig2.json", experiment="empirical.fig2", config=cfg,
                 metrics={"std_D": row(97.0, 3.0, 1.0), "adv_D": row(93.0, 70.0, 65.0),
                          "std_DR": row(85.0, 40.0, 35.0), "std_DNR": row(88.0, 2.0, 0.5)},
                 extra={"attacks": {"paper": "l2 eps=0.5, PGD-7", "strong": "PGD-20 x5"}})
    write_record(root / "table1.json", experiment="empirical.table1", config=cfg,
                 metrics={"D": {"clean": 97.1}, "D_rand": {"clean": 61.4},
                          "D_det": {"clean": 41.2, "shifted": 12.5}, "chance": 10.0})
    write_record(root / "fig3.json", experiment="empirical.fig3", config=cfg,
                 metrics={"points": {"a": {"ddet_accuracy": 30.0, "transfer_success": 50.0, "n_used": 80},
                                     "b": {"ddet_accuracy": 40.0, "transfer_success": 70.0, "n_used": 80},
                                     "c": {"ddet_accuracy": 45.0, "transfer_success": 90.0, "n_used": 80}},
                          "trend": {"slope": 2.6}},
                 extra={"attack": "l2 eps=1, PGD-50", "source_arch": "a"})
    img = [[[[0.1 * ((i + j + c) % 10) for j in range(size)] for i in range(size)] for c in range(channels)]]
    samples = {"indices": [0, 1], "classes": [str(k) for k in range(10)]}
    for k in ("D", "D_R", "D_NR", "D_rand", "D_det"):
        samples[k] = {"x": img * 2, "y": [3, 4]}
    p = atomic_write_json(root / "samples.json", samples)
    write_record(root / "constructions.json", experiment="empirical.constructions", config=cfg, metrics={},
                 extra={"samples": {"file": "samples.json", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}})


@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_every_empirical_figure_renders_from_fixture_records(tmp_path, channels, size):
    root = tmp_path / "fixture"
    root.mkdir()
    _fixture(root, channels, size)
    written = F.build(tmp_path)
    names = {p.name for p in written}
    assert names == {"fig2_bars.png", "table1.md", "table1.tex", "fig3_transfer.png", "samples.png", "sources.json"}
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    md = (root / "figures" / "table1.md").read_text()
    assert "| D_rand | 61.4 | 63.3 |" in md and "| D_det | 41.2 | 43.7 |" in md and "12.5%" in md
    tex = (root / "figures" / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "61.4 & 63.3" in tex
    sources = json.loads((root / "figures" / "sources.json").read_text())
    assert sources["fig3_transfer.png"][0]["record"] == "fig3.json"
    assert sources["samples.png"][1]["sha256"] == hashlib.sha256((root / "samples.json").read_bytes()).hexdigest()


def test_tampered_samples_file_is_refused_and_missing_records_are_skipped(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    _fixture(root)
    (root / "samples.json").write_text((root / "samples.json").read_text().replace("0.1", "0.2", 1))
    with pytest.raises(ValueError, match=r"samples.json does not match the sha256 recorded in constructions.json"):
        F.build_preset(root)
    (root / "constructions.json").unlink()
    (root / "fig3.json").unlink()
    assert {p.name for p in F.build_preset(root)} == {"fig2_bars.png", "table1.md", "table1.tex", "sources.json"}
    assert F.build(tmp_path / "does-not-exist") == []


def _seed_fixture(root, seed, std_r, dr_r, *, claim_ok=True, record_seed=None):
    folder = root / f"seed{seed}"
    folder.mkdir(parents=True)
    row = lambda c, rs: {"clean": c, "robust_paper": rs + 5.0, "robust_strong": rs, "n_robust": 100}  # noqa: E731
    cfg = {"name": "fixture", "seed": seed if record_seed is None else record_seed}
    write_record(folder / "fig2.json", experiment="empirical.fig2", config=cfg,
                 metrics={"std_D": row(99.0, std_r), "adv_D": row(85.0, 60.0), "std_DR": row(98.0, dr_r),
                          "std_DNR": row(98.0, std_r - 1.0)})
    write_record(folder / "table1.json", experiment="empirical.table1", config=cfg,
                 metrics={"D": {"clean": 99.0}, "D_rand": {"clean": 90.0 + seed}, "D_det": {"clean": 30.0 + seed},
                          "chance": 10.0})
    write_record(folder / "reproduce.json", experiment="empirical.reproduce", config=cfg,
                 metrics={"total_wall_seconds": 100.0 + seed, "claims_met": {"d_r_robust_well_above_standard": claim_ok}})


def test_seed_study_summary_matches_an_independent_computation(tmp_path):
    from scipy import stats

    root = tmp_path / "digits-seeds"
    gaps = {0: (20.0, 30.0), 1: (15.0, 21.0), 2: (25.0, 24.0)}        # (std, D_R) strong robust accuracy
    for seed, (s, d) in gaps.items():
        _seed_fixture(root, seed, s, d, claim_ok=seed == 0)
    written = F.build(tmp_path)
    assert {p.name for p in written} == {"seeds.md", "seeds.json"}
    summary = json.loads((root / "seeds.json").read_text())
    g = [d - s for s, d in gaps.values()]                                # 10, 6, -1
    assert [r["gap_DR"] for r in summary["rows"]] == g
    st = summary["stats"]["gap_DR"]
    half = stats.t.ppf(0.975, 2) * stats.tstd(g) / 3 ** 0.5
    assert st["mean"] == pytest.approx(5.0) and st["sd"] == pytest.approx(stats.tstd(g))
    assert st["ci95_low"] == pytest.approx(5.0 - half) and st["ci95_high"] == pytest.approx(5.0 + half)
    assert summary["stats"]["gap_DNR"]["mean"] == pytest.approx(-1.0)
    assert summary["stats"]["D_det"]["min"] == pytest.approx(30.0)
    assert summary["claims_met_count"] == {"d_r_robust_well_above_standard": 1}
    md = (root / "seeds.md").read_text()
    # the fraction of the gap closed, (D_R - std) / (adv - std) in percent: (21 - 15) / (60 - 15)
    assert [r["frac_DR"] for r in summary["rows"]] == pytest.approx([100 * (d - s) / (60.0 - s) for s, d in gaps.values()])
    assert "| 1 | 13.3 | 15.0 | 60.0 | 21.0 | 14.0 | 6.0 | -1.0 | -2.2 | 91.0 | 31.0 |" in md   # the fraction leads
    assert "`d_r_robust_well_above_standard`: 1 / 3" in md
    assert {s["record"] for s in summary["sources"]} >= {"seed2/fig2.json", "seed0/reproduce.json"}


def test_seed_study_leads_with_the_worst_case_when_every_seed_has_it(tmp_path):
    root = tmp_path / "cifar10-cpu" / "seeds"
    for seed, (s, d) in {0: (20.0, 30.0), 1: (15.0, 21.0)}.items():
        _seed_fixture(root, seed, s, d)
        path = root / f"seed{seed}" / "fig2.json"
        rec = json.loads(path.read_text())
        m = rec["metrics"]
        for k, drop in (("std_D", 2.0), ("adv_D", 5.0), ("std_DR", 4.0), ("std_DNR", 0.5)):
            m[k]["robust_worst"] = m[k]["robust_strong"] - drop
        worst = (m["std_DR"]["robust_worst"] - m["std_D"]["robust_worst"]) / (55.0 - m["std_D"]["robust_worst"])
        m["gap_fraction"] = {"D_R": {"worst": {"value": worst, "stderr": 0.03}, "strong": {"value": 0.5, "stderr": 0.02}}}
        path.unlink()
        write_record(path, experiment="empirical.fig2", config=rec["config"], metrics=m)
    F.seeds_summary(root)
    summary = json.loads((root / "seeds.json").read_text())
    assert [r["frac_DR_worst"] for r in summary["rows"]] == pytest.approx([100 * 8 / 37, 100 * 4 / 42])
    assert [r["std_DR_worst"] for r in summary["rows"]] == [26.0, 17.0]
    md = (root / "seeds.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| seed |"))
    assert header.startswith("| seed | D_R closes, worst case (%) | std D, worst |") and "D_R closes, PGD (%)" in header
    assert "| 0 | 21.6 +- 3.0 | 18.0 | 55.0 | 26.0 | 18.5 | 50.0 +- 2.0 |" in md


def test_seed_study_refuses_a_folder_run_with_another_seed(tmp_path):
    root = tmp_path / "study"
    _seed_fixture(root, 3, 20.0, 25.0, record_seed=4)
    with pytest.raises(ValueError, match=r"seed3/fig2.json was run with seed 4, not 3"):
        F.seeds_summary(root)
    with pytest.raises(ValueError, match=r"holds no seed<K>/ folder"):
        F.seeds_summary(tmp_path / "study" / "seed3")
