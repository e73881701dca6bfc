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
from collections.abc import Sequence

from robust_features import __version__
from foundation.runtime import CACHE_ENV, check_output_path, os_error_message

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


# Output locations checked before a command starts (dest, kind): a run that could not write its
# results fails at once with one line, not after the work.
_OUTPUT_OPTIONS: tuple[tuple[str, str], ...] = (("out_dir", "folder"), ("out", "file"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_message(exc: BaseException) -> str:
    """The one line printed for a failure the command reports as bad input or a bad environment."""
    if isinstance(exc, OSError):
        return os_error_message(exc)
    if isinstance(exc, pickle.UnpicklingError):
        return f"a file could not be unpickled ({_one_line(exc).split('. ')[0]}); re-create or re-download it"
    return _one_line(exc)


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Bad input (``ValueError``, a refused pickle) and operating-system
    failures (``OSError``: a full or read-only disk, a permission, a file where a folder is needed)
    end in one line ``robust-features <cmd>: error: ...`` naming the value or path and what to do,
    exit status 2, no traceback; files already written stay (every write is atomic)."""
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
    try:
        for dest, kind in _OUTPUT_OPTIONS:
            value = getattr(args, dest, None)
            if value is not None:
                check_output_path(value, kind=kind)
        cache_dir = getattr(args, "cache_dir", None)
        if cache_dir is not None:           # --cache-dir: this command's ROBUST_FEATURES_CACHE
            os.environ[CACHE_ENV] = os.fspath(cache_dir)
        result = func(args)
    except (ValueError, OSError, pickle.UnpicklingError) as exc:
        # Bad input or a bad environment: one clear line, no traceback, exit status 2.
        print(f"robust-features {args.command}: error: {_error_message(exc)}", file=sys.stderr)
        return 2
    finally:
        if saved_cache is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = saved_cache
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
