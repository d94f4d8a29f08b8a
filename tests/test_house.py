"""The house: no import cycles, one direction between the packages, one registry per extension point."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pyarrow as pa

from conftest import ROOT
from results.schema import LEADERBOARD_COLUMNS, OWNED, TABLES
from results.queries import _sql
from workers import backends, datasets, metrics

PACKAGES = ("sweep", "workers", "results")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Project modules a file imports (at module level only, or anywhere); TYPE_CHECKING blocks are left out."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found.update({base} | {f"{base}.{a.name}" for a in node.names})
            if not top_level_only:
                visit([n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit([n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)])

    visit(tree.body)
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only) if m in files and m != name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # a package's __init__ importing its own submodules is how a registry finds them, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_module_imports_have_no_cycle() -> None:
    assert _cycle(_graph(top_level_only=True)) is None, " -> ".join(_cycle(_graph(top_level_only=True)) or [])


def test_a_made_up_cycle_is_found() -> None:  # the check above can fail
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_packages_depend_in_one_direction() -> None:
    # workers never imports sweep; results imports neither (anywhere, lazily included)
    for name, imported in _graph(top_level_only=False).items():
        top = {m.split(".")[0] for m in imported}
        if name.startswith("workers"):
            assert "sweep" not in top, (name, imported)
        if name.startswith("results"):
            assert not top & {"sweep", "workers"}, (name, imported)


def _subpackages(package: object) -> list[str]:
    return [m.name for m in pkgutil.iter_modules(package.__path__)]  # type: ignore[attr-defined]


def test_every_backend_folder_is_registered_with_its_libraries_and_runtimes() -> None:
    folders = [m for m in pkgutil.iter_modules(backends.__path__) if m.ispkg]
    assert {f.name for f in folders} >= {"torch", "ggml", "ctranslate2"}
    for folder in folders:
        module = importlib.import_module(f"workers.backends.{folder.name}")
        assert backends.BACKENDS[folder.name] == [lib.library for lib in module.LIBRARIES]
        for runtime in module.RUNTIMES:
            assert backends.RUNTIMES[runtime.name] is runtime
            for field in runtime.columns:  # a runtime's own timers are columns of the trials table
                assert OWNED["trials"][field.name] == runtime.name
        for library in module.LIBRARIES:
            assert backends.LIBRARIES[library.library] is library
            assert library.runtime in backends.RUNTIMES, library  # what it produces has a runtime


def test_every_metric_owns_its_columns_and_reaches_the_leaderboard() -> None:
    trackers = [m for m in _subpackages(metrics) if m != "base"]
    assert sorted(metrics.TRACKERS) == sorted(trackers)  # one module, one metric, found by name
    trials = TABLES["trials"]
    for name, tracker in metrics.TRACKERS.items():
        # `<metric>_s` is what measuring cost; a column of the metric's own by that name would be overwritten
        assert f"{name}_s" not in [f.name for f in tracker.columns], name
        owned = [f.name for f in tracker.columns] + [f"{name}_s"]
        assert tracker.null_reason in owned
        for column in owned:
            assert OWNED["trials"][column] == name and column in LEADERBOARD_COLUMNS
            assert trials.field(column).type == (pa.float64() if column == f"{name}_s" else
                                                 next(f.type for f in tracker.columns if f.name == column))
    leaderboard = _sql("leaderboard")
    assert "{metric_columns}" not in leaderboard and all(f"t.{c}," in leaderboard for c in LEADERBOARD_COLUMNS)


def test_every_dataset_module_with_sources_is_registered() -> None:
    for name in _subpackages(datasets):
        module = importlib.import_module(f"workers.datasets.{name}")
        for source, lister in getattr(module, "SOURCES", {}).items():
            assert datasets.SOURCES[source] is lister
