"""The import graph respects the project's floors (lowest first):

    robust_features records/checks/estimate  ->  theory  ->  simulate  ->  empirical
        ->  paper_figures  ->  CLI (robust_features.cli*, robust_features.__main__, <pkg>.cli*)

A floor may import only lower floors. The graph is read from the source with :mod:`ast` (every
``import`` / ``from ... import`` anywhere in a file, module level or inside a function, and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name), so a lazy import
inside a function counts as much as one at the top of the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("theory", "simulate", "empirical", "paper_figures", "robust_features")

# package -> what none of its modules may import (a name or a dotted prefix; "CLI" = any CLI module)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "theory": ("simulate", "empirical", "paper_figures", "CLI"),
    "simulate": ("empirical", "paper_figures", "CLI"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_cli(module: str) -> bool:
    """The CLI floor: ``robust_features.cli``, ``robust_features.cli_*``, any ``<pkg>.cli`` /
    ``<pkg>.cli_*`` subcommand module, and ``__main__`` of the console package (or a name
    inside one of them, as ``from robust_features.cli_all import STEPS`` gives)."""
    parts = module.split(".")
    if parts[:2] == ["robust_features", "__main__"]:
        return True
    return any(p == "cli" or p.startswith("cli_") for p in parts[1:])


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path``, wherever it stands. ``from a import b``
    gives both ``a`` and ``a.b`` (b may be a module); relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found.extend((node.lineno, f"{mod}.{alias.name}") for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def _matches(module: str, forbidden: str) -> bool:
    if forbidden == "CLI":
        return is_cli(module)
    return module == forbidden or module.startswith(forbidden + ".")


def violations(root: Path, package: str, forbidden: tuple[str, ...]) -> list[str]:
    """Every import in ``root/package`` of something in ``forbidden``, as 'file:line imports x'."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for line, mod in imports_of(path, root):
            if any(_matches(mod, f) for f in forbidden):
                out.append(f"{path.relative_to(root)}:{line} imports {mod}")
    return sorted(set(out))


def test_every_package_parses_and_is_seen():
    for pkg in PACKAGES:
        files = list((ROOT / pkg).rglob("*.py"))
        assert files, f"no Python files found under {pkg}/"
        for path in files:
            imports_of(path, ROOT)  # a syntax error fails here, naming the file


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_floors(package):
    bad = violations(ROOT, package, FORBIDDEN[package])
    assert not bad, f"{package}/ imports a higher floor:\n" + "\n".join(bad)


def test_theory_and_simulate_never_call_the_painter():
    bad = [v for pkg in ("theory", "simulate") for v in violations(ROOT, pkg, ("paper_figures",))]
    assert not bad, "theory/ or simulate/ imports paper_figures:\n" + "\n".join(bad)


def test_the_cli_modules_of_theory_and_simulate_are_on_the_cli_floor():
    for name in ("theory.cli", "simulate.cli"):
        assert not (ROOT / Path(*name.split("."))).with_suffix(".py").exists(), name
    for name in ("robust_features.cli_theory", "robust_features.cli_simulate", "robust_features.cli",
                 "robust_features.cli_all", "robust_features.__main__", "empirical.cli"):
        assert is_cli(name), name
    for name in ("robust_features.records", "robust_features.checks", "robust_features.estimate",
                 "theory.report", "simulate.closed_forms", "paper_figures.theory_figs", "click"):
        assert not is_cli(name), name


