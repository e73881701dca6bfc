"""Every section the code cites is a section a reader of the repository can open.

Docstrings and comments cite the project's own documents in one form,
``docs/<name>.md sec. <X>`` (also lists: ``sec. 2.2, 3.1``, ``sec. 5.3 / 5.5``, ``sec. 5.1-5.4``),
e.g. ``docs/paper-notes.md sec. 5.1`` or ``docs/conventions.md sec. 1``; a claim that is the
paper's own says so directly (``paper sec. 4``, ``paper Thm. 2``, ``paper Table 1``).

* Each such citation must name a file that exists under ``docs/`` and a Markdown heading of that
  file whose number is X (``## 5.1 ...``, ``### 5.1 ...``; headings inside fenced code blocks do
  not count).
* Older forms that point at documents outside the repository (a "spec" or "paper-spec" with a
  section number, "conventions sec.", "conventions.md section", any ``<name>.md sec.`` that is
  not ``docs/<name>.md sec.``) are reported with file:line. The word ``spec`` as an identifier
  (``spec.values``, ``spec: str``, ``parse_arch(spec)``) is not a citation: only ``spec``
  followed by ``sec``/``section``/``appendix`` or by a space and a digit is.

This file is left out of the scan: its own docstring and self-tests spell out the bad forms.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve()
SCANNED: tuple[str, ...] = (
    "foundation", "theory", "simulate", "empirical", "paper_figures", "robust_features", "tests",
    "benchmarks", "docs/experiments",
)

_FIRST = r"(?:\d+(?:\.\d+)*|[A-Z](?:\.\d+)*)(?!\w)"   # 5.1, 6, or an appendix letter: A, C.2
_NEXT = r"\d+(?:\.\d+)*(?!\w)"                        # later items are numbers
_SEP = r"\s*(?:,|/|-|\u2013|\band\b|\bto\b)\s*"
CITATION = re.compile(
    r"(?<![\w./-])docs/(?P<doc>[\w./-]+?)\.md\s+sec\.\s*"
    rf"(?P<secs>{_FIRST}(?:{_SEP}{_NEXT})*)"
)
_SECTION = re.compile(_FIRST)
# ``<path>.md sec...`` in any form; only ``docs/<name>.md sec.`` is the house form.
MD_SECTION = re.compile(r"(?<![\w./-])(?P<path>[\w./-]+)\.md\s+sec(?P<tail>tions?\b|\.|\b)",
                        re.IGNORECASE)
BARE = re.compile(
    r"paper-spec"
    r"|\bspec\s+(?:sec(?:tions?)?\b|appendix\b|\d)"
    r"|\bconventions\s+sec(?:tions?)?\b",
    re.IGNORECASE,
)
HEADING = re.compile(r"^#{1,6}\s+(\S+)")


def python_files(root: Path, folders: tuple[str, ...] = SCANNED) -> list[Path]:
    """Every ``*.py`` under the scanned folders of ``root`` (this file excepted)."""
    files: set[Path] = set()
    for folder in folders:
        base = root / folder
        if base.is_dir():
            files.update(p for p in base.rglob("*.py")
                         if "__pycache__" not in p.parts and p.resolve() != SELF)
    return sorted(files)


def headings(md: Path) -> set[str]:
    """The first word of every Markdown heading of ``md`` outside fenced code, trailing '.'/':'
    dropped: ``## 5.1 Setup`` gives ``5.1``, ``## A A numerical check`` gives ``A``."""
    found: set[str] = set()
    fenced = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            found.add(m.group(1).rstrip(".:"))
    return found


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def citations(root: Path, folders: tuple[str, ...] = SCANNED) -> list[tuple[str, int, str, list[str]]]:
    """(file relative to root, line, document name, cited sections) for every house-form citation."""
    out = []
    for path in python_files(root, folders):
        text = path.read_text(encoding="utf-8")
        for m in CITATION.finditer(text):
            secs = _SECTION.findall(m.group("secs"))
            out.append((path.relative_to(root).as_posix(), _line(text, m.start()), m.group("doc"), secs))
    return out


def unresolved_citations(root: Path, folders: tuple[str, ...] = SCANNED) -> list[str]:
    """``file:line: problem`` for each citation whose document or heading does not exist."""
    problems = []
    cache: dict[str, set[str] | None] = {}
    for rel, line, doc, secs in citations(root, folders):
        if doc not in cache:
            md = root / "docs" / f"{doc}.md"
            cache[doc] = headings(md) if md.is_file() else None
        known = cache[doc]
        if known is None:
            problems.append(f"{rel}:{line}: docs/{doc}.md does not exist")
            continue
        for sec in secs:
            if sec not in known:
                problems.append(f"{rel}:{line}: docs/{doc}.md has no heading numbered {sec}")
    return problems


