"""Subcommands of `robust-features` owned by `theory`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the top-level parser."""
