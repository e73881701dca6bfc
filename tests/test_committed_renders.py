"""The committed tables and figure manifests are what ``python -m paper_figures`` renders from the
committed records today.

A record re-recorded without re-rendering, or a renderer changed without re-rendering, leaves a
table that no longer says what its records say (it happened: ``cifar10-cpu/figures/sources.json``
named the sha256 of records replaced a session earlier, and ``digits-seeds/seeds.md`` kept a column
order the renderer had dropped). This builds every figure module into a copy of
``paper_figures/results`` and compares every text output - Markdown and LaTeX tables, the
``sources.json`` manifests that name each figure's records by sha256 - byte for byte with the
committed file. (PNG and PDF bytes depend on the matplotlib build, so images are not compared.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from paper_figures.__main__ import RESULTS_ROOT, build_all

TEXT_SUFFIXES = (".md", ".tex")


def _is_text_output(path: Path) -> bool:
    return path.suffix in TEXT_SUFFIXES or path.name.endswith("sources.json")


def test_every_committed_table_and_manifest_is_what_the_records_render_to(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(RESULTS_ROOT, root)
    written = [p for p in build_all(root) if _is_text_output(p)]
    # every results folder renders text: a build that silently rendered nothing would pass otherwise
    assert len(written) >= 8, written
    stale = []
    for path in written:
        committed = RESULTS_ROOT / path.relative_to(root)
        if not committed.is_file():
            stale.append(f"{committed.relative_to(RESULTS_ROOT)} (rendered, not committed)")
        elif committed.read_bytes() != path.read_bytes():
            stale.append(f"{committed.relative_to(RESULTS_ROOT)} (differs)")
    assert not stale, ("committed renders out of date with their records; run `python -m paper_figures` and "
                       "commit: " + ", ".join(stale))
