"""The layering docs/architecture.md promises, checked on the source: what the worker process may
import, and what the statistics may not.

Imports are read from the syntax tree, lazy ones inside functions included (``TYPE_CHECKING``
blocks excluded), and followed through the package: a module reached only on some request still
counts, because some request will reach it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_mlscope"
# What a worker (a subprocess, a venv stack, a container with only the framework installed) must
# never need: the host's test runner, database, templates and plotting.
NOT_IN_WORKERS = {"pytest", "_pytest", "sqlalchemy", "jinja2", "matplotlib"}


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, name: str) -> set[str]:
    """Every module this file imports, anywhere in it but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def closure(start: str) -> tuple[set[str], set[str]]:
    """(modules of this package reached from ``start``, top-level names of everything else)."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_path(name)
        if path is None:
            continue
        seen.add(name)
        for imported in _imports(path, name):
            if imported.split(".")[0] == "pytest_mlscope":
                parts = imported.split(".")
                for i in range(2, len(parts) + 1):  # a package's __init__ runs too
                    todo.append(".".join(parts[:i]))
            else:
                external.add(imported.split(".")[0])
    return seen, external


def _modules() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of this package it imports (``from pkg import submodule`` is the
    submodule, not the package)."""
    modules = set(_modules())
    graph: dict[str, set[str]] = {}
    for name in modules:
        path = _module_path(name)
        assert path is not None
        deps = set()
        for imported in _imports(path, name):
            parts = imported.split(".")
            if parts[0] != "pytest_mlscope":
                continue
            for end in range(len(parts), 1, -1):  # the longest prefix that is a module
                candidate = ".".join(parts[:end])
                if candidate in modules:
                    if candidate != name:
                        deps.add(candidate)
                    break
        graph[name] = deps
    # ``from pkg import submodule`` also lists ``pkg``: drop it where the submodule was meant.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not any(o.startswith(d + ".") for o in deps)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert "pytest_mlscope.evaluation" in graph["pytest_mlscope.session"]  # lazy ones counted
    assert cycles(graph) == []


def test_no_module_over_500_lines_and_plugin_hooks_only() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 500
    }
    assert long == {}
    assert len((PACKAGE / "plugin.py").read_text().splitlines()) < 300


def test_the_closure_follows_lazy_imports_and_skips_type_checking_blocks(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import sqlalchemy\n"
        "def f():\n    import jinja2\n"
    )
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(path, "pytest_mlscope.m") == {"typing", "typing.TYPE_CHECKING", "jinja2"}


def test_the_worker_imports_no_test_runner_database_templates_or_plots() -> None:
    modules, external = closure("pytest_mlscope.worker")
    assert "pytest_mlscope.predictors.base" in modules  # the closure really was followed
    assert "numpy" in external
    assert not external & NOT_IN_WORKERS, sorted(external & NOT_IN_WORKERS)


@pytest.mark.parametrize("module", ["pytest_mlscope.stats", "pytest_mlscope.measure"])
def test_statistics_import_no_store_and_no_report(module: str) -> None:
    modules, _ = closure(module)
    forbidden = ("pytest_mlscope.store", "pytest_mlscope.report")
    assert not {m for m in modules if m.startswith(forbidden)}


def test_the_accuracy_checks_import_nothing_into_the_measured_memory() -> None:
    """The accuracy pass runs inside the memory window: what its checks import counts as the
    model's memory (scipy.stats alone is 30 MiB), so they use what the worker imported before
    the window opened: numpy, and pydantic for the request it parsed."""
    _, external = closure("pytest_mlscope.accuracy")
    assert external <= {"numpy", "pydantic", "__future__", "collections", "typing"}, external
