"""paper_figures.empirical_figs renders every figure from small fixture records (no training)."""

from __future__ import annotations

import hashlib
import json

import pytest

from paper_figures import empirical_figs as F
from robust_features.records import atomic_write_json, write_record


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
