"""Subcommands of `robust-features` for the dataset constructions and experiments."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the construction / experiment / reproduce subcommands to the top-level parser."""
