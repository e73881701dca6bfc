"""The theorem cross-checks, the CLI (record + figure, bad input), the figure build, theory/ as the
one source of the closed forms."""

from __future__ import annotations

import json
import numpy as np
import pytest

from robust_features.cli import main
from foundation.records import read_record
from simulate import closed_forms as cf
from simulate.experiments import run_theorems, spec_model


def test_theorem_cross_checks_all_pass_at_small_size():
    res = run_theorems(np, n=8000, replicates=4, train_steps=200)
    failed = {k: v for k, v in res["checks"].items() if not v["pass"]}
    assert not failed, failed
    # Theorem 3 direction: the robust worst-case cosine grows as lam falls (eps grows)
    worst = res["curves"]["thm3"]["worst_sim"]
    assert all(a > b for a, b in zip(worst, worst[1:]))
    assert worst[-1] > res["curves"]["thm3"]["standard_worst"][0]


def test_cli_writes_record_and_figure(tmp_path, capsys):
    code = main(["simulate", "tsipras", "--backend", "numpy", "--out-dir", str(tmp_path), "--seed", "1",
                 "--n", "3000"])
    out = capsys.readouterr().out
    assert code == 0, out
    rec = read_record(tmp_path / "tsipras.json")
    assert rec["experiment"] == "simulate.tsipras" and rec["seeds"] == {"seed": 1}
    assert rec["config"]["n"] == 3000 and rec["config"]["backend"] == "numpy"
    assert rec["metrics"]["summary"]["n_passed"] == rec["metrics"]["summary"]["n_checks"]
    assert rec["provenance"]["device"] == "cpu" and rec["provenance"]["wall_seconds"] > 0
    assert (tmp_path / "tsipras.png").stat().st_size > 10_000
    assert "cross-checks pass" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--backend", "jax"], r"unknown backend \(--backend / xp\) 'jax'"),
        (["--n", "1"], r"--n=1 must be an integer >= 2"),
        (["--seed", "-3"], r"seed=-3 must be a non-negative integer"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, argv, match):
    import re

    code = main(["simulate", "theorems", "--out-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and re.search(match, err), err
    assert not (tmp_path / "theorems.json").exists()


def test_figure_build_rerenders_from_records(tmp_path):
    from paper_figures.simulate_figs import build

    from foundation.records import write_record
    from simulate.experiments import run_pipeline

    folder = tmp_path / "results" / "simulate"
    small = {
        "pipeline": run_pipeline(np, n=2000, replicates=2, eps_grid=(0.3, 1.0)),
        "theorems": run_theorems(np, n=2000, replicates=2, train_steps=40),
    }
    for name, res in small.items():  # small fixture records (the figure never simulates)
        write_record(folder / f"{name}.json", experiment=f"simulate.{name}", config=res["config"],
                     metrics={"checks": res["checks"]}, extra={"curves": res["curves"]})
    written = build(tmp_path / "results")
    assert {p.name for p in written} == {"pipeline.png", "theorems.png", "figures_sources.json"}
    assert json.loads((folder / "figures_sources.json").read_text()) == {"records": ["pipeline.json", "theorems.json"]}
    assert build(tmp_path / "empty") == []


def test_the_closed_forms_have_one_source_theory():
    """simulate's closed forms are theory's (no second copy that could drift): the Theorem-2 names
    are theory's functions, and the adapters give theory's numbers. This replaces a comparison
    of local copies with theory/, which could no longer fail once the copies were gone."""
    import theory

    assert cf.robust_eigenvalues is theory.robust_eigenvalues
    assert cf.robust_covariance is theory.robust_covariance
    _, _, mu, sig = spec_model(np)
    c = 2.0 / np.linalg.eigvalsh(sig)[0]
    assert cf.vulnerability_closed_form(sig, c) == theory.vulnerability(sig, c, convention="paper")
    ga = theory.gradient_alignment(sig, mu)
    assert (cf.mean_cosine(sig, mu), cf.worst_case_cosine(sig)) == (ga.cosine, ga.worst_case)


def test_the_attack_check_compares_independent_solvers_with_theory(monkeypatch):
    """The record's theory check compares simulate's attackers with theory's exact maximisers;
    it detects a wrong attacker (here: one whose penalty is off by 1%)."""
    import simulate.experiments as ex

    _, _, _, sig = spec_model(np)
    s_min = np.linalg.eigvalsh(sig)[0]
    v = np.random.default_rng(0).normal(size=(64, 4)) @ np.linalg.cholesky(sig).T
    good = ex.attacks_vs_theory(v, sig, cs=[1.5 / s_min])
    assert set(good) == {"worst_case_perturbation", "trust_region_max"}
    assert max(good.values()) <= 1e-8
    real = ex.lagrangian_attack
    monkeypatch.setattr(ex, "lagrangian_attack", lambda v, a, c, **kw: real(v, a, 1.01 * c, **kw))
    assert ex.attacks_vs_theory(v, sig, cs=[1.5 / s_min])["worst_case_perturbation"] > 1e-4


def test_theorem_1_closed_form_rejects_unbounded_penalty():
    with pytest.raises(ValueError, match=r"penalty C=1 must exceed 1/sigma_min\(Sigma\)=20"):
        cf.vulnerability_closed_form(np.diag([0.05, 1.0]), 1)
