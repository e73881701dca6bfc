"""Result records: atomic JSON files that carry their config, seeds and provenance.

Every run in the toolkit writes exactly one record through :func:`write_record`::

    {
      "schema": "robust-features/record/v1",
      "experiment": "theory.report",
      "config": {...},            # the full resolved configuration
      "metrics": {...},           # numbers, never strings
      "seeds": {...},
      "provenance": {             # git commit + dirty flag, package versions, device, times
        "git_commit": "...", "git_dirty": false, "versions": {...}, "python": "3.11.7",
        "platform": "...", "device": "cpu", "started_at": "2026-...Z", "wall_seconds": 1.23
      },
      ...extra top-level keys...
    }

Files are written to a temporary sibling and renamed into place, so a crash never leaves a
half-written record behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import datetime as _dt
import enum
import errno
import importlib.metadata
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORD_SCHEMA = "robust-features/record/v1"

_VERSIONED_PACKAGES = (
    "robust-features",
    "numpy",
    "scipy",
    "sympy",
    "matplotlib",
    "torch",
    "scikit-learn",
    "cupy-cuda12x",
    "cupy",
    "hypothesis",
)

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _make_folder(folder: Path) -> None:
    """``mkdir -p folder``; a regular file in the way raises ``NotADirectoryError`` naming that file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from None


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new, empty temporary file ``folder/.name.XXXXXXXX.tmp`` (``O_EXCL``) with mode
    ``0o666`` before the umask: the kernel applies the process umask (and a folder's default ACL)
    exactly as for ``open(path, "w")``, where ``tempfile.mkstemp`` would make every file 0600."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))  # pragma: no cover


def _write_and_sync(fh: Any, data: bytes, path: Path) -> None:
    """Write ``data`` to the open temporary file of ``path`` and flush it to the disk (where a full
    disk or an I/O error surfaces; the tests replace this function to simulate one)."""
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename.

    The one write path of the toolkit (records, checkpoints, shards, the imagefolder cache,
    figures): a crash or a full disk never leaves a half-written ``path`` (the old content stays,
    the temporary file is removed). The file gets the mode ``open()`` would give it: ``0o666``
    minus the umask (0644 under umask 022, 0600 under 077). An ``OSError`` while creating,
    writing or renaming the file is re-raised with ``path`` as its filename (errno and message
    kept), so the error names the file that could not be written; one while creating the folder
    names the folder (or the regular file standing where a folder is needed).
    """
    path = Path(path)
    _make_folder(path.parent)
    try:
        fd, tmp = _create_temp(path.parent, path.name)
    except OSError as exc:
        raise _named(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_and_sync(fh, data, path)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise
    _fsync_dir(path.parent)
    return path


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` (same errno and message, so the same ``OSError`` subclass) with ``path`` as its filename."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, dataclasses, paths and enums to plain JSON values.

    Non-finite floats become ``None`` (JSON has no NaN); strict JSON is always produced.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if "table" in f.metadata:       # a config table (foundation.config.table): its entries in its place
                out.update({str(k): to_jsonable(v) for k, v in value.items()})
            else:
                out[f.name] = to_jsonable(value)
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    # numpy / cupy / torch without importing them
    mod = type(obj).__module__.split(".")[0]
    if mod in ("numpy", "cupy", "torch"):
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        if hasattr(obj, "get") and mod == "cupy":
            obj = obj.get()
        if hasattr(obj, "tolist"):
            return to_jsonable(obj.tolist())
        if hasattr(obj, "item"):
            return to_jsonable(obj.item())
    if hasattr(obj, "item") and callable(obj.item):
        return to_jsonable(obj.item())
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON: {obj!r}")


def bytes_sha256(data: bytes) -> str:
    """SHA-256 hex digest of ``data``: the one hash of the project (files, configs, shards)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (:func:`to_jsonable`, sorted keys, no spaces): the
    key of a stage, the identity of a config across ranks."""
    return bytes_sha256(json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _git_state_now() -> tuple[str | None, bool | None]:
    if not (_REPO_ROOT / ".git").exists():
        return None, None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None else bool(status)
    return commit, dirty


_GIT_AT_IMPORT: tuple[str | None, bool | None] | None = None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this package was imported from, or (None, None), as it was
    when this module was imported: the code a long run executes is the code it started with, so a
    commit made while it runs must not be credited with its results."""
    global _GIT_AT_IMPORT
    if _GIT_AT_IMPORT is None:
        _GIT_AT_IMPORT = _git_state_now()
    return _GIT_AT_IMPORT


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def provenance(
    *, device: str = "cpu", started_at: str | None = None, wall_seconds: float | None = None
) -> dict[str, Any]:
    """Where and how a result was produced: git commit/dirty, versions, python, device, times."""
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "argv": list(sys.argv),
        "device": device,
        "started_at": started_at,
        "wall_seconds": wall_seconds,
    }


def write_record(
    path: str | os.PathLike,
    *,
    experiment: str,
    config: Any,
    metrics: Any,
    seeds: Any = None,
    device: str = "cpu",
    started_at: str | None = None,
    start_time: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one result record atomically and return it.

    ``start_time`` is a ``time.perf_counter()`` value taken when the run began; the wall time
    is measured from it. ``metrics`` must be numeric (nested mappings/lists of numbers are fine);
    a string metric is rejected, because numbers must stay numbers.
    """
    _check_numeric(metrics, "metrics")
    wall = None if start_time is None else time.perf_counter() - start_time
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "experiment": experiment,
        "config": to_jsonable(config),
        "metrics": to_jsonable(metrics),
        "seeds": to_jsonable(seeds),
        "provenance": provenance(device=device, started_at=started_at, wall_seconds=wall),
    }
    if extra:
        for key, value in extra.items():
            if key in record:
                raise ValueError(f"extra key {key!r} would overwrite a standard record field")
            record[key] = to_jsonable(value)
    atomic_write_json(path, record)
    return record


def _check_numeric(obj: Any, where: str) -> None:
    if isinstance(obj, str):
        raise TypeError(f"{where} must hold numbers, not strings; got {obj!r}")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_numeric(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_numeric(v, f"{where}[{i}]")


def pack_bits(mask: Any) -> str:
    """A boolean vector as hex (NumPy ``packbits``, big-endian bit order, zero-padded to a byte)."""
    import numpy as np

    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes().hex()


def unpack_bits(text: str, n: int) -> Any:
    """Inverse of :func:`pack_bits`: the first ``n`` bits as a NumPy bool array."""
    import numpy as np

    raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    if raw.shape[0] * 8 < n:
        raise ValueError(f"bit string of {raw.shape[0]} bytes is too short for n={n} bits")
    return np.unpackbits(raw)[:n].astype(bool)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read a record and check its schema tag."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"record {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"record {path} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        raise ValueError(
            f"record {path} has schema {record.get('schema') if isinstance(record, dict) else None!r}; "
            f"expected {RECORD_SCHEMA!r}"
        )
    return record

git_state()      # taken at import: see git_state
