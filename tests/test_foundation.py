"""The shared plumbing: console script, records, atomic writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import robust_features
from robust_features import atomic_write_json, read_record, to_jsonable, write_record
from robust_features.cli import main


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"robust-features {robust_features.__version__}"


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "robust_features", "--version"],
        capture_output=True, text=True, check=True,
    )
    assert robust_features.__version__ in out.stdout


def test_no_subcommand_fails_with_one_line_naming_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a command is required; valid: theory, simulate, train" in err
    assert main(["theory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a subcommand is required: report" in err


def test_record_round_trip_keeps_numbers_as_numbers(tmp_path):
    path = tmp_path / "sub" / "rec.json"
    rec = write_record(
        path,
        experiment="unit",
        config={"eps": 0.5, "arr": np.arange(3)},
        metrics={"acc": np.float32(0.75), "curve": [np.float64(1.0), 2]},
        seeds={"seed": 3},
        start_time=0.0,
    )
    back = read_record(path)
    assert back == json.loads(json.dumps(rec))
    assert isinstance(back["metrics"]["acc"], float)
    assert back["config"]["arr"] == [0, 1, 2]
    prov = back["provenance"]
    for key in ("git_commit", "git_dirty", "versions", "device", "wall_seconds", "started_at"):
        assert key in prov
    assert "numpy" in prov["versions"]
    assert isinstance(prov["wall_seconds"], float)


def test_string_metric_is_rejected(tmp_path):
    with pytest.raises(TypeError, match=r"metrics.acc must hold numbers"):
        write_record(tmp_path / "r.json", experiment="x", config={}, metrics={"acc": "0.9"})
    assert not list(tmp_path.iterdir()), "a rejected record must not leave a file behind"


def test_nan_becomes_null_so_json_stays_strict():
    assert to_jsonable({"a": math.nan, "b": [np.inf, 1.0]}) == {"a": None, "b": [None, 1.0]}


def test_atomic_write_leaves_no_temp_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_read_record_rejects_foreign_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema": "something-else"}')
    with pytest.raises(ValueError, match="expected 'robust-features/record/v1'"):
        read_record(p)


def test_records_credit_the_commit_the_process_started_with(monkeypatch):
    """A commit made while a long run executes must not be credited with its results: git_state
    is taken once, at import, and later calls return it even if the checkout has moved on."""
    from foundation import records

    first = records.git_state()
    monkeypatch.setattr(records, "_git", lambda *a: "f" * 40)     # the checkout moved on
    assert records.git_state() == first
    assert records.provenance()["git_commit"] == first[0]
