"""The cost plan (``reproduce --plan``): image passes per stage, CPU and H200 estimates."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from empirical.plan import H200_ANCHOR, compare_with_run, cpu_rate, forward_flops, h200_tflops, plan, stages
from empirical.reproduce import get_preset
from robust_features.cli import main


def test_passes_per_stage_follow_the_config():
    cfg = get_preset("digits")
    st = {s.stage: s for s in stages(cfg, "cpu")}
    n, nt = 1437, 360
    assert st["train:standard"].passes == cfg.std.epochs * n
    assert st["train:robust"].passes == cfg.adv.epochs * n
    assert st["train:robust/attack"].passes == cfg.adv.epochs * n * cfg.adv.adv_steps
    assert st["construct:D_R"].passes == n * cfg.rep.steps
    assert st["construct:D_det"].passes == n * cfg.targeted.steps * cfg.targeted.restarts
    ev = cfg.eval
    assert st["eval:std_DR"].passes == nt * (ev.paper_steps + ev.strong_restarts * ev.strong_steps)
    assert st["eval:std_Ddet"].passes == nt * ev.paper_steps            # Table 1 rows: the paper's PGD only
    # every Figure 3 target is trained on D; all but the source architecture on D_det as well
    assert "train:fig3_std_cnn_small" in st and "train:fig3_ddet_cnn_small" not in st
    assert st["train:fig3_ddet_mlp"].passes == cfg.on_ddet.epochs * n
    assert st["transfer"].passes == min(cfg.transfer.n_examples, nt) * cfg.transfer.steps
    # subsets cap the sizes
    small = replace(cfg, n_train=100, n_test=50)
    s2 = {s.stage: s for s in stages(small, "cpu")}
    assert s2["train:standard"].passes == cfg.std.epochs * 100


def test_precision_resolves_per_device_and_the_h200_rate_follows_it():
    cfg = get_preset("cifar10-cpu")
    cpu = {s.stage: s.precision for s in stages(cfg, "cpu")}
    gpu = {s.stage: s.precision for s in stages(cfg, "cuda")}
    assert cpu["train:standard"] == gpu["train:standard"] == "bf16"     # recipe precision bf16
    assert cpu["eval:standard"] == gpu["eval:standard"] == "bf16"        # eval.precision bf16 (the attacks' steps)
    c10 = get_preset("cifar10")
    assert {s.precision for s in stages(c10, "cuda") if s.stage.startswith("eval:")} == {"fp32"}   # eval.precision fp32
    d = get_preset("digits")
    assert {s.precision for s in stages(d, "cpu")} == {"fp32"}          # auto on a CPU
    assert stages(d, "cuda")[0].precision == "bf16"                     # auto on CUDA
    assert h200_tflops("fp32") == pytest.approx(0.5 * h200_tflops("bf16"))
    assert h200_tflops("bf16") == pytest.approx(0.36e15 / 3.83 * 2.0 / 1e12)


def test_estimates_are_passes_times_flops_over_the_rates():
    cfg = get_preset("digits")
    p = plan(cfg)
    row = next(r for r in p["stages"] if r["stage"] == "train:standard")
    f = forward_flops("cnn_small", image_size=8, in_channels=1)
    assert row["forward_flops_per_image"] == pytest.approx(f)
    assert row["model_flops"] == pytest.approx(row["passes"] * 3 * f)
    assert row["estimated_s_h200"] == pytest.approx(row["model_flops"] / (h200_tflops("bf16") * 1e12))
    rate, where = cpu_rate("cnn_small", "train", "fp32", image_size=8, in_channels=1)
    assert row["estimated_s_cpu"] == pytest.approx(row["passes"] / rate)
    assert "scaled" in where                                           # the table is measured at 32x32
    assert p["estimated_total_s_h200"] == pytest.approx(sum(r["estimated_s_h200"] for r in p["stages"]))
    assert H200_ANCHOR["source"].startswith("airbench94")


def test_the_cifar10_preset_fits_the_gpu_budget_with_four_figure3_targets():
    cfg = get_preset("cifar10")
    p = plan(cfg)
    assert p["estimated_total_s_h200"] <= 300
    from empirical.models import canonical_arch

    others = [a for a in cfg.fig3_archs if canonical_arch(a) != canonical_arch(cfg.arch)]
    assert len(others) >= 4


def test_cli_plan_writes_a_record_and_compares_with_a_finished_run(tmp_path, capsys):
    assert main(["reproduce", "--preset", "digits", "--plan", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train:standard" in out and "H200" in out
    rec = json.loads((tmp_path / "digits" / "plan.json").read_text())
    assert rec["metrics"]["estimated_total_s_cpu"] > 0
    assert rec["stage_info"]["train:standard"]["arch"] == "cnn_small"
    assert not (tmp_path / "digits" / "models").exists()                  # nothing was trained
    fake = {"provenance": {"device": "cpu"},
            "metrics": {"stages": {"train:standard": {"wall_seconds": 2.0, "skipped": False},
                                   "train:robust": {"wall_seconds": 1.0, "skipped": True}}}}
    rows = compare_with_run(plan(get_preset("digits")), fake)
    assert [r["stage"] for r in rows] == ["train:standard"]
    assert rows[0]["measured_s"] == 2.0 and rows[0]["ratio"] == pytest.approx(2.0 / rows[0]["planned_s"])
    # a stage a rerun skipped counts the seconds it took when it was built
    fake["metrics"]["stages"]["train:robust"]["built_seconds"] = 7.5
    rows = compare_with_run(plan(get_preset("digits")), fake)
    assert [(r["stage"], r["measured_s"]) for r in rows] == [("train:standard", 2.0), ("train:robust", 7.5)]


def test_plan_counts_an_image_folder_without_decoding_it(tmp_path):
    import numpy as np
    from PIL import Image

    for split, n in (("train", 6), ("test", 3)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / split / c / f"{i}.png")
    cfg = replace(get_preset("cifar10-cpu"), data=f"imagefolder:{tmp_path}", n_train=None, n_test=None)
    p = plan(cfg)
    assert p["sizes"] == {"n_train": 12, "n_test": 6, "channels": 3, "image_size": 16}
