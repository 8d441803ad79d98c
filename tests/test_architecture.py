"""The package's shape: layers as folders, imports one way, no cycles, no module over 400 lines.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` inside
the package counts, at module level, inside functions and under ``if TYPE_CHECKING:`` alike (a
type-only import back up is still a layer knowing the one above it: core names the guard it
needs through the ``core.state.ActiveGuard`` protocol instead).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "blockbuster_lite"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 400

#: What each layer may import from the package (besides itself). The package's __init__ is the
#: composition root and the thin re-export modules at the top sit above everything.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "catalogue": {"core"},
    "offload": {"core"},
    "watchdog": {"core", "offload"},
    "integrations": {"core", "offload", "watchdog"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (resolving relative imports)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # "from . import x" imports the submodule x when there is one
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in modules and candidate != name:
                found.add(candidate)
    return found


def package_graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules) for path in paths}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = package_graph()
    # the offload package loads its engine lazily, inside methods: the edge must still count
    assert "blockbuster_lite.offload.engine" in graph["blockbuster_lite.offload"]
    assert "blockbuster_lite.core.actions" in graph["blockbuster_lite.core.hotpath"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found() -> None:
    # the checker itself: a graph with a cycle must be caught
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("lower", sorted(ALLOWED))
def test_layers_import_only_downwards(lower: str) -> None:
    wrong = []
    for module, imported in package_graph().items():
        if layer(module) != lower:
            continue
        for target in imported:
            target_layer = layer(target)
            if target_layer != lower and target_layer not in ALLOWED[lower]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_over_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT.parent)): n
        for path in ROOT.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_public_import_paths_keep_working() -> None:
    import importlib

    for name in (
        "blockbuster_lite.asgi",
        "blockbuster_lite.otel",
        "blockbuster_lite.offload",
        "blockbuster_lite.pytest_plugin",
        "blockbuster_lite.__main__",
    ):
        importlib.import_module(name)
    from blockbuster_lite.asgi import BlockBusterMiddleware
    from blockbuster_lite.integrations.asgi import BlockBusterMiddleware as real

    assert BlockBusterMiddleware is real


#: Folders of the checkout that are not ours to read (tools, environments, caches).
_NOT_OURS = {".git", ".venv", ".peer-suites", ".mypy_cache", ".ruff_cache", ".pytest_cache",
             "__pycache__", "build", "dist"}  # fmt: skip


def test_no_merge_conflict_markers_are_left() -> None:
    """A merge resolved by hand once left ``<<<<<<<``/``>>>>>>>`` blocks in the README."""
    checkout = ROOT.parent
    found = []
    for path in sorted(checkout.rglob("*")):
        if not path.is_file() or _NOT_OURS.intersection(path.relative_to(checkout).parts):
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue  # not text
        for number, line in enumerate(lines, 1):
            if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "=======":
                found.append(f"{path.relative_to(checkout)}:{number}")
    assert found == []
