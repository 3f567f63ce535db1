"""Import cycles of ``src/abdus``, found from the source (``ast``), without importing anything.

Every ``import abdus...`` / ``from abdus... import ...`` (and relative import) is an edge from
the importing module to the most specific module it names. An edge is *deferred* when the
import sits inside a function or an ``if TYPE_CHECKING:`` block: such imports hide a loop from
Python at import time but not from a reader, so cycles are searched over all edges.

As a script: ``python tests/test_import_cycles.py [SRC] [--only PREFIX]`` prints the
cycles (and the deferred imports) that touch modules under PREFIX; exit status 1 if any cycle.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "abdus"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    deferred: bool  # inside a function or a TYPE_CHECKING block


def module_names(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package folder ``src``."""
    names = {}
    for path in sorted(src.rglob("*.py")):
        parts = [src.name, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, deferred: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """(import statement, deferred) for every import in ``tree``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(node, True)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), deferred)
        else:
            yield from _imports(node, deferred)


def _known(name: str, known: set[str]) -> str | None:
    """The most specific known module of a dotted name (``a.b.attr`` -> ``a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.stmt, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The known modules an import statement loads: ``from a import b`` is an edge to ``a.b``
    when that is a module, else to ``a``."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return {found for name in names if (found := _known(name, known))}


def import_edges(src: Path = SRC) -> list[Edge]:
    """Every import between modules of the package ``src``."""
    names = module_names(src)
    known = set(names)
    edges = []
    for module, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, deferred in _imports(tree):
            for target in _targets(node, module, is_package, known):
                if target != module:
                    edges.append(Edge(module, target, node.lineno, deferred))
    return edges


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each listed as
    one closed path through its modules where possible."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(_loop(sorted(component), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _loop(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest closed path from the component's first module back to itself."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return component


def report(src: Path, only: str) -> tuple[list[str], int]:
    """(lines to print, number of cycles touching ``only``)."""
    edges = import_edges(src)
    found = [c for c in cycles(edges) if any(m.startswith(only) for m in c)]
    deferred = {(e.source, e.target): e for e in edges if e.deferred}
    lines = [f"{len(found)} import cycle(s) through {only}"]
    for loop in found:
        hops = []
        for a, b in itertools.pairwise(loop):
            hidden = deferred.get((a, b))
            hops.append(f"{a} -> {b}" + (f" (deferred, line {hidden.line})" if hidden else ""))
        lines.append("  " + "; ".join(hops))
    inside = [e for e in edges if e.deferred and e.source.startswith(only)]
    lines.append(f"{len(inside)} deferred import(s) (in a function or TYPE_CHECKING) in {only}")
    lines += [f"  {e.source}:{e.line} -> {e.target}" for e in inside]
    return lines, len(found)


# --------------------------------------------------------------------------------- tests


def test_the_checker_finds_a_loop_hidden_in_a_function_and_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import X\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    (pkg / "d.py").write_text("import pkg.a\n")
    edges = import_edges(pkg)
    assert {(e.source, e.target, e.deferred) for e in edges} == {
        ("pkg.a", "pkg.sub.b", False),
        ("pkg.sub.b", "pkg.sub.c", True),
        ("pkg.sub.c", "pkg.a", True),
        ("pkg.d", "pkg.a", False),
    }
    assert cycles(edges) == [["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]]


def test_evaluation_imports_sit_at_module_level_without_a_cycle():
    lines, n_cycles = report(SRC, "abdus.evaluation")
    assert n_cycles == 0, "\n".join(lines)
    assert lines[-1].startswith("0 deferred"), "\n".join(lines)


def test_no_import_cycle_anywhere_and_deferred_imports_only_in_the_command_line():
    """The CLI defers its imports on purpose: ``abdus --help`` must not load PyTorch."""
    lines, n_cycles = report(SRC, "abdus")
    assert n_cycles == 0, "\n".join(lines)
    deferred = [e for e in import_edges(SRC) if e.deferred and e.source != "abdus.cli"]
    assert deferred == [], deferred


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, default=SRC, help="the package folder")
    parser.add_argument("--only", default="abdus", help="report cycles touching these modules")
    args = parser.parse_args()
    text, n = report(args.src, args.only)
    print("\n".join(text))
    sys.exit(1 if n else 0)
