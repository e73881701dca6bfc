"""The ``robust-features`` console script (also ``python -m robust_features``).

Each area of the toolkit owns its subcommands in its own ``cli`` module, which exposes
``register(subparsers)``; the modules import their heavy dependencies (torch, matplotlib,
sympy) only when a subcommand runs, so ``robust-features --version`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from robust_features import __version__

# Modules that add subcommands, in the order they appear in --help.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "theory.cli",
    "simulate.cli",
    "empirical.cli",
    "empirical.cli_construct",
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


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]


def main(argv: Sequence[str] | None = None) -> int:
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
    try:
        result = func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        # Bad input: one clear line, no traceback, exit status 2.
        print(f"robust-features {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
