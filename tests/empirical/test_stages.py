"""The stage store's one validity rule (empirical.stages), and the workspace that uses it for
models, datasets, evaluations and training resume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from empirical.stages import StageStore
from foundation.records import file_sha256


def test_the_rule_missing_valid_pending_and_stale_for_each_reason(tmp_path):
    store = StageStore(tmp_path)
    rec = store.model_record("m")
    assert store.check(rec, "k1").state == "missing"
    rec.parent.mkdir(parents=True)
    (rec.parent / "model.pt").write_bytes(b"weights")
    store.save(rec, "k1", {"note": 1}, complete=False)
    assert store.check(rec, "k1").state == "pending"                 # same inputs, under way: resume it
    assert store.check(rec, "k2").state == "stale"                   # other inputs: redo it, even if pending
    saved = store.save(rec, "k1", {"note": 2}, artifacts=("model.pt",), wall_seconds=1.5)
    assert saved["artifacts"] == {"model.pt": file_sha256(rec.parent / "model.pt")}
    assert saved["complete"] is True and saved["wall_seconds"] == 1.5 and "git_commit" in saved
    st = store.check(rec, "k1")
    assert st.valid and st.record["note"] == 2
    st = store.check(rec, "k2")
    assert st.state == "stale" and "key differs" in st.reason
    (rec.parent / "model.pt").write_bytes(b"tampered")
    st = store.check(rec, "k1")
    assert st.state == "stale" and "model.pt does not match its recorded sha256" in st.reason
    (rec.parent / "model.pt").unlink()
    assert store.check(rec, "k1").reason == "model.pt is missing"
    rec.write_text("{not json")
    assert store.check(rec, "k1").state == "stale"


def test_records_written_before_the_store_are_read_by_the_same_rule(tmp_path):
    store = StageStore(tmp_path)
    rec = store.model_record("old")
    rec.parent.mkdir(parents=True)
    (rec.parent / "model.pt").write_bytes(b"w")
    rec.write_text(json.dumps({"key": "k", "checkpoint": "model.pt", "sha256": file_sha256(rec.parent / "model.pt")}))
    assert store.check(rec, "k").valid
    (rec.parent / "model.pt").write_bytes(b"x")
    assert store.check(rec, "k").state == "stale"
    ev = store.eval_record("e")                                         # an eval file is its own artifact
    ev.parent.mkdir(parents=True)
    ev.write_text(json.dumps({"key": "k", "metrics": {"clean": 0.5}}))
    assert store.check(ev, "k").valid and store.check(ev, "j").state == "stale"


def test_timings_number_repeated_stages():
    store = StageStore("unused")
    store.note("eval:a", 1.0, False)
    store.note("eval:a", 2.0, True, extra=3)
    assert store.timings == {"eval:a": {"wall_seconds": 1.0, "skipped": False},
                             "eval:a#2": {"wall_seconds": 2.0, "skipped": True, "extra": 3}}


@pytest.fixture(scope="module")
def smoke_ws(tmp_path_factory):
    from empirical.experiments import run_table1
    from empirical.reproduce import get_preset
    from empirical.workspace import Workspace

    cfg = get_preset("synthetic-smoke")
    cfg = replace(cfg, eval=replace(cfg.eval, suite=()))
    root = tmp_path_factory.mktemp("stages") / "run"
    run_table1(Workspace(cfg=cfg, root=root))
    return cfg, root


def test_every_stage_of_a_run_carries_key_artifacts_commit_and_time(smoke_ws):
    _, root = smoke_ws
    for rec in [*root.glob("models/*/stage.json"), *root.glob("datasets/*/stage.json"), *root.glob("evals/*.json")]:
        r = json.loads(rec.read_text())
        assert r["schema"] == "robust-features/stage/v1" and len(r["key"]) == 64 and r["complete"] is True
        assert "git_commit" in r and "written_at" in r
    model = json.loads((root / "models" / "standard" / "stage.json").read_text())
    assert model["artifacts"]["model.pt"] == file_sha256(root / "models" / "standard" / "model.pt")
    assert model["checkpoint"] == "model.pt"
    ds = json.loads((root / "datasets" / "D_det" / "stage.json").read_text())
    assert ds["artifacts"]["manifest.json"] == file_sha256(root / "datasets" / "D_det" / "manifest.json")


def test_a_rerun_skips_every_valid_stage_and_a_tampered_checkpoint_is_retrained(smoke_ws):
    from empirical.experiments import run_table1
    from empirical.workspace import Workspace

    cfg, root = smoke_ws
    ws = Workspace(cfg=cfg, root=root)
    run_table1(ws)
    assert ws.timings and all(v["skipped"] for k, v in ws.timings.items() if k != "data")
    # the rerun keeps each stage's own figure: the seconds it took when it was built (its stage record's)
    built = json.loads((root / "models" / "std_Drand" / "stage.json").read_text())["wall_seconds"]
    assert ws.timings["train:std_Drand"]["built_seconds"] == built > 0
    ckpt = root / "models" / "std_Drand" / "model.pt"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")
    ws2 = Workspace(cfg=cfg, root=root)
    run_table1(ws2)
    assert not ws2.timings["train:std_Drand"]["skipped"] and ws2.timings["train:standard"]["skipped"]
    assert ws2.loaded_model("std_Drand") is not None and ws2.loaded_model("robust") is None


def test_an_interrupted_training_resumes_only_under_the_same_key(smoke_ws, tmp_path):
    """A pending model stage (training started, latest.pt written, then a crash) resumes from
    latest.pt; the same folder under another recipe is a stale stage: deleted and retrained."""
    import shutil

    from empirical.workspace import Workspace

    cfg, root = smoke_ws
    work = tmp_path / "run"
    shutil.copytree(root / "models", work / "models")      # the standard model's finished stage
    ws = Workspace(cfg=cfg, root=work)
    stage = ws.store.model_record("standard")
    record = json.loads(stage.read_text())
    ws.store.save(stage, record["key"], {k: record[k] for k in ("arch", "train_on", "recipe", "seed")},
                  complete=False)                          # as a crash after the last epoch's latest.pt leaves it
    (stage.parent / "model.pt").unlink()
    assert (stage.parent / "latest.pt").is_file()
    ws.source_model("standard")
    assert not ws.timings["train:standard"]["skipped"]
    history = json.loads(stage.read_text())["history"]
    assert history == record["history"]                    # every epoch came from latest.pt: nothing retrained
    assert ws.store.check(stage, record["key"]).valid
    other = replace(cfg, std=replace(cfg.std, lr=cfg.std.lr / 2))
    ws2 = Workspace(cfg=other, root=work)
    ws2.store.save(stage, record["key"], {}, complete=False)
    ws2.source_model("standard")
    assert json.loads(stage.read_text())["recipe"]["lr"] == cfg.std.lr / 2
