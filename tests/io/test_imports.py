"""abdus.io imports one way: no import loops, and every abdus import at module level.

An import inside a function or a TYPE_CHECKING block is how a loop hides; both are reported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import abdus.io

IO_FOLDER = Path(abdus.io.__file__).parent


def _abdus_imports(tree: ast.Module) -> list[tuple[ast.stmt, str]]:
    """(statement, imported abdus.io module) for every import of the tree, at any depth."""
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "abdus.io":
            names = [f"abdus.io.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [(node, name) for name in names if name.startswith("abdus.io.")]
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """The abdus.io import graph (module -> modules) and the imports not at module level."""
    graph: dict[str, set[str]] = {}
    nested: list[str] = []
    for path in sorted(IO_FOLDER.glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        edges = graph.setdefault(path.stem, set())
        for node, name in _abdus_imports(tree):
            edges.add(name.split(".")[2])
            if id(node) not in top_level:
                nested.append(f"{path.name}:{node.lineno} imports {name}")
    return graph, nested


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, str] = {}  # module -> "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_io_modules_import_at_module_level_only() -> None:
    _, nested = _graph()
    assert nested == []


def test_io_has_no_import_cycles() -> None:
    graph, _ = _graph()
    assert "dicom" in graph["info"] and "reader" in graph["info"]  # the graph is really read
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
