"""The theory report command, its record and the figures rendered from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robust_features.cli import main
from foundation.records import read_record
from theory.report import ReportConfig, run_report

SMALL = dict(n_samples=600, sweep_nd_samples=300, sweep_eps=(0.05, 0.5, 2.0, 5.0, 10.0, 20.0),
             lam_grid=(0.01, 0.1, 1.0, 10.0), anisotropy_kappa=(1.0, 10.0, 100.0), mc_samples=5000)


@pytest.fixture(scope="module")
def small_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    return out, run_report(out, ReportConfig(**SMALL))


def test_record_is_complete_and_numeric(small_record):
    out, record = small_record
    rec = read_record(out / "theory_report.json")
    assert rec["experiment"] == "theory.report"
    assert rec["provenance"]["wall_seconds"] > 0
    m = rec["metrics"]
    eps = [f["eps"] for f in m["fig4"]["fits"]]
    assert eps == [0.0, 1.0, 10.0]
    # Theorem 2 in the fits: the mean stays, conditioning improves, cosine grows with eps
    fits = m["sweep_2d"]["fits"]
    conds = [f["condition_number"] for f in fits]
    assert all(b <= a * 1.001 for a, b in zip(conds, conds[1:]))
    assert fits[-1]["worst_case_cosine"] > fits[0]["worst_case_cosine"]
    assert max(f["mu_error"] for f in fits) < 0.5
    ls = m["sweep_2d"]["lam_scaling"]
    assert all(np.diff(ls["lam_multiplier"]) < 0)  # lam decreases as eps grows
    v = m["vulnerability_vs_anisotropy"]
    assert v["isotropic_is_minimum"] and v["paper_mc_max_abs_z"] < 5
    np.testing.assert_allclose(v["paper_numeric"], v["paper"], rtol=1e-6)
    json.dumps(rec)  # strict JSON


def test_figures_render_from_the_record_and_build_finds_it(small_record, tmp_path):
    from paper_figures.theory_figs import FIGURE_NAMES, build

    _, record = small_record
    (tmp_path / "theory").mkdir()
    (tmp_path / "theory" / "theory_report.json").write_text(json.dumps(record))
    paths = build(tmp_path)
    names = {p.name for p in paths}
    for name in FIGURE_NAMES:
        assert f"{name}.png" in names and f"{name}.pdf" in names
    assert all(p.stat().st_size > 1000 for p in paths)
    manifest = json.loads((tmp_path / "theory" / "figures" / "figures_manifest.json").read_text())
    assert manifest["record"].endswith("theory_report.json")
    assert build(tmp_path / "empty") == []


def test_cli_report_and_bad_flags(tmp_path, capsys):
    assert main(["theory", "report", "--out-dir", str(tmp_path / "r"), "--n-samples", "5"]) == 2
    assert "--n-samples=5 must be >= 100" in capsys.readouterr().err
    assert main(["theory", "report", "--out-dir", str(tmp_path / "r"), "--processes", "3"]) == 2
    assert "--processes=3 must be 1 or 2" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_sweep_in_a_second_process_gives_the_same_record(small_record, tmp_path):
    """processes=2 (the default: the d-dimensional sweep in a spawned process) and processes=1 (all
    in this one) write the same numbers; only the timings differ."""
    out, _ = small_record
    run_report(tmp_path, ReportConfig(**SMALL), processes=1)
    two = read_record(out / "theory_report.json")["metrics"]
    one = read_record(tmp_path / "theory_report.json")["metrics"]
    assert two.pop("timings")["processes"] == 2 and one.pop("timings")["processes"] == 1
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    for bad in (0, 3, True, 2.0):
        with pytest.raises(ValueError, match=rf"processes={bad!r} must be 1 or 2"):
            run_report(tmp_path / "no", ReportConfig(**SMALL), processes=bad)
    assert not (tmp_path / "no").exists()


def test_report_config_validates():
    with pytest.raises(ValueError, match=r"every eps in the report config must be >= 0"):
        ReportConfig(sweep_eps=(-1.0,))


def test_cli_report_end_to_end_small(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["theory", "report", "--out-dir", str(out), "--n-samples", "400",
                 "--sweep-samples", "200", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "eps<->lam (2-D)" in text and "theory_report.json" in text
    rec = read_record(out / "theory_report.json")
    assert rec["config"]["n_samples"] == 400 and rec["seeds"]["seed"] == 0


def test_lam_follows_the_measured_asymptotes(small_record):
    # small eps: lam ~ E||Sigma*^-1 v|| / eps ; large eps: lam ~ d / eps^2 (docs/theory.md)
    _, record = small_record
    ls = record["metrics"]["sweep_2d"]["lam_scaling"]
    lam, small, large = (np.array(ls[k]) for k in ("lam_multiplier", "small_eps_asymptote",
                                                    "large_eps_asymptote"))
    assert abs(lam[0] / small[0] - 1) < 0.1
    assert 0.6 < lam[-1] / large[-1] < 1.0
