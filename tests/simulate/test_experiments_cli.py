"""The theorem cross-checks, the CLI (record + figure, bad input), the figure build, theory/ agreement."""

from __future__ import annotations

import json
import numpy as np
import pytest

from robust_features.cli import main
from robust_features.records import read_record
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
        (["--n", "1"], r"sample size --n=1 must be >= 2"),
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

    from robust_features.records import write_record
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


def test_local_closed_forms_agree_with_theory_where_theory_provides_them():
    theory = pytest.importorskip("theory")
    fns = [getattr(theory, n, None) for n in ("vulnerability", "robust_covariance")]
    if any(f is None for f in fns):
        pytest.skip("theory/ does not export vulnerability and robust_covariance yet")
    _, _, mu, sig = spec_model(np)
    c = 2.0 / np.linalg.eigvalsh(sig)[0]
    assert theory.vulnerability(sig, c, convention="paper") == pytest.approx(cf.vulnerability_closed_form(sig, c), rel=1e-9)
    np.testing.assert_allclose(np.asarray(theory.robust_covariance(sig, 3.0)), cf.robust_covariance(sig, 3.0), rtol=1e-9)


def test_theorem_1_closed_form_rejects_unbounded_penalty():
    with pytest.raises(ValueError, match=r"penalty C=1 must exceed 1/sigma_min\(Sigma\)=20"):
        cf.vulnerability_closed_form(np.diag([0.05, 1.0]), 1)
