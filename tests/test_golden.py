"""Golden records: the smoke presets, rebuilt number for number in CI.

``tests/golden/<preset>/`` holds the records of ``digits-smoke``, ``synthetic-smoke`` and
``cifar10-smoke`` (on an image folder this file builds, 10 classes of 32x32 PNGs). Each test reruns
its preset in a scratch folder and compares every metric, checkpoint hash and dataset hash with the
committed records (:mod:`empirical.golden`; wall times and provenance left out), so a change that
moves a result fails here and is re-recorded on purpose:

    ROBUST_FEATURES_RERECORD_GOLDEN=1 python -m pytest tests/test_golden.py

rewrites the records (and still fails nothing). The records name the commit that made them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from empirical.golden import RECORDS, compare
from empirical.reproduce import get_preset, run_reproduce
from foundation.config import with_overrides

GOLDEN = Path(__file__).resolve().parent / "golden"
RERECORD = os.environ.get("ROBUST_FEATURES_RERECORD_GOLDEN") == "1"


def make_cifar_like_folder(root: Path, *, per_class: tuple[int, int] = (10, 5), size: int = 32) -> Path:
    """An image folder of 10 classes (train/test), 32x32 RGB PNGs: a class colour and stripe
    frequency plus seeded noise, so a small network learns it in one epoch. Deterministic."""
    from PIL import Image

    rng = np.random.default_rng(20261205)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, n in zip(("train", "test"), per_class):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], float) / 255
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (c + 1) * (xx + yy / 2))
            for i in range(n):
                img = 0.6 * colour[None, None, :] * stripes[..., None] + 0.4 * rng.random((size, size, 3))
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


CASES = {"digits-smoke": {}, "synthetic-smoke": {}, "cifar10-smoke": {"imagefolder": True}}


@pytest.mark.parametrize("preset", list(CASES))
def test_a_smoke_preset_reproduces_its_golden_records_number_for_number(preset, tmp_path, monkeypatch):
    cfg = get_preset(preset)
    if CASES[preset].get("imagefolder"):
        data = make_cifar_like_folder(tmp_path / "cifar-like")
        monkeypatch.setenv("ROBUST_FEATURES_CACHE", str(tmp_path / "cache"))
        cfg = with_overrides(cfg, {"data": f"imagefolder:{data}"})
    run_reproduce(cfg, out_dir=tmp_path / "run", render=None)
    fresh = tmp_path / "run" / cfg.name
    golden = GOLDEN / preset
    if RERECORD:
        golden.mkdir(parents=True, exist_ok=True)
        for name in RECORDS:
            if (fresh / name).is_file():
                shutil.copyfile(fresh / name, golden / name)
    result = compare(golden, fresh)
    assert result["compared"] == [n for n in RECORDS if (golden / n).is_file()]
    assert not result["differences"], (
        f"{preset} no longer reproduces its golden records ({len(result['differences'])} differences, first: "
        + "; ".join(result["differences"][:8]) + "). If the change is meant, re-record them: "
        "ROBUST_FEATURES_RERECORD_GOLDEN=1 python -m pytest tests/test_golden.py")


def test_the_comparison_sees_a_moved_number_and_ignores_wall_time(tmp_path):
    import json

    golden = GOLDEN / "digits-smoke"
    copy = tmp_path / "copy"
    shutil.copytree(golden, copy)
    fig2 = json.loads((copy / "fig2.json").read_text())
    fig2["metrics"]["std_D"]["worst_case"]["seconds"] = {"pgd": 123.0}         # a wall time: not compared
    fig2["provenance"]["wall_seconds"] = 1e9
    (copy / "fig2.json").write_text(json.dumps(fig2))
    assert compare(golden, copy)["differences"] == []
    fig2["metrics"]["std_D"]["clean"] += 1e-9                                    # a number: compared exactly
    (copy / "fig2.json").write_text(json.dumps(fig2))
    (diff,) = compare(golden, copy)["differences"]
    assert diff.startswith("fig2.json metrics.std_D.clean ")
    (copy / "table1.json").unlink()
    assert "table1.json present -> (missing)" in compare(golden, copy)["differences"]


def test_reproduce_check_writes_the_verdict_beside_the_records_it_checked(tmp_path, capsys):
    import json

    from robust_features.cli import main

    committed = tmp_path / "committed"
    shutil.copytree(GOLDEN / "synthetic-smoke", committed)
    argv = ["reproduce", "--preset", "synthetic-smoke", "--quiet", "--out-dir", str(tmp_path / "scratch"),
            "--check", str(committed)]
    assert main(argv) == 0
    check = json.loads((committed / "check.json").read_text())
    assert check["metrics"] == {"reproduced": True, "n_differences": 0}
    assert check["made_by"]["fig2.json"]["git_commit"] and "reproduced by the current code" in capsys.readouterr().out
    fig2 = json.loads((committed / "fig2.json").read_text())
    fig2["metrics"]["adv_D"]["clean"] += 1.0
    (committed / "fig2.json").write_text(json.dumps(fig2))
    assert main(argv) == 1
    check = json.loads((committed / "check.json").read_text())
    assert check["metrics"]["reproduced"] is False
    assert [d for d in check["differences"] if d.startswith("fig2.json metrics.adv_D.clean ")]
    assert main([*argv[:-1], str(tmp_path / "scratch" / "synthetic-smoke")]) == 2     # never checks into itself