def bare_citations(root: Path, folders: tuple[str, ...] = SCANNED) -> list[str]:
    """``file:line: text`` for each citation of a document outside the repository."""
    found: dict[tuple[str, int], str] = {}
    for path in python_files(root, folders):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        rel = path.relative_to(root).as_posix()
        hits = [m.start() for m in BARE.finditer(text)]
        hits += [m.start() for m in MD_SECTION.finditer(text)
                 if not (m.group("path").startswith("docs/") and m.group("tail") == ".")]
        for offset in hits:
            line = _line(text, offset)
            found[(rel, line)] = lines[line - 1].strip()[:140]
    return [f"{rel}:{line}: {snippet}" for (rel, line), snippet in sorted(found.items())]


# ---------------------------------------------------------------- the repository


def test_the_scan_finds_the_house_citations():
    docs = {doc for _, _, doc, _ in citations(ROOT)}
    assert {"paper-notes", "conventions"} <= docs


def test_every_cited_document_and_section_exists():
    problems = unresolved_citations(ROOT)
    assert not problems, (
        "citations of a missing document or section (add the heading, or cite the right one):\n"
        + "\n".join(problems))


def test_no_citation_points_outside_the_repository():
    bare = bare_citations(ROOT)
    assert not bare, (
        "citations of documents that are not in the repository; cite "
        "'docs/paper-notes.md sec. N' or 'docs/conventions.md sec. N' (or 'paper sec. N' for the "
        "paper's own claim):\n" + "\n".join(bare))


# ---------------------------------------------------------------- self-tests on a toy tree


def _tree(tmp_path: Path, code: str) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text(
        "# Notes\n\n## 2 Datasets\n\n### 2.2 Building D_R\n\n### 3.1. Targets\n\n"
        "```python\n# 9.9 inside a code block is no heading\n```\n\n## A Appendix check\n",
        encoding="utf-8")
    (tmp_path / "theory").mkdir()
    (tmp_path / "theory" / "mod.py").write_text(code, encoding="utf-8")
    return tmp_path


def test_self_test_a_citation_of_an_existing_heading_passes(tmp_path):
    root = _tree(tmp_path, '"""Built as in docs/notes.md sec. 2.2 (and docs/notes.md sec. 2.2, 3.1;\n'
                           'docs/notes.md sec. 2.2 / 3.1; docs/notes.md sec. 2-3.1; docs/notes.md\n'
                           '    sec. A; docs/notes.md sec. 2).\n"""\n')
    found = citations(root)
    assert [secs for _, _, _, secs in found] == [["2.2"], ["2.2", "3.1"], ["2.2", "3.1"],
                                                 ["2", "3.1"], ["A"], ["2"]]
    assert unresolved_citations(root) == []
    assert bare_citations(root) == []


def test_self_test_a_citation_of_a_missing_section_or_document_fails(tmp_path):
    root = _tree(tmp_path, "x = 1\n# see docs/notes.md sec. 9.9, 2.2\n# and docs/other.md sec. 1\n")
    assert unresolved_citations(root) == [
        "theory/mod.py:2: docs/notes.md has no heading numbered 9.9",
        "theory/mod.py:3: docs/other.md does not exist",
    ]


def test_self_test_bare_forms_are_reported_and_identifiers_are_not(tmp_path):
    bad = [
        "# defaults follow the paper (spec sec. 2.2)",
        "# model (spec 5.1)",
        "# see spec section 8",
        "# bounds (paper-spec 5.3)",
        "# the d = 4 model of the spec appendix A",
        "# first layer (conventions sec. 1)",
        "# rules (conventions.md section 4)",
        "# as in /work/shared/docs/paper-notes.md sec. 2.5",
        "# see docs/paper-notes.md section 2.5",
    ]
    fine = [
        "def load(spec: str): return parse_arch(spec)",
        "v = spec.values; specs = [s for spec in specs]",
        "# the XDG spec asks for it; docs/paper-notes.md sec. 2.2; paper sec. 4; paper Thm. 2",
    ]
    root = _tree(tmp_path, "\n".join(fine + bad) + "\n")
    reported = bare_citations(root)
    assert [r.split(":")[1] for r in reported] == [str(len(fine) + i + 1) for i in range(len(bad))]
    assert all(r.startswith("theory/mod.py:") for r in reported)
    assert "spec sec. 2.2" in reported[0]


def test_self_test_only_the_scanned_folders_are_read(tmp_path):
    root = _tree(tmp_path, "# docs/notes.md sec. 2.2\n")
    (root / "scratch").mkdir()
    (root / "scratch" / "x.py").write_text("# spec sec. 2.2\n", encoding="utf-8")
    assert bare_citations(root) == []
    assert bare_citations(root, folders=("scratch",)) == ["scratch/x.py:1: # spec sec. 2.2"]
