"""Advisory locks on output folders: one writer per run folder, dataset folder or workspace.

    from foundation.locks import folder_lock

    with folder_lock(out_dir):          # FolderLocked if another live process holds it
        ...                             # write checkpoints, shards, records

The lock is the file ``FOLDER/.lock``, created with ``O_CREAT | O_EXCL`` (so exactly one process
creates it) and holding the owner's pid, host, start time and command line as JSON. Where
``fcntl`` exists the owner also holds ``flock`` on it for as long as it runs, which the kernel
drops when the process dies, however it dies. The lock is released (the file removed) when the
``with`` block ends, also on an exception.

A second writer is refused with :class:`FolderLocked` (a ``ValueError``, so the console script
prints one line and exits with status 2) naming the folder and the owner's pid and host. A lock
left behind by a process that is gone is taken over instead of blocking forever: its owner ran on
this host and its pid is not alive, or its ``flock`` is free although its owner recorded holding
one (the pid was reused). A lock held from another host is never taken over automatically (its
pid cannot be checked from here); the message says which file to delete once that process is gone.

Locks are per folder and not re-entrant: a second ``folder_lock`` on the same folder in the same
process is refused too, so nest locks only on different folders. Under ``torchrun`` only rank 0
takes them (``rank0_lock``), as only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: pid checks only
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
# an unreadable lock file younger than this may still be being written by its creator
_GRACE_SECONDS = 5.0


class FolderLocked(ValueError):
    """Another live process holds the folder's lock (the message names it)."""


def _host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - os.kill would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return True
    return True


def read_lock(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner record of ``folder``'s lock ({} when unreadable), or None when it is not locked."""
    path = Path(folder) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return "a process that has not yet recorded itself"
    cmd = info.get("command") or ""
    if len(cmd) > 120:
        cmd = cmd[:117] + "..."
    return (f"pid {info.get('pid')} on host {info.get('host')}, since {info.get('started_at')}"
            + (f" ({cmd})" if cmd else ""))


class FolderLock:
    """The lock on one folder; use :func:`folder_lock` (a context manager) rather than this."""

    def __init__(self, folder: str | os.PathLike, *, purpose: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None
        self._created = False
        self.took_over: dict[str, Any] | None = None   # the stale owner replaced, if any

    # ---- acquire / release
    def acquire(self) -> FolderLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._take_over_if_stale():
                    continue
                time.sleep(0.05)
                continue
            self._fd = fd
            try:
                self._write_owner(fd)
            except BaseException:
                self.release()
                raise
            return self
        info = read_lock(self.folder) or {}
        raise FolderLocked(f"{self.folder} is in use by another writer ({_describe(info)}); wait for it to "
                           f"finish or use another folder (if that process is gone, delete {self.path})")

    def _write_owner(self, fd: int) -> None:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError:  # pragma: no cover - a filesystem without flock: pid checks only
                locked = False
        info = {"pid": os.getpid(), "host": _host(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
                "purpose": self.purpose, "flock": locked}
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)

    def _take_over_if_stale(self) -> bool:
        """True when the existing lock was stale and has been removed (the caller retries); raises
        :class:`FolderLocked` when a live owner holds it; False to retry after a short wait."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return True                  # released meanwhile
        try:
            held_by_someone = False
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # pragma: no cover
                        raise
                    held_by_someone = True
            info = read_lock(self.folder)
            if info is None:
                return True
            if held_by_someone:
                if not info.get("pid"):
                    return False         # its owner is writing its record: look again shortly
                raise self._refusal(info)
            # nobody holds the flock (or there is no flock): decide from the owner record
            if not info.get("pid"):
                age = time.time() - os.fstat(fd).st_mtime
                if age < _GRACE_SECONDS:
                    return False
            elif info.get("host") != _host():
                raise self._refusal(info)
            elif pid_alive(int(info["pid"])) and not (fcntl is not None and info.get("flock")):
                raise self._refusal(info)
            # stale: the owner died (or its pid was reused, its flock being free). Remove the file
            # only if the path still names the file inspected (another process may have replaced it).
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                return True
            if same:
                os.unlink(self.path)
                self.took_over = info
            return True
        finally:
            os.close(fd)

    def _refusal(self, info: dict[str, Any]) -> FolderLocked:
        return FolderLocked(f"{self.folder} is in use by another writer ({_describe(info)}); wait for it to "
                            f"finish or use another folder (if that process is gone, delete {self.path})")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.unlink(self.path)     # while still holding the flock, so nobody sees it free
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)
        if self._created:      # a folder made only to hold the lock (the command failed early) goes too
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, purpose: str = "") -> Iterator[FolderLock]:
    """Hold ``folder``'s lock for the ``with`` block (see the module docstring)."""
    lock = FolderLock(folder, purpose=purpose)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def rank0_lock(folder: str | os.PathLike, info: Any = None, *, purpose: str = "") -> Iterator[FolderLock | None]:
    """:func:`folder_lock` on rank 0 only (``info``: :class:`empirical.distributed.DistInfo`, None =
    one process). Under several ranks a refusal on rank 0 is raised on every rank (a collective),
    so no rank is left waiting for it."""
    distributed = info is not None and getattr(info, "is_distributed", False)
    is_main = info is None or getattr(info, "is_main", True)
    lock: FolderLock | None = None
    error: BaseException | None = None
    if is_main:
        lock = FolderLock(folder, purpose=purpose)
        try:
            lock.acquire()
        except FolderLocked as exc:
            error, lock = exc, None
    if distributed:      # the collective is the job's own (DistInfo.raise_if_any_failed): no upward import
        try:
            info.raise_if_any_failed(error, f"rank 0 could not lock {folder}: another writer holds it "
                                     "(see rank 0's error)", FolderLocked)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    elif error is not None:
        raise error
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


__all__ = ["LOCK_NAME", "FolderLock", "FolderLocked", "folder_lock", "pid_alive", "rank0_lock", "read_lock"]
