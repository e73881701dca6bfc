"""``python -m paper_figures``: rebuild every figure and table from the recorded results.

Each figure module exposes ``build(results_root: Path) -> list[Path]``: it finds its own JSON
records under ``results_root`` (default: ``paper_figures/results``), renders its figures next to
them, and returns the paths it wrote. Figure modules only read records; they never train.

Nothing on disk is trusted (docs/conventions.md sec. 9): a ``--results`` that does not exist, is a
file, is empty or holds no record a figure module reads, and a JSON file under it that is truncated
or damaged, each end in one line ``python -m paper_figures: error: ...`` on stderr naming the path,
exit status 2, before anything is drawn.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from foundation.runtime import os_error_message

FIGURE_MODULES: tuple[str, ...] = (
    "paper_figures.theory_figs",
    "paper_figures.simulate_figs",
    "paper_figures.empirical_figs",
    "paper_figures.debate",
)

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
PROG = "python -m paper_figures"
# what the figure modules read, as the error of a folder without any says
RECORDS_EXPECTED = ("theory/*.json, simulate/*.json, <preset>/fig2.json, table1.json, fig3.json or "
                    "constructions.json, seed<K>/ folders")


def check_results(results_root: Path) -> None:
    """Raise (``OSError`` / ``ValueError``, one line naming the path) unless ``results_root`` is a
    non-empty folder whose every JSON file parses."""
    root = Path(results_root)
    if not root.exists():
        raise FileNotFoundError(f"--results {root} does not exist; give the folder holding the records "
                                f"(default: {RESULTS_ROOT})")
    if not root.is_dir():
        raise NotADirectoryError(f"--results {root} is a file, not a folder of records ({RECORDS_EXPECTED})")
    if not any(root.iterdir()):
        raise ValueError(f"--results {root} is an empty folder; expected records ({RECORDS_EXPECTED})")
    for path in sorted(root.rglob("*.json")):
        if not path.is_file():
            continue
        try:
            json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"record {path} is truncated or not valid JSON ({' '.join(str(exc).split())}); "
                             "re-create it or restore it from a copy") from None


def build_all(results_root: Path = RESULTS_ROOT) -> list[Path]:
    written: list[Path] = []
    for name in FIGURE_MODULES:
        written.extend(importlib.import_module(name).build(Path(results_root)))
    return written


def _error(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT,
                        help="folder holding the JSON records (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        check_results(args.results)
        written = build_all(args.results)
    except OSError as exc:
        return _error(os_error_message(exc, out_flag="--results"))
    except ValueError as exc:
        return _error(str(exc))
    if not written:
        return _error(f"--results {args.results} holds no record a figure module reads ({RECORDS_EXPECTED}); "
                      "nothing was drawn")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
