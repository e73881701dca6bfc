"""``robust-features all``: the README's main job wires every half of the toolkit together."""

from __future__ import annotations

from robust_features import read_record
from robust_features.cli import main
from robust_features.cli_all import SMOKE_STEPS, STEPS


def test_main_job_runs_theory_simulation_and_reproduction_and_records_each_step(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["all", "--smoke", "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    rec = read_record(out / "all.json")
    assert list(rec["metrics"]["steps"]) == [name for name, _ in SMOKE_STEPS]
    assert all(v["exit_status"] == 0 and v["wall_seconds"] > 0 for v in rec["metrics"]["steps"].values())
    assert rec["metrics"]["exit_status"] == 0 and rec["config"]["smoke"] is True
    # every step left its own record where the standalone command puts it
    assert read_record(out / "theory" / "theory_report.json")["experiment"].startswith("theory")
    sim = read_record(out / "simulate" / "tsipras.json")
    assert sim["metrics"]["summary"]["n_passed"] == sim["metrics"]["summary"]["n_checks"]
    assert (out / "digits-smoke" / "report.md").is_file() and (out / "digits-smoke" / "reproduce.json").is_file()
    assert "simulate tsipras:" in text


def test_full_main_job_covers_all_three_simulations_and_the_digits_preset():
    names = [n for n, _ in STEPS]
    assert names == ["theory", "simulate:theorems", "simulate:tsipras", "simulate:pipeline", "reproduce:digits"]
    argv = dict(STEPS)["reproduce:digits"]
    assert argv[:3] == ("reproduce", "--preset", "digits")


def test_skip_leaves_out_a_step_and_an_unknown_step_is_refused(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["all", "--smoke", "--skip", "simulate", "--skip", "reproduce", "--out-dir", str(out)]) == 0
    assert list(read_record(out / "all.json")["metrics"]["steps"]) == ["theory"]
    capsys.readouterr()
    assert main(["all", "--skip", "nonsense", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --skip: invalid choice: 'nonsense'" in err
