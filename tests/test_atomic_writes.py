"""foundation.records.atomic_write_bytes (the one write path): file modes follow the umask,
OS failures name the target and leave nothing half-written; foundation.runtime's one-line
messages and up-front output checks; main()'s one line + exit 2 for OSError."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from foundation import records
from robust_features.cli import main
from foundation.records import atomic_write_bytes, atomic_write_json, write_record
from foundation.runtime import check_output_path, os_error_message

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_open_would_give_them(tmp_path, umask, mask, expected):
    umask(mask)
    p = write_record(tmp_path / "rec.json", experiment="x", config={}, metrics={"a": 1})
    assert p["experiment"] == "x"
    assert _mode(tmp_path / "rec.json") == expected
    atomic_write_bytes(tmp_path / "deep" / "blob.bin", b"\x00\x01")
    assert _mode(tmp_path / "deep" / "blob.bin") == expected
    # rewriting keeps following the umask (a replaced file does not inherit the old mode)
    umask(0o077)
    atomic_write_bytes(tmp_path / "deep" / "blob.bin", b"\x02")
    assert _mode(tmp_path / "deep" / "blob.bin") == 0o600 and (tmp_path / "deep" / "blob.bin").read_bytes() == b"\x02"


def _fail_on(monkeypatch, name: str, code: int):
    """Make writing a file called ``name`` fail with ``code`` (as a full or read-only disk does)."""
    real = records._write_and_sync

    def fake(fh, data, path):
        if Path(path).name == name:
            raise OSError(code, os.strerror(code))
        real(fh, data, path)

    monkeypatch.setattr(records, "_write_and_sync", fake)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_a_failed_write_names_the_target_keeps_the_old_content_and_leaves_no_temp_file(tmp_path, monkeypatch, code):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"ok": 1})
    _fail_on(monkeypatch, "out.json", code)
    with pytest.raises(OSError) as info:
        atomic_write_json(target, {"ok": 2})
    assert info.value.errno == code and info.value.filename == str(target)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_a_regular_file_where_a_folder_is_needed_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        atomic_write_bytes(tmp_path / "file" / "sub" / "a.bin", b"")
    assert info.value.errno == errno.ENOTDIR and info.value.filename == str(tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="Not a directory"):
        check_output_path(tmp_path / "file" / "sub")
    with pytest.raises(NotADirectoryError):
        check_output_path(tmp_path / "file")                        # an --out-dir that is itself a file
    with pytest.raises(IsADirectoryError):
        check_output_path(tmp_path, kind="file")                    # an --out record path that is a folder
    check_output_path(tmp_path / "new" / "deeper")                  # not there yet: fine
    check_output_path(tmp_path / "new" / "r.json", kind="file")


@pytest.mark.skipif(ROOT, reason="root ignores file permissions")
def test_a_read_only_folder_is_reported_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as info:
            check_output_path(ro / "run")
        assert info.value.filename == str(ro)
        with pytest.raises(PermissionError):
            atomic_write_bytes(ro / "a.bin", b"x")
    finally:
        ro.chmod(0o755)


def test_os_error_messages_are_one_line_with_errno_path_and_advice():
    msg = os_error_message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/model.pt"))
    assert msg.startswith("No space left on device [ENOSPC] (/runs/x/model.pt): the disk is full")
    assert "\n" not in msg
    assert "read-only" in os_error_message(OSError(errno.EROFS, "Read-only file system", "/mnt/ro"))
    assert "[ENOTDIR] (/a/file)" in os_error_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file"))
    # the toolkit's own message-only errors pass through unchanged
    assert os_error_message(FileNotFoundError("config file x.toml not found")) == "config file x.toml not found"


def test_cli_reports_a_full_disk_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    _fail_on(monkeypatch, "theory_report.json", errno.ENOSPC)
    argv = ["theory", "report", "--out-dir", str(tmp_path / "t"), "--n-samples", "200", "--sweep-samples", "100",
            "--no-figures"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("robust-features theory: error: No space left on device [ENOSPC] (")
    assert str(tmp_path / "t" / "theory_report.json") in err and "free some space" in err
    assert not [p for p in (tmp_path / "t").rglob("*") if p.name.endswith(".tmp")]


def test_cli_out_dir_below_a_regular_file_fails_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv in (["theory", "report", "--out-dir", str(tmp_path / "file" / "t"), "--no-figures"],
                 ["simulate", "tsipras", "--out-dir", str(tmp_path / "file"), "--no-figures"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"Not a directory [ENOTDIR] ({tmp_path / 'file'}): a regular file stands where a folder" in err
    assert (tmp_path / "file").read_text() == "x"
