"""``python -m paper_figures``: rebuild every figure and table from the recorded results.

Each figure module exposes ``build(results_root: Path) -> list[Path]``: it finds its own JSON
records under ``results_root`` (default: ``paper_figures/results``), renders its figures next to
them, and returns the paths it wrote. Figure modules only read records; they never train.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

FIGURE_MODULES: tuple[str, ...] = (
    "paper_figures.theory_figs",
    "paper_figures.simulate_figs",
    "paper_figures.empirical_figs",
)

RESULTS_ROOT = Path(__file__).resolve().parent / "results"


def build_all(results_root: Path = RESULTS_ROOT) -> list[Path]:
    written: list[Path] = []
    for name in FIGURE_MODULES:
        written.extend(importlib.import_module(name).build(Path(results_root)))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figures", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT,
                        help="folder holding the JSON records (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in build_all(args.results):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
