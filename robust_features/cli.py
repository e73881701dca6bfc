"""The ``robust-features`` console script (also ``python -m robust_features``).

Each area's subcommands live in a ``cli`` module that exposes ``register(subparsers)``; the
modules import their heavy dependencies (torch, matplotlib, sympy) only when a subcommand runs,
so ``robust-features --version`` stays instant. The ``theory`` and ``simulate`` commands live
here on the CLI floor (:mod:`robust_features.cli_theory`, :mod:`robust_features.cli_simulate`):
they run the science, which returns records, and render the figures from those records with
:mod:`paper_figures`, which theory/ and simulate/ never import.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from robust_features import __version__
from foundation.runtime import CACHE_ENV, check_apart, check_output_path, os_error_message

# Modules that add subcommands, in the order they appear in --help.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "robust_features.cli_theory",
    "robust_features.cli_simulate",
    "robust_features.cli_core",
    "robust_features.cli_construct",
    "robust_features.cli_all",
)


class UsageError(ValueError):
    """A command line argparse cannot parse; its message is one line (no usage block)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line gives one line naming the option, and no usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="robust-features",
        description=(
            "Toolkit for 'Adversarial Examples Are Not Bugs, They Are Features' "
            "(Ilyas et al., NeurIPS 2019): theory, simulation and the dataset constructions."
        ),
    )
    parser.add_argument("--version", action="version", version=f"robust-features {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


# Output locations checked before a command starts (dest, kind, flag): a run that could not write
# its results fails at once with one line, not after the work. A command that writes elsewhere too
# (eval's default eval.json beside the checkpoint) or reads files its outputs could replace sets
# ``io=`` on its parser: a function of the arguments returning (locations, writes, reads), see
# :func:`check_locations`.
_OUTPUT_OPTIONS: tuple[tuple[str, str, str], ...] = (("out_dir", "folder", "--out-dir"), ("out", "file", "--out"))

Locations = list[tuple[str, Any, str]]
Files = list[tuple[str, Any]]


def command_io(args: argparse.Namespace) -> tuple[Locations, Files, Files]:
    """Where the command writes and what it reads: ``locations`` (flag, path, kind ``folder`` or
    ``file``) of every output location, ``writes`` (how the command line names it, path) of every
    file it writes there, ``reads`` (what it is, path) of every file it reads. The command's own
    ``io`` when its parser sets one, else its ``--out-dir`` / ``--out`` and its ``--config`` file."""
    io_of = getattr(args, "io", None)
    if io_of is not None:
        locations, writes, reads = io_of(args)
        return list(locations), list(writes), list(reads)
    locations = [(flag, getattr(args, dest), kind) for dest, kind, flag in _OUTPUT_OPTIONS
                 if getattr(args, dest, None) is not None]
    return locations, [], [("the --config file", getattr(args, "config", None))]


def output_flag(args: argparse.Namespace) -> str:
    """The command's own output option, as the advice of an operating-system error names it."""
    return "--out" if "out" in vars(args) else "--out-dir"


def check_locations(args: argparse.Namespace) -> None:
    """Before any work: every output location writable (``OSError``), and no file the command
    writes being one it reads (``ValueError``), each naming the command's own flag."""
    locations, writes, reads = command_io(args)
    for _flag, path, kind in locations:
        check_output_path(path, kind=kind)
    flag = locations[0][0] if locations else output_flag(args)
    check_apart(writes, [(what, p) for what, p in reads if p is not None], command=args.command, flag=flag)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_message(exc: BaseException, out_flag: str = "--out-dir") -> str:
    """The one line printed for a failure the command reports as bad input or a bad environment."""
    if isinstance(exc, OSError):
        return os_error_message(exc, out_flag=out_flag)
    if isinstance(exc, pickle.UnpicklingError):
        return f"a file could not be unpickled ({_one_line(exc).split('. ')[0]}); re-create or re-download it"
    return _one_line(exc)


_nested = [0]      # commands running in this process: `all` runs its steps through main()


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Bad input (``ValueError``, a refused pickle) and operating-system
    failures (``OSError``: a full or read-only disk, a permission, a file where a folder is needed)
    end in one line ``robust-features <cmd>: error: ...`` naming the value or path and what to do,
    exit status 2, no traceback; files already written stay (every write is atomic). Ctrl-C
    (``KeyboardInterrupt``) ends in one line ``robust-features <cmd>: interrupted``, exit status 130.

    Before the command starts, its output locations are checked writable and none of the files it
    writes may be one it reads (:func:`check_locations`). Warnings of the libraries (torch's
    unpickler, ...) raised while a command runs are held back: a command that fails prints its one
    line alone, one that succeeds shows them when it ends. Warning filters are not changed (a
    filter that turns a warning into an error still does)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    func = getattr(args, "func", None)
    if func is None:
        print(f"robust-features: error: a command is required; valid: {', '.join(_commands(parser))} "
              "(see robust-features --help)", file=sys.stderr)
        return 2
    saved_cache = os.environ.get(CACHE_ENV)
    show = warnings.showwarning
    with warnings.catch_warnings(record=True) as held:     # the filters stay as they are
        _nested[0] += 1
        try:
            check_locations(args)
            cache_dir = getattr(args, "cache_dir", None)
            if cache_dir is not None:           # --cache-dir: this command's ROBUST_FEATURES_CACHE
                os.environ[CACHE_ENV] = os.fspath(cache_dir)
            result = int(func(args) or 0)
        except (ValueError, OSError, pickle.UnpicklingError) as exc:
            # Bad input or a bad environment: one clear line, no traceback, exit status 2.
            print(f"robust-features {args.command}: error: {_error_message(exc, output_flag(args))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if _nested[0] > 1:     # a step of `all`: the interruption stops `all`, which says so once
                raise
            print(f"robust-features {args.command}: interrupted", file=sys.stderr)
            return 130
        finally:
            _nested[0] -= 1
            if saved_cache is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = saved_cache
    if result == 0:          # a failed command printed its one line; a finished one shows what it was warned
        for w in held:
            show(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
