"""The package layers and the import graph, read from the source (nothing is imported).

Lower layers never import higher ones, so a newcomer can read the learning and the
runtime (`agent`) without the data, the senses or the command line:

    agent.core  <-  agent.runtime  <-  sensors, replay  <-  agent.api  <-  tools

(the learning core knows nothing of processes; the runtime hosts it behind a bus;
the Python API, `from agent import Agent`, takes files as the sensors do, so it sits
above them, and the command line above it)

and no two modules import each other, directly or around a circle, whether at the
top of a file or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "sensors", "replay", "tools")
ALLOWED = {  # package -> the packages it may import
    "agent": {"agent"},
    "sensors": {"agent", "sensors"},
    "replay": {"agent", "sensors", "replay"},
    "tools": set(PACKAGES),
}
TOP_OF_LIBRARY = {"agent.api": {"agent", "sensors", "replay"}}  # modules placed above their package's layer


def allowed(module: str) -> set[str]:
    return TOP_OF_LIBRARY.get(module, ALLOWED[module.split(".")[0]])


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it (a package import names the package)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .y import z
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me and name.split(".")[0] in PACKAGES:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) - {module_name(p).split(".")[0]} for p in files}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_reader_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The checker itself: plain, from, relative and function-level imports all count."""
    pkg = tmp_path / "agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import agent.b\nfrom . import c\n\ndef f():\n    from tools.cli import main\n")
    for name in ("b", "c"):
        (pkg / f"{name}.py").write_text("")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "cli.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    known = {"agent", "agent.a", "agent.b", "agent.c", "tools.cli"}
    assert imports_of(pkg / "a.py", known) == {"agent.b", "agent.c", "agent", "tools.cli"}
    assert find_circle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_circle({"x": {"y"}, "y": set()}) is None


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{m} imports {n}" for m, deps in import_graph().items() for n in sorted(deps)
             if n.split(".")[0] not in allowed(m)]
    assert not wrong, "a lower layer imports a higher one:\n" + "\n".join(wrong)


def test_the_learning_core_never_imports_the_runtime():
    wrong = [f"{m} imports {n}" for m, deps in import_graph().items() if m.startswith("agent.core")
             for n in sorted(deps) if not n.startswith("agent.core")]
    assert not wrong, "the learning core imports something above it:\n" + "\n".join(wrong)
    assert {m.split(".")[1] for m in import_graph() if m.count(".") >= 2 and m.startswith("agent.")} == {"core", "runtime"}


def test_no_import_circles():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)
