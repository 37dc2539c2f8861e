"""The dependency rules of docs/architecture.md, checked on the source tree itself.

- interfaces imports no sibling;
- a suite imports a sibling suite only lazily (inside a function), as an optional extra;
- nothing imports torchsmith.api;
- no member has an import cycle among its own modules at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = {
    "interfaces": ROOT / "packages/interfaces/src/torchsmith/interfaces",
    "trainer": ROOT / "packages/trainer/src/torchsmith/trainer",
    "losses": ROOT / "packages/losses/src/torchsmith/losses",
    "generator": ROOT / "packages/generator/src/torchsmith/generator",
    "bench": ROOT / "packages/bench/src/torchsmith/bench",
    "testing": ROOT / "packages/testing/src/torchsmith/testing",
    "api": ROOT / "apps/api/src/torchsmith/api",
}


def _module_name(member: str, path: Path) -> str:
    rel = path.relative_to(MEMBERS[member]).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["torchsmith", member, *parts])


def _imports(path: Path, module: str, *, top_level_only: bool) -> Iterator[str]:
    """Absolute names imported by a module; only those run at import time if asked."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
                if node.module is None:
                    yield from (f"{base}.{alias.name}" for alias in node.names)
                    continue
            else:
                name = node.module or ""
            yield name


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements that run at import: module body, and if/try blocks, not TYPE_CHECKING ones."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If):
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                stack.extend(node.orelse)
                continue
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
        else:
            yield node


def _sources(member: str) -> Iterator[tuple[Path, str]]:
    for path in sorted(MEMBERS[member].rglob("*.py")):
        if "templates" in path.parts:
            continue
        yield path, _module_name(member, path)


def _sibling(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "torchsmith" else None


def test_no_member_has_torchsmith_init() -> None:
    for path in MEMBERS.values():
        assert not (path.parent / "__init__.py").exists(), f"{path.parent} breaks PEP 420"


def test_interfaces_imports_no_sibling() -> None:
    for path, module in _sources("interfaces"):
        for name in _imports(path, module, top_level_only=False):
            assert _sibling(name) in (None, "interfaces"), f"{path} imports {name}"


@pytest.mark.parametrize("member", [m for m in MEMBERS if m != "api"])
def test_nothing_imports_the_api(member: str) -> None:
    for path, module in _sources(member):
        for name in _imports(path, module, top_level_only=False):
            assert _sibling(name) != "api", f"{path} imports {name}"


@pytest.mark.parametrize("member", [m for m in MEMBERS if m not in ("interfaces", "api")])
def test_suites_import_siblings_only_lazily(member: str) -> None:
    for path, module in _sources(member):
        for name in _imports(path, module, top_level_only=True):
            assert _sibling(name) in (None, "interfaces", member), (
                f"{path} imports {name} at import time; import optional suites inside the "
                "function that needs them"
            )


@pytest.mark.parametrize("member", list(MEMBERS))
def test_no_import_cycles(member: str) -> None:
    graph: dict[str, set[str]] = {}
    for path, module in _sources(member):
        names = set(_imports(path, module, top_level_only=True))
        graph[module] = {n for n in names if _sibling(n) == member}
    # Importing a.b.c imports its parents: a package's __init__ is entered first.
    cycle = _find_cycle({m: {d for d in deps if d in graph} for m, deps in graph.items()})
    assert cycle is None, " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
