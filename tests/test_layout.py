"""
The shape of the code, checked: no import cycle among caplab's modules (counting imports
made only for type checking and imports inside functions), and Twisted's private names used
only in L{caplab.internals}.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "caplab"


def _moduleName(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """
    The caplab modules C{path} imports, anywhere in it (top level, functions, and
    C{if TYPE_CHECKING:} blocks alike).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("caplab"):
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_moduleName(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        package = name.rpartition(".")[0]
        # A package's __init__ is imported with any of its modules: not an edge back.
        graph[name] = {m for m in _imports(path, modules) if m != name and m != package}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == 1:
                return [*stack[stack.index(other) :], other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_noImportCycle() -> None:
    """
    caplab's modules import each other one way only, however they import.
    """
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cycleFinderFindsCycles() -> None:
    """
    The check above can fail: a cycle among made-up modules is found.
    """
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_twistedPrivatesOnlyInInternals() -> None:
    """
    No module but L{caplab.internals} imports a private module of another package (Twisted,
    hishel ...) or reads a private attribute of a Twisted object by a name Twisted uses for
    its own state.
    """
    privateNames = (
        "_dataBuffer",
        "_tempDataBuffer",
        "_networkProducer",
        "_waitingForTransport",
        "_savedTimeOut",
        "_receivedHeaderSize",
        "_receivedHeaderCount",
        "_handlingRequest",
        "_QUEUED_SENTINEL",
        "_HTTPChannel__",
        "_disconnected",
        "_sslverify",
    )
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "internals.py":
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("twisted")
            ):
                if any(part.startswith("_") for part in node.module.split(".")):
                    offenders.append(f"{path.name}: from {node.module}")
        offenders += [f"{path.name}: {name}" for name in privateNames if name in text]
    assert offenders == []
