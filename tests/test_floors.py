"""The import graph respects the project's floors, read per top-level folder (lowest first):

    foundation  ->  theory  ->  simulate  ->  empirical  ->  paper_figures  ->  robust_features

``foundation`` is the ground (records, checks, the config grammar, locks); ``robust_features`` is
the command line, every command module in one place. A folder may import only itself and the
folders below it: drawn per top-level folder the graph has no arrow running back up and so no
circle, and inside a folder no two modules import each other. The places are folders, not file
names: a module belongs to the floor of the folder it sits in.

The graph is read from the source with :mod:`ast` (every ``import`` / ``from ... import``
anywhere in a file, module level or inside a function, and ``importlib.import_module("...")`` /
``__import__("...")`` with a literal name), so a lazy import inside a function counts as much as
one at the top of the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS: tuple[str, ...] = ("foundation", "theory", "simulate", "empirical", "paper_figures", "robust_features")
RANK = {folder: i for i, folder in enumerate(FLOORS)}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


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


def floor_of(module: str) -> str | None:
    """The top-level folder (floor) a module name belongs to, or None outside the project."""
    top = module.split(".")[0]
    return top if top in RANK else None


def _files(root: Path) -> list[Path]:
    return [p for folder in FLOORS if (root / folder).is_dir() for p in sorted((root / folder).rglob("*.py"))]


def upward_imports(root: Path) -> list[str]:
    """Every import of a higher floor, as 'file:line imports x' (the arrows running back up)."""
    out = []
    for path in _files(root):
        here = floor_of(module_name(path, root))
        for line, mod in imports_of(path, root):
            there = floor_of(mod)
            if there is not None and RANK[there] > RANK[here]:
                out.append(f"{path.relative_to(root)}:{line} imports {mod}")
    return sorted(set(out))


def folder_graph(root: Path) -> dict[str, set[str]]:
    """floor -> the other floors its modules import."""
    graph: dict[str, set[str]] = {f: set() for f in FLOORS if (root / f).is_dir()}
    for path in _files(root):
        here = floor_of(module_name(path, root))
        for _, mod in imports_of(path, root):
            there = floor_of(mod)
            if there is not None and there != here:
                graph[here].add(there)
    return graph


def test_every_floor_parses_and_is_seen():
    for folder in FLOORS:
        files = list((ROOT / folder).rglob("*.py"))
        assert files, f"no Python files found under {folder}/"
        for path in files:
            imports_of(path, ROOT)  # a syntax error fails here, naming the file


def test_no_floor_imports_a_floor_above_it():
    bad = upward_imports(ROOT)
    assert not bad, "imports of a higher floor:\n" + "\n".join(bad)


def test_the_folder_graph_has_no_circle_and_every_arrow_points_down():
    graph = folder_graph(ROOT)
    up = [f"{a} -> {b}" for a, targets in graph.items() for b in sorted(targets) if RANK[b] > RANK[a]]
    assert up == [], "arrows running back up: " + ", ".join(up)
    assert cycles(graph) == []
    # the command line sits above everything, and the ground below everything
    assert not graph["foundation"]
    assert all("robust_features" not in targets for targets in graph.values())


def test_every_command_module_lives_on_the_command_floor():
    """The console script's subcommand modules and the option classes are in robust_features/;
    no science folder registers a subcommand (``def register(subparsers)``)."""
    from robust_features.cli import SUBCOMMAND_MODULES

    assert all(floor_of(m) == "robust_features" for m in SUBCOMMAND_MODULES)
    found = []
    for path in _files(ROOT):
        if floor_of(module_name(path, ROOT)) == "robust_features":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef) and n.name == "register"
                  and [a.arg for a in n.args.args] == ["subparsers"]]
    assert found == []


def test_the_checker_finds_what_the_old_layout_did(tmp_path):
    """A tree laid out as before this check (the ground and the command line in one folder, command
    modules inside empirical/, lazy imports of higher floors): every arrow up is found, per file and
    per folder; allowed imports are not."""
    files = {
        "foundation/__init__.py": "",
        "foundation/records.py": "import json\n",
        "foundation/locks.py": "def f():\n    from empirical import distributed\n",
        "theory/__init__.py": "from foundation.records import write_record\n",
        "theory/mc.py": "def f():\n    import simulate.estimate as e\n    return e\n",
        "theory/dyn.py": "import importlib\n\ndef g():\n    return importlib.import_module('empirical.train')\n",
        "simulate/__init__.py": "import theory\nfrom foundation import records\n",
        "empirical/__init__.py": "",
        "empirical/distributed.py": "from foundation.locks import f\n",
        "empirical/cli.py": "def _cmd(a):\n    from paper_figures.empirical_figs import build\n",
        "empirical/reproduce.py": "from ..paper_figures import empirical_figs\n",
        "paper_figures/__init__.py": "",
        "paper_figures/empirical_figs.py": "from empirical.stats import gap\nfrom robust_features.cli import main\n",
        "robust_features/__init__.py": "",
        "robust_features/cli.py": "import empirical.cli\nimport theory\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert upward_imports(tmp_path) == [
        "empirical/cli.py:2 imports paper_figures.empirical_figs",
        "empirical/cli.py:2 imports paper_figures.empirical_figs.build",
        "empirical/reproduce.py:1 imports paper_figures",
        "empirical/reproduce.py:1 imports paper_figures.empirical_figs",
        "foundation/locks.py:2 imports empirical",
        "foundation/locks.py:2 imports empirical.distributed",
        "paper_figures/empirical_figs.py:2 imports robust_features.cli",
        "paper_figures/empirical_figs.py:2 imports robust_features.cli.main",
        "theory/dyn.py:4 imports empirical.train",
        "theory/mc.py:2 imports simulate.estimate",
    ]
    graph = folder_graph(tmp_path)
    assert graph["foundation"] == {"empirical"} and graph["robust_features"] == {"empirical", "theory"}
    assert cycles(graph) == [["empirical", "foundation", "paper_figures", "robust_features", "simulate",
                              "theory"]]


def _modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in _files(root)}


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
             "foundation/__init__.py": "", "foundation/locks.py": "from empirical import distributed\n",
             "empirical/distributed.py": "from foundation.locks import folder_lock\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert cycles(import_graph(tmp_path)) == [["empirical.distributed", "foundation.locks"],
                                              ["empirical.evaluate", "empirical.train"]]
    assert upward_imports(tmp_path) == [
        "foundation/locks.py:1 imports empirical", "foundation/locks.py:1 imports empirical.distributed"]
