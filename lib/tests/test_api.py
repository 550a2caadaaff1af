"""The library's public API (docs/api.md) is what the project imports, and it imports cleanly:
every listed name exists, no project file reaches past the list, no module imports another
that imports it back."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import mlplab
from mlplab.testing import PROJECT

LIBRARY = Path(mlplab.__file__).parent
API_PAGE = PROJECT / "docs" / "api.md"


def listed_names() -> set[str]:
    """Every dotted ``mlplab...`` or ``hydra_plugins...`` name the API page lists."""
    names = re.findall(r"`((?:mlplab|hydra_plugins)(?:\.\w+)+)", API_PAGE.read_text())
    return set(names)


def project_files() -> list[Path]:
    """The Python files a user owns: the entry points, the package, the tests, the example."""
    roots = [PROJECT / "src", PROJECT / "tests", PROJECT / "examples"]
    return sorted(PROJECT.glob("*.py")) + [p for r in roots for p in sorted(r.rglob("*.py"))]


def imported_library_names(path: Path) -> set[str]:
    """``mlplab.x.name`` for each ``from mlplab.x import name``, and every ``_target_``
    naming the library, in a file of the project."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlplab"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def is_listed(name: str, listed: set[str]) -> bool:
    """A listed name, or a name inside a listed module (``mlplab.errors.ConfigError``)."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in listed for i in range(2, len(parts) + 1))


def test_every_listed_name_exists():
    for name in listed_names():
        module, _, attribute = name.rpartition(".")
        try:
            importlib.import_module(name)  # a module
        except ModuleNotFoundError:
            assert hasattr(importlib.import_module(module), attribute), name


def test_the_project_imports_only_the_public_api():
    listed = listed_names()
    reached = {
        f"{path.relative_to(PROJECT)}: {name}"
        for path in project_files()
        for name in imported_library_names(path)
        if not is_listed(name, listed)
    }
    assert not reached, "not in docs/api.md: " + ", ".join(sorted(reached))


def test_the_project_config_builds_only_public_library_parts():
    listed = listed_names()
    targets = {
        f"{path.relative_to(PROJECT)}: {target}"
        for path in sorted((PROJECT / "conf").rglob("*.yaml"))
        for target in re.findall(r"_target_:\s*((?:mlplab|hydra_plugins)[\w.]+)", path.read_text())
        if not is_listed(target, listed)
    }
    assert not targets, "not in docs/api.md: " + ", ".join(sorted(targets))


def module_imports(path: Path) -> set[str]:
    """The mlplab modules a library module imports when it is imported (function-level and
    type-checking imports excluded: they run later, or never)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # if TYPE_CHECKING: ...
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlplab"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mlplab")}
    return found


def test_the_library_has_no_import_circles():
    modules = {}
    for path in LIBRARY.rglob("*.py"):
        parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {
        name: {m for m in module_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    # A package imports its own modules (mlplab.data -> mlplab.data.table): not a circle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    circles = [c for c in map(cycle_from, graph) if c]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)
