"""Every preset's smoke variant runs the whole chain on CPU and writes complete records."""

from __future__ import annotations

import json

import pytest

from empirical.reproduce import get_preset, run_reproduce
from empirical.shards import load_constructed
from robust_features.cli import main
from foundation.records import read_record


def _check_outputs(root):
    for name in ("constructions.json", "fig2.json", "table1.json", "fig3.json", "reproduce.json"):
        rec = read_record(root / name)
        assert rec["provenance"]["wall_seconds"] > 0
    rep = read_record(root / "reproduce.json")["metrics"]
    assert {"construct:D_R", "construct:D_NR", "construct:D_rand", "construct:D_det", "transfer"} <= set(rep["stages"])
    assert all(v > 0 for v in rep["images_per_second"].values())
    fig2 = read_record(root / "fig2.json")["metrics"]
    for row in ("std_D", "adv_D", "std_DR", "std_DNR"):
        assert all(0 <= fig2[row][k] <= 100 for k in ("clean", "robust_paper", "robust_strong"))
        assert fig2[row]["n_robust"] == min(read_record(root / "fig2.json")["config"]["eval"]["n_robust"], 48)
    for kind in ("D_R", "D_NR", "D_rand", "D_det"):
        ds = load_constructed(root / "datasets" / kind)
        assert ds.manifest["source"]["checkpoint_sha256"]
    assert "| Std training on D_R |" in (root / "report.md").read_text()


def test_digits_smoke_through_the_cli_then_resumes_with_every_stage_skipped(tmp_path, capsys):
    assert main(["reproduce", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--quiet"]) == 0
    root = tmp_path / "digits-smoke"
    _check_outputs(root)
    assert (root / "figures" / "fig3_transfer.png").is_file()
    assert json.loads((root / "resolved_config.json").read_text())["name"] == "digits-smoke"
    assert main(["reproduce", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--quiet",
                 "--no-figures"]) == 0
    stages = read_record(root / "reproduce.json")["metrics"]["stages"]
    assert all(v["skipped"] for k, v in stages.items() if k.startswith(("train:", "construct:", "eval:")))
    # a changed construction setting is refused, the dataset kept; --overwrite rebuilds it (source model reused)
    capsys.readouterr()
    assert main(["construct", "D_det", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--quiet",
                 "--set", "targeted.eps=0.9"]) == 2
    assert "targeted.eps 1.0 -> 0.9" in capsys.readouterr().err
    assert load_constructed(root / "datasets" / "D_det").manifest["settings"]["eps"] == 1.0
    assert main(["construct", "D_det", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--quiet",
                 "--set", "targeted.eps=0.9", "--overwrite"]) == 0
    rec = read_record(root / "construct_D_det.json")
    assert rec["config"]["targeted"]["eps"] == 0.9
    assert rec["stages"]["train:standard"]["skipped"] and not rec["stages"]["construct:D_det"]["skipped"]
    assert load_constructed(root / "datasets" / "D_det").manifest["settings"]["eps"] == 0.9


@pytest.mark.parametrize("preset", ["cifar10-smoke", pytest.param("paper-smoke", marks=pytest.mark.slow)])
def test_gpu_presets_run_in_their_smoke_size_on_cpu(tmp_path, preset):
    rec = run_reproduce(get_preset(preset), out_dir=tmp_path)
    _check_outputs(tmp_path / preset)
    assert rec["config"]["fig3_archs"] == list(get_preset(preset).fig3_archs)