def test_the_checker_catches_what_the_old_code_did(tmp_path):
    """A synthetic tree with the faults this test guards against (a lazy import of the painter
    inside a function, a theory module importing simulate, a subcommand module inside simulate/,
    a relative import, an importlib call): each is reported; allowed imports are not."""
    files = {
        "theory/__init__.py": "from theory.report import run_report\n",
        "theory/report.py": (
            "import numpy as np\nfrom robust_features.records import write_record\n"
            "from robust_features.estimate import Estimate\n\n"
            "def run_report(figures=True):\n    if figures:\n"
            "        from paper_figures.theory_figs import render\n    return {}\n"),
        "theory/cli.py": "from . import report\n",
        "theory/mc.py": "def f():\n    import simulate.estimate as e\n    return e\n",
        "theory/dyn.py": "import importlib\n\ndef g():\n    return importlib.import_module('empirical.train')\n",
        "theory/rel.py": "from ..paper_figures import simulate_figs\n",
        "simulate/__init__.py": "import theory\nfrom theory.model import GaussianModel\n",
        "simulate/cli.py": (
            "def _cmd(args):\n    from paper_figures.simulate_figs import render_record\n"
            "    from robust_features.cli_all import STEPS\n"),
        "simulate/uses_cli.py": "from robust_features import cli\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    theory_bad = violations(tmp_path, "theory", FORBIDDEN["theory"])
    simulate_bad = violations(tmp_path, "simulate", FORBIDDEN["simulate"])
    assert theory_bad == [
        "theory/dyn.py:4 imports empirical.train",
        "theory/mc.py:2 imports simulate.estimate",
        "theory/rel.py:1 imports paper_figures",
        "theory/rel.py:1 imports paper_figures.simulate_figs",
        "theory/report.py:7 imports paper_figures.theory_figs",
        "theory/report.py:7 imports paper_figures.theory_figs.render",
    ]
    assert simulate_bad == [
        "simulate/cli.py:2 imports paper_figures.simulate_figs",
        "simulate/cli.py:2 imports paper_figures.simulate_figs.render_record",
        "simulate/cli.py:3 imports robust_features.cli_all",
        "simulate/cli.py:3 imports robust_features.cli_all.STEPS",
        "simulate/uses_cli.py:1 imports robust_features.cli",
    ]


# ---------------------------------------------------------------------------------------------
# the upper floors and the whole graph
# ---------------------------------------------------------------------------------------------
GROUND = ("theory", "simulate", "empirical", "paper_figures", "CLI")   # what robust_features' non-CLI modules may not import


def _modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _non_cli_violations(root: Path, package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for name, path in _modules(root).items():
        if name.split(".")[0] != package or is_cli(name):
            continue
        for line, mod in imports_of(path, root):
            if any(_matches(mod, f) for f in forbidden):
                out.append(f"{path.relative_to(root)}:{line} imports {mod}")
    return sorted(set(out))


def test_the_ground_floor_imports_no_floor_above_it():
    bad = _non_cli_violations(ROOT, "robust_features", GROUND)
    assert not bad, "robust_features/ (records, checks, locks, ...) imports a higher floor:\n" + "\n".join(bad)


def test_empirical_never_calls_the_painter_only_its_cli_does():
    bad = _non_cli_violations(ROOT, "empirical", ("paper_figures", "CLI"))
    assert not bad, "a non-CLI module of empirical/ imports paper_figures or a CLI module:\n" + "\n".join(bad)


def test_paper_figures_reads_records_and_never_imports_the_cli():
    bad = violations(ROOT, "paper_figures", ("CLI",))
    assert not bad, "\n".join(bad)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file). ``from a.b import c`` is an
    edge to ``a.b.c`` when that is a module, else to ``a.b``; importing ``a.b`` runs the package
    ``a``'s ``__init__`` too, but that is not counted as an edge (packages import their own
    submodules, which would make every package a circle)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        found = imports_of(path, root)
        named = {(line, mod) for line, mod in found}
        for line, mod in found:
            if any(m.startswith(mod + ".") and m in mods for ln, m in named if ln == line):
                continue           # `from pkg import submodule`: the submodule is the edge, not pkg/__init__
            target = mod if mod in mods else mod.rpartition(".")[0] if mod.rpartition(".")[0] in mods else None
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_two_modules_import_each_other_anywhere():
    found = cycles(import_graph(ROOT))
    assert not found, "import circles (each a set of modules that reach each other):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_lazy_circle(tmp_path):
    files = {"empirical/__init__.py": "", "empirical/train.py": "from empirical.evaluate import accuracy\n",
             "empirical/evaluate.py": "def f():\n    from empirical.train import ThreatModel\n",
             "empirical/threat.py": "", "empirical/attacks.py": "from empirical.threat import NORMS\n",
             "theory/__init__.py": "", "simulate/__init__.py": "", "paper_figures/__init__.py": "",
             "robust_features/__init__.py": "", "robust_features/locks.py": "from empirical import distributed\n",
             "empirical/distributed.py": "from robust_features.locks import folder_lock\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert cycles(import_graph(tmp_path)) == [["empirical.distributed", "robust_features.locks"],
                                              ["empirical.evaluate", "empirical.train"]]
    assert _non_cli_violations(tmp_path, "robust_features", GROUND) == [
        "robust_features/locks.py:1 imports empirical", "robust_features/locks.py:1 imports empirical.distributed"]
