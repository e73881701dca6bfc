"""Reruns and concurrent writers: a run folder, dataset folder or workspace has one writer; a rerun
with other settings is refused before anything is written (resolved_config.json included); a
constructed dataset built with other settings is kept unless --overwrite; same settings resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket

import pytest

from empirical.shards import load_constructed
from robust_features.cli import main
from foundation.locks import LOCK_NAME, folder_lock
from foundation.records import read_record

HOLDER = rf"is in use by another writer \(pid {os.getpid()} on host {re.escape(socket.gethostname())}"
SMOKE = ["--preset", "digits-smoke", "--quiet"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
TRAIN = ["train", "--data", "digits", "--arch", "mlp", "--no-progress", "--n-eval", "30", "--eval-steps", "2"]


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    assert main([*TRAIN, "--epochs", "2", "--out-dir", str(out)]) == 0
    return out


def test_train_zero_or_negative_sizes_are_errors_not_defaults_and_nothing_is_written(tmp_path, capsys):
    cases = [(["--epochs", "0"], r"epochs=0 must be a positive integer"),
             (["--epochs", "-3"], r"epochs=-3 must be a positive integer"),
             (["--batch-size", "0"], r"batch_size=0 must be a positive integer"),
             (["--lr", "0"], r"lr=0\.0 must be a positive finite number"),
             (["--lr", "-0.1"], r"lr=-0\.1 must be a positive finite number"),
             (["--eval-eps", ""], r"eval_eps='' must be None or a non-empty string"),
             (["--adv", ""], r"adv='' must be None or a non-empty string"),
             (["--weight-decay", "nan"], r"argument --weight-decay: must be a finite number such as 0\.5 or 8/255"),
             (["--weight-decay=-1/2"], r"weight_decay=-0\.5 must be a finite number >= 0"),
             (["--seed", str(2**64)], r"seed=18446744073709551616 must be an integer seed in \[0, 4294967295\]"),
             (["--data-seed", "-1"], r"data_seed=-1 must be an integer seed"),
             (["--device", "gpu0"], r"--device='gpu0' is not a device; valid: auto, cpu, cuda, cuda:N"),
             (["--device", "meta"], r"--device='meta': device type 'meta' is not supported; valid: auto, cpu, cuda"),
             (["--arch", "mlp:width=0"], r"architecture option width='0' of 'mlp' must be positive"),
             (["--out-dir", ""], r"argument --out-dir: must be a non-empty path")]
    for i, (flags, pattern) in enumerate(cases):
        out = tmp_path / f"r{i}"
        assert main([*TRAIN, "--out-dir", str(out), *flags]) == 2
        assert re.search(pattern, _one_line(capsys)), (flags, pattern)
        assert not out.exists()
    toml = tmp_path / "t.toml"
    for text, message in (("epochs = 0\n", "epochs=0 must be a positive integer"),
                          ("weight_decay = nan\n", "weight_decay=nan must be a finite number >= 0"),
                          ("n_eval = 0\n", "n_eval=0 must be a positive integer")):
        toml.write_text(text)
        assert main(["train", "--config", str(toml), "--out-dir", str(tmp_path / "t")]) == 2
        assert message in _one_line(capsys)
        assert not (tmp_path / "t").exists()


def test_an_absent_option_takes_the_default(run2):
    cfg = read_record(run2 / "train.json")["config"]
    assert (cfg["batch_size"], cfg["lr"], cfg["epochs"]) == (64, 0.05, 2)


def test_train_refuses_a_second_writer_naming_the_process_holding_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    with folder_lock(out):
        assert main([*TRAIN, "--epochs", "1", "--out-dir", str(out)]) == 2
        assert re.search(re.escape(str(out)) + " " + HOLDER, _one_line(capsys))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    assert main([*TRAIN, "--epochs", "1", "--out-dir", str(out)]) == 0     # released: the next run works
    assert not (out / LOCK_NAME).exists()


def test_a_refused_train_rerun_leaves_every_file_byte_identical(run2, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run2, out)
    before = _files(out)
    assert main([*TRAIN, "--epochs", "3", "--out-dir", str(out)]) == 2
    assert re.search(r"holds a run with other settings \(epochs 2 -> 3\); use another --out-dir, or --no-resume",
                     _one_line(capsys))
    assert main([*TRAIN, "--epochs", "2", "--n-train", "200", "--out-dir", str(out)]) == 2
    assert "n_train None -> 200" in _one_line(capsys)
    assert _files(out) == before
    # without resolved_config.json the checkpoint's own fingerprint refuses, and nothing is written either
    (out / "resolved_config.json").unlink()
    before = _files(out)
    assert main([*TRAIN, "--epochs", "3", "--out-dir", str(out)]) == 2
    assert "was written by a different training config" in _one_line(capsys)
    assert _files(out) == before
    # changed evaluation options are not another run: the record is rewritten for them
    assert main([*TRAIN, "--epochs", "2", "--out-dir", str(out), "--n-eval", "20"]) == 0
    assert read_record(out / "train.json")["metrics"]["n_robust_eval"] == 20
    assert json.loads((out / "resolved_config.json").read_text())["n_eval"] == 20


# ---------------------------------------------------------------------------------------------
# the workspace: construct / fig2 / table1 / fig3 / reproduce
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws")
    assert main(["construct", "D_det", *SMOKE, "--out-dir", str(out)]) == 0
    return out


@pytest.fixture
def ws(built, tmp_path):
    shutil.copytree(built, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_a_construction_with_other_settings_is_refused_naming_the_fields_and_nothing_is_touched(ws, capsys):
    root = ws / "digits-smoke"
    before = _files(root)
    assert main(["construct", "D_det", *SMOKE, "--out-dir", str(ws), "--set", "targeted.eps=0.9",
                 "--set", "targeted.steps=2"]) == 2
    err = _one_line(capsys)
    assert re.search(re.escape(str(root / "datasets" / "D_det")) + r" holds a D_det built with other settings "
                     r"\(targeted\.eps 1\.0 -> 0\.9; targeted\.steps 3 -> 2\); it is kept: use another --out-dir, "
                     r"or --overwrite to delete and rebuild it", err), err
    assert _files(root) == before          # shards, manifest, model and resolved_config.json byte-identical
    # reproduce checks all four datasets before it writes anything
    assert main(["reproduce", *SMOKE, "--no-figures", "--out-dir", str(ws), "--set", "targeted.eps=0.9"]) == 2
    assert "holds a D_det built with other settings (targeted.eps 1.0 -> 0.9)" in _one_line(capsys)
    assert _files(root) == before


def test_a_changed_source_model_recipe_is_refused_before_the_model_is_retrained(ws, capsys):
    root = ws / "digits-smoke"
    before = _files(root)
    assert main(["construct", "D_det", *SMOKE, "--out-dir", str(ws), "--set", "std.epochs=2"]) == 2
    assert "its source model models/standard would be retrained: std.epochs 1 -> 2" in _one_line(capsys)
    assert _files(root) == before
    # the experiment commands check the datasets they use: fig3 uses D_det
    assert main(["fig3", *SMOKE, "--out-dir", str(ws), "--set", "std.epochs=2"]) == 2
    assert "models/standard would be retrained" in _one_line(capsys)
    assert _files(root) == before


def test_overwrite_rebuilds_a_dataset_built_with_other_settings(ws, capsys):
    root = ws / "digits-smoke"
    old = load_constructed(root / "datasets" / "D_det")
    # eps 0.15 binds (3 steps of 0.1 reach further), so the rebuilt images differ
    assert main(["construct", "D_det", *SMOKE, "--out-dir", str(ws), "--set", "targeted.eps=0.15",
                 "--overwrite"]) == 0
    new = load_constructed(root / "datasets" / "D_det")
    assert new.manifest["settings"]["eps"] == 0.15 and new.content_sha256 != old.content_sha256
    assert json.loads((root / "resolved_config.json").read_text())["targeted"]["eps"] == 0.15
    assert float(new.manifest["metrics"]["l2_max"]) <= 0.15 + 1e-4 < float(old.manifest["metrics"]["l2_max"])
    stages = read_record(root / "construct_D_det.json")["stages"]
    assert stages["train:standard"]["skipped"] and not stages["construct:D_det"]["skipped"]


def test_the_same_settings_skip_and_a_partly_built_dataset_resumes_to_the_same_bytes(ws, capsys):
    root = ws / "digits-smoke"
    folder = root / "datasets" / "D_det"
    complete = _files(folder)
    assert main(["construct", "D_det", *SMOKE, "--out-dir", str(ws)]) == 0
    assert read_record(root / "construct_D_det.json")["stages"]["construct:D_det"]["skipped"]
    # a crash after the first shard: later shards gone, the manifest still the incomplete one
    manifest = json.loads((folder / "manifest.json").read_text())
    keep = {k: manifest[k] for k in ("format", "name", "kind", "num_examples", "shard_size", "num_shards", "storage",
                                     "seed", "image_shape", "num_classes", "settings", "source")}
    (folder / "manifest.json").write_text(json.dumps({**keep, "complete": False}))
    for i in range(1, manifest["num_shards"]):
        (folder / f"shard-{i:05d}.bin").unlink()
        (folder / f"shard-{i:05d}.json").unlink()
    assert main(["construct", "D_det", *SMOKE, "--out-dir", str(ws)]) == 0
    rec = read_record(root / "construct_D_det.json")
    assert not rec["stages"]["construct:D_det"]["skipped"] and rec["stages"]["construct:D_det"]["shards_reused"] == 1
    after = _files(folder)
    assert {k: v for k, v in after.items() if k.endswith(".bin")} == {
        k: v for k, v in complete.items() if k.endswith(".bin")}
    assert load_constructed(folder).content_sha256 == json.loads(complete["manifest.json"])["content_sha256"]


def test_a_second_writer_of_a_workspace_or_dataset_folder_is_refused(ws, capsys):
    root = ws / "digits-smoke"
    before = _files(root)
    with folder_lock(root):
        for cmd in (["construct", "D_det"], ["fig2"], ["table1"], ["fig3"], ["reproduce", "--no-figures"]):
            assert main([*cmd, *SMOKE, "--out-dir", str(ws)]) == 2
            assert re.search(re.escape(str(root)) + " " + HOLDER, _one_line(capsys)), cmd
    assert _files(root) == before
    # the dataset folder itself is locked by whoever builds it (here: this process, by hand)
    with folder_lock(root / "datasets" / "D_rand"):
        assert main(["construct", "D_rand", *SMOKE, "--out-dir", str(ws)]) == 2
        assert re.search(re.escape(str(root / "datasets" / "D_rand")) + " " + HOLDER, _one_line(capsys))
    assert not (root / LOCK_NAME).exists()
