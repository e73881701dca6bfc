"""Where the imagefolder decode cache goes (--cache-dir, ROBUST_FEATURES_CACHE, the data folder,
the per-user cache for read-only data) and that it is keyed by the folder and its files, so a
different folder or a changed file never reuses a stale cache."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from empirical.data import imagefolder_cache_dirs, load_imagefolder
from foundation import records
from robust_features.cli import main
from foundation.runtime import CACHE_ENV

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _images(root: Path, seed: int = 0, size: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")


@pytest.fixture()
def user_cache(tmp_path, monkeypatch) -> Path:
    """XDG_CACHE_HOME in the test's folder, ROBUST_FEATURES_CACHE unset."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    return tmp_path / "xdg" / "robust-features"


def _caches(folder: Path) -> list[Path]:
    return sorted(folder.glob("imagefolder-*.npz")) if folder.is_dir() else []


def test_default_cache_is_in_the_data_folder_and_reused(tmp_path, user_cache):
    _images(tmp_path / "d")
    first = load_imagefolder(tmp_path / "d")
    assert _caches(tmp_path / "d" / ".robust_features_cache") == [Path(first.meta["cache_file"])]
    again = load_imagefolder(tmp_path / "d")
    assert again.meta["from_cache"] and not first.meta["from_cache"] and torch.equal(again.x_train, first.x_train)
    assert not user_cache.exists()


@pytest.mark.skipif(ROOT, reason="root ignores file permissions")
def test_a_read_only_data_folder_caches_in_the_user_cache(tmp_path, user_cache):
    data = tmp_path / "ro"
    _images(data)
    paths = [data, *data.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        d = load_imagefolder(data)
        assert Path(d.meta["cache_file"]).parent == user_cache and not d.meta["from_cache"]
        assert load_imagefolder(data).meta["from_cache"]
        assert not (data / ".robust_features_cache").exists()
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_data_folder_that_refuses_the_write_falls_back_to_the_user_cache(tmp_path, user_cache, monkeypatch, code):
    # the same path as a read-only filesystem or a permission, simulated where the tests run as root
    data = tmp_path / "d"
    _images(data)
    real = records._write_and_sync

    def refuse(fh, payload, path):
        if Path(path).is_relative_to(data):
            raise OSError(code, os.strerror(code))
        real(fh, payload, path)

    monkeypatch.setattr(records, "_write_and_sync", refuse)
    d = load_imagefolder(data)
    assert Path(d.meta["cache_file"]).parent == user_cache and len(_caches(user_cache)) == 1
    assert _caches(data / ".robust_features_cache") == []
    assert load_imagefolder(data).meta["from_cache"]


def test_the_environment_variable_and_an_explicit_cache_dir_win(tmp_path, user_cache, monkeypatch):
    _images(tmp_path / "d")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert imagefolder_cache_dirs(tmp_path / "d") == [tmp_path / "env"]
    d = load_imagefolder(tmp_path / "d")
    assert Path(d.meta["cache_file"]).parent == tmp_path / "env"
    assert not (tmp_path / "d" / ".robust_features_cache").exists() and not user_cache.exists()
    e = load_imagefolder(tmp_path / "d", cache_dir=tmp_path / "explicit")
    assert Path(e.meta["cache_file"]).parent == tmp_path / "explicit"


def test_an_explicit_cache_dir_that_cannot_be_written_is_an_error_naming_it(tmp_path, user_cache, monkeypatch):
    _images(tmp_path / "d")
    real = records._write_and_sync

    def refuse(fh, payload, path):
        if Path(path).is_relative_to(tmp_path / "c"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real(fh, payload, path)

    monkeypatch.setattr(records, "_write_and_sync", refuse)
    with pytest.raises(OSError) as info:
        load_imagefolder(tmp_path / "d", cache_dir=tmp_path / "c")
    assert info.value.errno == errno.EROFS and Path(info.value.filename).parent == tmp_path / "c"
    assert not user_cache.exists()                       # no silent fallback from a place the user chose


def test_cli_cache_dir_applies_to_one_command_only(tmp_path, user_cache, capsys):
    _images(tmp_path / "d", size=8)
    argv = ["train", "--data", f"imagefolder:{tmp_path / 'd'}", "--arch", "mlp", "--epochs", "1", "--n-eval", "4",
            "--eval-steps", "1", "--no-progress", "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    assert len(_caches(tmp_path / "c")) == 1 and not (tmp_path / "d" / ".robust_features_cache").exists()
    assert CACHE_ENV not in os.environ                   # restored after the command
    (tmp_path / "file").write_text("x")
    assert main([*argv[:-1], str(tmp_path / "file")]) == 2      # a --cache-dir that is a regular file
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"Not a directory [ENOTDIR] ({tmp_path / 'file'})" in err, err


def test_the_cache_is_keyed_by_the_folder_and_every_file(tmp_path, user_cache):
    cache = tmp_path / "c"
    _images(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two", copy_function=shutil.copy2)   # same names, sizes, mtimes
    a = load_imagefolder(tmp_path / "one", cache_dir=cache)
    b = load_imagefolder(tmp_path / "two", cache_dir=cache)
    assert not b.meta["from_cache"] and a.meta["cache_file"] != b.meta["cache_file"] and len(_caches(cache)) == 2
    # change one image's pixels, same size, and restore its mtime (as cp -p or rsync -a would)
    from PIL import Image

    f = tmp_path / "two" / "train" / "b" / "1.png"
    st = f.stat()
    Image.fromarray(np.full((4, 4, 3), 7, dtype=np.uint8)).save(f)
    while f.stat().st_size < st.st_size:                 # pad to the old size, so size cannot tell
        with open(f, "ab") as fh:
            fh.write(b"\0")
    assert f.stat().st_size == st.st_size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    c = load_imagefolder(tmp_path / "two", cache_dir=cache)
    assert not c.meta["from_cache"] and c.meta["cache_file"] != b.meta["cache_file"]
    assert torch.equal(c.x_train[4], torch.full((3, 4, 4), 7 / 255))
    assert not torch.equal(c.x_train, b.x_train) and torch.equal(b.x_train, a.x_train)
    assert len(_caches(cache)) == 2                      # the stale cache of "two" was replaced, "one" kept
    assert load_imagefolder(tmp_path / "one", cache_dir=cache).meta["from_cache"]
    # a removed file changes the key too
    (tmp_path / "one" / "test" / "a" / "1.png").unlink()
    d = load_imagefolder(tmp_path / "one", cache_dir=cache)
    assert not d.meta["from_cache"] and d.x_test.shape[0] == 3
