"""The prepared GPU script's dry run: every step of benchmarks/gpu_run.sh on the CPU at smoke sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_run_dry_run_passes_every_step_and_brings_back_the_records(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "work"), "DEADLINE_S": "900"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--dry-run", str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    log = (out / "gpu_run.log").read_text() if (out / "gpu_run.log").is_file() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-5000:]
    steps = json.loads((out / "steps.json").read_text())
    names = [s["step"] for s in steps["steps"]]
    for name in ("env", "data", "tests", "fastpath", "bench", "simulate", "apgd", "plan", "reproduce"):
        assert name in names, names
    assert steps["failed"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["gpu_run.log", "steps.json", "env.json", "bench_empirical.json", "bench_simulate.json", "bench_autoattack.json",
         "records.tar.gz"])
    with tarfile.open(out / "records.tar.gz") as tar:
        members = tar.getnames()
    for rec in ("reproduce.json", "fig2.json", "table1.json", "fig3.json", "plan.json", "report.md"):
        assert f"cifar10-smoke/{rec}" in members, members
    assert not any("/models/" in m or "/datasets/" in m for m in members)
    assert json.loads((out / "env.json").read_text())["cuda_available"] in (True, False)


def test_gpu_run_without_an_out_dir_prints_its_usage():
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "usage: bash benchmarks/gpu_run.sh [--dry-run] OUT_DIR" in proc.stderr
