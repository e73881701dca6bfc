"""Process-level plumbing every command shares: one-line messages for operating-system errors,
the up-front check of an output location, and where caches go.

:func:`os_error_message` turns an ``OSError`` (a full or read-only disk, a permission, a regular
file where a folder is needed) into ``<what> [<ERRNO>] (<path>): <what to do>``; the console
script prints it as ``robust-features <cmd>: error: ...`` with exit status 2
(:func:`robust_features.cli.main`). :func:`check_output_path` runs the same checks before a
command starts working, so a run that cannot write its results fails at once, not after hours;
the advice names the command's own output flag (``--out-dir``, or ``eval``'s ``--out``).
:func:`check_apart` refuses, before any work, an output that would replace a file the command
reads (docs/conventions.md sec. 9: an output path never equals an input).

Caches (the decoded ``imagefolder`` arrays) go to ``$ROBUST_FEATURES_CACHE`` (``--cache-dir``
sets it for one command), else into the data folder, else -- when the data folder is not
writable -- to :func:`user_cache_dir`: ``$XDG_CACHE_HOME/robust-features`` or
``~/.cache/robust-features``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

CACHE_ENV = "ROBUST_FEATURES_CACHE"
CACHE_DIR_HELP = ("folder for the decoded imagefolder cache (default: $ROBUST_FEATURES_CACHE, else "
                  "DATA/.robust_features_cache, else ~/.cache/robust-features when DATA is not writable)")

_AGAIN = "files already written are complete (atomic writes); re-run the same command to continue"
# {out} is the command's output flag (--out-dir, or eval's --out)
_ADVICE: dict[str, str] = {
    "ENOSPC": f"the disk is full; free some space or choose another {{out}}; {_AGAIN}",
    "EDQUOT": f"the disk quota is exhausted; free some space or choose another {{out}}; {_AGAIN}",
    "EROFS": "the filesystem is read-only; choose a writable {out} (and --cache-dir for data caches)",
    "EACCES": "permission denied; choose a folder you can write ({out}, --cache-dir) or fix its permissions",
    "EPERM": "operation not permitted; choose a folder you own ({out}, --cache-dir) or fix its permissions",
    "ENOTDIR": "a regular file stands where a folder is needed; move it away or choose another path",
    "EISDIR": "this is a folder where a file is needed; choose a file path",
    "ENOENT": "no such file or folder; check the path",
    "EEXIST": "a file of this name is in the way; move it away or choose another path",
    "ENAMETOOLONG": "the path is too long; choose a shorter one",
    "ELOOP": "too many symbolic links in the path; check the path",
    "EIO": "the disk reported an input/output error; check it, then re-run the same command to continue",
    "EMFILE": "too many open files; raise the limit (ulimit -n) and re-run",
    "ENFILE": "the system's open-file table is full; close other programs and re-run",
}


def errno_name(code: int | None) -> str:
    """``errno.ENOSPC`` -> ``"ENOSPC"`` (``"errno N"`` for an unknown code)."""
    return errno.errorcode.get(code, f"errno {code}") if code is not None else "no errno"


def os_error_message(exc: OSError, *, out_flag: str = "--out-dir") -> str:
    """One line for an ``OSError``: ``<message> [<ERRNO>] (<path>[ -> <path2>]): <what to do>``.

    The advice names ``out_flag``, the command's own output option (``--out-dir``; ``eval``'s
    ``--out``). An ``OSError`` raised with a message only (no errno, as the toolkit's own
    ``FileNotFoundError("... expected layout ...")`` checks do) is returned as its message.
    """
    if exc.errno is None:
        return " ".join(str(exc).split())
    name = errno_name(exc.errno)
    what = exc.strerror or os.strerror(exc.errno)
    where = ""
    if exc.filename is not None:
        where = f" ({os.fsdecode(exc.filename)}"
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
        where += ")"
    advice = _ADVICE.get(name, f"check the path and the disk; {_AGAIN}").replace("{out}", out_flag)
    return " ".join(f"{what} [{name}]{where}: {advice}".split())


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(".")  # pragma: no cover - a relative path's parents end at "."


def _check_writable_folder(folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = False
        try:
            read_only = bool(os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1))
        except (OSError, AttributeError):  # pragma: no cover - platforms without statvfs
            pass
        code = errno.EROFS if read_only else errno.EACCES
        raise OSError(code, os.strerror(code), str(folder))


def check_output_path(path: str | os.PathLike, *, kind: str = "folder") -> None:
    """Raise the ``OSError`` a write below ``path`` would meet, before any work is done.

    ``kind="folder"`` (an ``--out-dir``): ``path`` must be a folder or not exist yet, and its
    nearest existing ancestor must be a writable folder. ``kind="file"`` (an ``--out`` record
    path): ``path`` must not be a folder, and the same holds for its parent. Raises
    ``NotADirectoryError`` (ENOTDIR) naming the regular file in the way, ``IsADirectoryError``
    (EISDIR), or ``OSError`` EROFS / EACCES naming the folder that is not writable. This is a
    fail-fast check; the writes themselves stay the authority (and report the same errors).
    """
    path = Path(path)
    if kind == "file":
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path = path.parent
    elif kind != "folder":
        raise ValueError(f"kind={kind!r} is not valid; valid: folder, file")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    _check_writable_folder(existing)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` name one file: the same path once symbolic links, ``..`` and
    the current folder are resolved, or (both existing) the same inode, hard links included."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_apart(writes: Iterable[tuple[str, str | os.PathLike]], reads: Iterable[tuple[str, str | os.PathLike]], *,
                command: str, flag: str) -> None:
    """Raise ``ValueError`` when a file the command would write is one it reads, before any work.

    ``writes``: (how the command line names it, path), e.g. ``("--out run/model.pt", ...)`` or
    ``("attack.json in --out-dir run", ...)``; ``reads``: (what it is, path), e.g.
    ``("the checkpoint", ...)``. The message names both and ``flag``, the option to change.
    """
    reads = [(what, Path(p)) for what, p in reads if p is not None]
    for said, w in writes:
        for what, r in reads:
            if same_file(w, r):
                said_already = os.fspath(r) == os.fspath(w) and os.fspath(r) in said
                where = "" if said_already else f" {r}"
                raise ValueError(f"{said} would replace {what}{where}, which `{command}` reads; an output never "
                                 f"replaces an input: choose another {flag}")


def user_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/robust-features`` (when set to an absolute
    path, as the XDG spec asks) or ``~/.cache/robust-features``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "robust-features"


__all__ = ["CACHE_DIR_HELP", "CACHE_ENV", "check_apart", "check_output_path", "errno_name", "os_error_message",
           "same_file", "user_cache_dir"]
