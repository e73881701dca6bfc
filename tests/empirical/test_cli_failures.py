"""Device and OS failures of the empirical commands end in one line naming the value or path and
what to do, exit status 2, and work already done stays done: a bad --device in every command,
an --out-dir below a regular file, a full disk mid-run, a truncated checkpoint (with a matching
sidecar too) and weights of another architecture."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch

from empirical.checkpoint import load_model, sidecar_path
from foundation.records import file_sha256
from empirical.devices import resolve_device
from foundation import records
from robust_features.cli import main
from foundation.records import read_record


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _all_commands(tmp_path: Path, checkpoint: Path, device: str) -> list[list[str]]:
    out = str(tmp_path / "out")
    return [["train", "--data", "digits", "--device", device, "--out-dir", out],
            ["eval", "--checkpoint", str(checkpoint), "--device", device],
            ["attack", "--checkpoint", str(checkpoint), "--device", device, "--out-dir", out],
            ["construct", "D_det", "--preset", "digits-smoke", "--device", device, "--out-dir", out],
            ["fig2", "--preset", "digits-smoke", "--device", device, "--out-dir", out],
            ["table1", "--preset", "digits-smoke", "--device", device, "--out-dir", out],
            ["fig3", "--preset", "digits-smoke", "--device", device, "--out-dir", out],
            ["reproduce", "--preset", "digits-smoke", "--device", device, "--out-dir", out]]


@pytest.mark.parametrize("device, pattern", [
    ("gpu", r"--device='gpu' is not a device; valid: auto, cpu, cuda, cuda:N; for an NVIDIA GPU use --device cuda"),
    ("tpu", r"--device='tpu' is not a device; valid: auto, cpu, cuda, cuda:N; TPUs are not supported"),
    ("cuda:x", r"--device='cuda:x' is not a device; valid: auto, cpu, cuda, cuda:N"),
    ("meta", r"--device='meta': device type 'meta' is not supported; valid: auto, cpu, cuda, cuda:N"),
])
def test_a_bad_device_is_one_line_in_every_command_before_any_work(tmp_path, checkpoint, capsys, device, pattern):
    for argv in _all_commands(tmp_path, checkpoint, device):
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert err.startswith(f"robust-features {argv[0]}: error: ") and re.search(pattern, err), (argv, err)
    assert not (tmp_path / "out").exists()                # nothing written, not even resolved_config.json


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_machine_without_it_is_one_line_in_every_command(tmp_path, checkpoint, capsys):
    for argv in _all_commands(tmp_path, checkpoint, "cuda"):
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert "--device='cuda' requested but CUDA is not available" in err and "use --device cpu" in err, err
    assert not (tmp_path / "out").exists()


def test_a_plan_checks_the_device_name_but_needs_no_cuda(tmp_path, capsys):
    argv = ["reproduce", "--preset", "digits-smoke", "--plan", "--out-dir", str(tmp_path)]
    assert main([*argv, "--device", "gpu"]) == 2
    assert "--device='gpu' is not a device" in _one_line(capsys)
    assert main([*argv, "--device", "cuda"]) == 0 and (tmp_path / "digits-smoke" / "plan.json").is_file()


def test_resolve_device_accepts_what_the_machine_has():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ValueError, match=rf"this machine has {n} CUDA device\(s\)"):
            resolve_device(f"cuda:{n}")


def test_an_out_dir_below_a_regular_file_is_one_line_before_any_work(tmp_path, checkpoint, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    below = str(blocker / "run")
    for argv in (["train", "--data", "digits", "--out-dir", below],
                 ["attack", "--checkpoint", str(checkpoint), "--out-dir", below],
                 ["construct", "D_det", "--preset", "digits-smoke", "--out-dir", below],
                 ["reproduce", "--preset", "digits-smoke", "--out-dir", str(blocker)],
                 ["eval", "--checkpoint", str(checkpoint), "--out", str(blocker / "eval.json")]):
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert f"Not a directory [ENOTDIR] ({blocker}): a regular file stands where a folder is needed" in err, err
    assert blocker.read_text() == "not a folder"


def _fail_on(monkeypatch, name: str, code: int = errno.ENOSPC) -> list[str]:
    """Writing a file called ``name`` fails with ``code`` (a full disk); returns what was written."""
    real, written = records._write_and_sync, []

    def fake(fh, data, path):
        if Path(path).name == name:
            raise OSError(code, os.strerror(code))
        real(fh, data, path)
        written.append(Path(path).name)

    monkeypatch.setattr(records, "_write_and_sync", fake)
    return written


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_at_the_last_write_of_train_keeps_the_checkpoint_and_a_rerun_finishes(tmp_path, monkeypatch,
                                                                                          capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", "digits", "--arch", "mlp", "--epochs", "2", "--n-eval", "20", "--eval-steps", "2",
            "--no-progress", "--out-dir", str(out)]
    written = _fail_on(monkeypatch, "train.json")
    assert main(argv) == 2
    err = _one_line(capsys)
    assert err.startswith(f"robust-features train: error: No space left on device [ENOSPC] ({out / 'train.json'}): "
                          "the disk is full"), err
    assert "model.pt" in written and not (out / "train.json").exists() and not _temp_files(out)
    model = load_model(out / "model.pt")                 # the finished checkpoint is intact
    sha, latest = file_sha256(out / "model.pt"), (out / "latest.pt").stat().st_mtime_ns
    monkeypatch.undo()
    assert main(argv) == 0                               # resumes: the two epochs are not trained again
    assert (out / "latest.pt").stat().st_mtime_ns == latest
    rec = read_record(out / "train.json")
    assert rec["metrics"]["epochs_completed"] == 2 and file_sha256(out / "model.pt") == sha
    assert all(torch.equal(v, load_model(out / "model.pt").state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("code, advice", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "the filesystem is read-only"),
                                          (errno.EACCES, "permission denied")])
def test_a_disk_failing_mid_construction_keeps_the_finished_shards(tmp_path, monkeypatch, capsys, code, advice):
    argv = ["construct", "D_det", "--preset", "digits-smoke", "--quiet", "--out-dir", str(tmp_path)]
    _fail_on(monkeypatch, "shard-00002.bin", code)
    assert main(argv) == 2
    err = _one_line(capsys)
    root = tmp_path / "digits-smoke" / "datasets" / "D_det"
    assert f"[{errno.errorcode[code]}] ({root / 'shard-00002.bin'}): {advice}" in err, err
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.glob("shard-0000[01].*")}
    assert sorted(done) == ["shard-00000.bin", "shard-00000.json", "shard-00001.bin", "shard-00001.json"]
    assert not (root / "shard-00002.bin").exists() and not _temp_files(tmp_path)
    monkeypatch.undo()
    assert main(argv) == 0
    assert {p: ((root / p).stat().st_ino, (root / p).stat().st_mtime_ns) for p in done} == done   # not rebuilt
    assert json.loads((root / "manifest.json").read_text())["complete"]


# ---------------------------------------------------------------------------------------------
# damaged checkpoints
# ---------------------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_checkpoint_is_one_line_whether_or_not_its_sidecar_matches(checkpoint, capsys):
    _truncate(checkpoint)
    with pytest.raises(ValueError, match=r"has sha256 .* but its sidecar records .*changed after saving"):
        load_model(checkpoint)
    assert main(["eval", "--checkpoint", str(checkpoint), "--n", "10"]) == 2
    assert f"checkpoint {checkpoint} has sha256" in _one_line(capsys)
    # a sidecar that matches the truncated bytes (rewritten after the damage) or no verification
    side = sidecar_path(checkpoint)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "sha256": file_sha256(checkpoint)}))
    pattern = rf"checkpoint {re.escape(str(checkpoint))} is truncated or damaged and cannot be read \(RuntimeError: "
    with pytest.raises(ValueError, match=pattern + r".*re-run the training that wrote it"):
        load_model(checkpoint)
    assert main(["eval", "--checkpoint", str(checkpoint), "--n", "10"]) == 2
    assert re.search(pattern, _one_line(capsys))


def test_weights_of_another_architecture_are_one_line_naming_what_differs(checkpoint, capsys):
    side = sidecar_path(checkpoint)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "arch": "cnn_small"}))
    with pytest.raises(ValueError, match=r"holds weights that do not fit the architecture 'cnn_small' of its sidecar "
                                         r"model.json \(\d+ missing \(.*\); \d+ unexpected \(.*\)\).*restore the "
                                         r"matching pair"):
        load_model(checkpoint)
    # the same architecture at another width: shapes differ, the keys do not
    side.write_text(json.dumps({**meta, "arch": "mlp:width=16"}))
    with pytest.raises(ValueError, match=r"'mlp:width=16' .*\(\d+ of another shape \(\S+ \(256, 64\) vs \(16, 64\)"):
        load_model(checkpoint)
    side.write_text(json.dumps({**meta, "arch": "cnn_small"}))
    assert main(["eval", "--checkpoint", str(checkpoint), "--n", "10"]) == 2
    assert "do not fit the architecture 'cnn_small'" in _one_line(capsys)


def test_a_sidecar_that_is_not_a_json_object_is_one_line(checkpoint):
    sidecar_path(checkpoint).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"model.json holds a JSON list, not an object; expected schema"):
        load_model(checkpoint)
