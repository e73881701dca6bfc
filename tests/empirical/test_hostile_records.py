"""Trust nothing on disk: a stage record whose key matches is checked for its contents.

Each test edits one artifact of a finished digits-smoke workspace the way a careless or hostile
user would (a manifest's histogram or metrics, its settings with every hash recomputed, a shard's
labels or pixels, a cached evaluation) and checks that the next command sees it: a dataset is
refused with one line naming what no longer matches ("edited after it was written"), never taken
for a missing record and approved; an evaluation is recomputed from the model; ``--overwrite``
rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from empirical.shards import decode_shard, encode_shard, manifest_body_sha256
from empirical.stages import body_sha256
from foundation.records import read_record
from robust_features.cli import main

SMOKE = ["--preset", "digits-smoke", "--quiet"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished digits-smoke workspace: the four datasets, Figure 2 and Table 1 (no figures)."""
    out = tmp_path_factory.mktemp("ws")
    assert main(["reproduce", *SMOKE, "--no-figures", "--out-dir", str(out)]) == 0
    return out


@pytest.fixture()
def ws(built, tmp_path):
    out = tmp_path / "ws"
    shutil.copytree(built, out)
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _rewrite_manifest(folder, change, *, rehash: bool):
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    if rehash:          # a careful forger: every hash the folder holds recomputed
        m["body_sha256"] = manifest_body_sha256(m)
    path.write_text(json.dumps(m))


def _construct(ws, kind="D_det", *extra):
    return main(["construct", kind, *SMOKE, *extra, "--out-dir", str(ws)])


@pytest.mark.parametrize("field", ["label_histogram", "metrics"])
def test_an_edited_manifest_is_refused_not_approved(ws, capsys, field):
    folder = ws / "digits-smoke" / "datasets" / "D_det"
    stage_before = (folder / "stage.json").read_bytes()

    def edit(m):
        if field == "label_histogram":
            m["label_histogram"][0] += 5
        else:
            m["metrics"]["target_success_rate"] = 0.999

    for rehash in (False, True):
        _rewrite_manifest(folder, edit, rehash=rehash)
        capsys.readouterr()
        assert _construct(ws) == 2
        err = _one_line(capsys)
        assert "D_det) was edited after it was written" in err and field in err and "--overwrite" in err
        assert (folder / "stage.json").read_bytes() == stage_before              # the stage is not re-approved
    # the edited numbers reach no record: Table 1 refuses too
    assert main(["table1", *SMOKE, "--out-dir", str(ws)]) == 2
    assert "edited after it was written" in _one_line(capsys)


def test_edited_settings_are_not_taken_for_the_settings_asked_for(ws, capsys):
    """The manifest's eps 1.0 edited to 0.8 (hashes recomputed) and the command asking for 0.8: the
    stage record remembers what the shards were built with."""
    folder = ws / "digits-smoke" / "datasets" / "D_det"
    _rewrite_manifest(folder, lambda m: m["settings"].update(eps=0.8), rehash=True)
    assert _construct(ws, "D_det", "--set", "targeted.eps=0.8") == 2
    err = _one_line(capsys)
    assert "was edited after it was written" in err and "settings.eps 1.0 -> 0.8" in err


def _forge_shard(folder, change):
    """Rewrite shard 0 with ``change`` applied to its arrays, and every hash that names it."""
    data_path, side_path = folder / "shard-00000.bin", folder / "shard-00000.json"
    arrays = decode_shard(data_path.read_bytes())
    change(arrays)
    data = encode_shard(arrays)
    data_path.write_bytes(data)
    side = json.loads(side_path.read_text())
    side.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    side_path.write_text(json.dumps(side))

    def fix(m):
        m["shards"][0].update(bytes=len(data), sha256=side["sha256"])
        m["content_sha256"] = hashlib.sha256("".join(e["sha256"] for e in m["shards"]).encode()).hexdigest()

    _rewrite_manifest(folder, fix, rehash=True)


def _labels_out_of_range(a):
    a["y"][:2] = [12, -3]


def _nan_pixels(a):
    a["x"] = a["x"].copy()
    a["x"].reshape(-1)[:5] = np.nan


@pytest.mark.parametrize("change,message", [(_labels_out_of_range, "holds labels in [-3, 12]"),
                                            (_nan_pixels, "non-finite pixels")])
def test_a_forged_shard_is_refused_by_its_content(ws, capsys, change, message):
    folder = ws / "digits-smoke" / "datasets" / "D_det"
    _forge_shard(folder, change)
    # the stage record remembers the content it approved
    assert _construct(ws) == 2
    err = _one_line(capsys)
    assert "was edited after it was written" in err and "manifest content_sha256" in err
    # with the stage record gone too, the shards' content gives the forgery away
    (folder / "stage.json").unlink()
    assert _construct(ws) == 2
    err = _one_line(capsys)
    assert message in err and "was edited after it was written" in err
    assert main(["table1", *SMOKE, "--out-dir", str(ws)]) == 2         # never an IndexError traceback
    assert message in _one_line(capsys)


def test_overwrite_rebuilds_an_edited_dataset_to_the_same_bytes(ws, built):
    folder = ws / "digits-smoke" / "datasets" / "D_det"
    _rewrite_manifest(folder, lambda m: m["metrics"].update(l2_mean=0.0), rehash=False)
    assert _construct(ws, "D_det", "--overwrite") == 0
    fresh = json.loads((folder / "manifest.json").read_text())
    orig = json.loads((built / "digits-smoke" / "datasets" / "D_det" / "manifest.json").read_text())
    assert fresh["content_sha256"] == orig["content_sha256"] and fresh["metrics"] == orig["metrics"]


def test_an_edited_stage_record_is_stale_as_edited_never_missing(ws, capsys):
    folder = ws / "digits-smoke" / "datasets" / "D_det"
    stage = json.loads((folder / "stage.json").read_text())
    assert stage["body_sha256"] == body_sha256(stage)
    stage["manifest"]["metrics"]["target_success_rate"] = 0.5
    (folder / "stage.json").write_text(json.dumps(stage))
    assert _construct(ws) == 2
    assert "its stage record: stage.json was edited after it was written" in _one_line(capsys)


@pytest.mark.parametrize("record,edit", [
    ("standard.json", lambda r: r["metrics"].update(robust_strong=0.99)),
    ("standard-suite.json", lambda r: r["summary"]["robust_accuracy"].update(worst_case=0.98)),
])
def test_an_edited_evaluation_is_evaluated_again_not_reported(ws, built, record, edit):
    """An edited cached evaluation (its body hash recomputed or not) never reaches Figure 2: the
    metrics contradict the masks stored beside them, so the model is evaluated again."""
    path = ws / "digits-smoke" / "evals" / record
    for rehash in (False, True):
        rec = json.loads(path.read_text())
        edit(rec)
        if rehash:
            rec["body_sha256"] = body_sha256(rec)
        path.write_text(json.dumps(rec))
        assert main(["fig2", *SMOKE, "--out-dir", str(ws)]) == 0
        fig2 = read_record(ws / "digits-smoke" / "fig2.json")["metrics"]["std_D"]
        orig = read_record(built / "digits-smoke" / "fig2.json")["metrics"]["std_D"]
        assert fig2["robust_strong"] == orig["robust_strong"] and fig2["robust_worst"] == orig["robust_worst"]
        assert fig2["robust_worst"] <= fig2["robust_strong"] <= fig2["clean"]
        again = json.loads(path.read_text())                                    # evaluated again, rewritten
        assert again["body_sha256"] == body_sha256(again) and again != rec
