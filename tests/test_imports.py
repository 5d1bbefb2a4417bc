"""The project's import graph: no cycles, the advisor never imports the pipeline, and the project's own
modules are imported at the top of a module, where a reader sees the dependency.

Every `import` statement is read with `ast` (module level, inside functions, under TYPE_CHECKING), so a
cycle cannot hide behind a function-local import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("advisor", "pipeline", "rules", "tunegate")

# Modules allowed to import the project's own modules inside functions, and why. Third-party imports
# inside functions (torch, transformers, peft, rich, ...) are not limited here: they are the deliberate
# lazy heavy imports that keep `tunegate --help` instant.
LAZY_PROJECT_IMPORTS = {
    "advisor": "the Python API's `advise` imports advisor.api when called, so `import advisor` stays light",
    "advisor.cli": "each command imports its recipe when it runs, so `tunegate --help` loads only argparse",
    "advisor.backends": "get_backend imports only the backend it builds, with that backend's client library",
    "tunegate": "the API imports advisor.api or pipeline.api when called: `import tunegate` stays light",
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _project_module(name: str) -> str | None:
    """The project module `name` refers to (a module, or the module a name is imported from)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import statement of `module`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}".rstrip(".")
                # `from advisor import report` imports the module advisor.report.render
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            for name in names:
                target = _project_module(name)
                if target is not None and target != module:
                    yield target, child.lineno, in_function
            yield from visit(child, inside)

    yield from visit(tree, False)


GRAPH = {m: sorted({t for t, _, _ in _imports(m, p)}) for m, p in MODULES.items()}


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def test_the_graph_finds_a_cycle_when_there_is_one() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": []}
    assert sorted(_strongly_connected(graph)) == [["a", "b", "c"], ["d"], ["e"]]
    assert {"advisor.cli", "pipeline.run", "advisor.finetune.loop"} <= set(GRAPH)  # the walk sees the tree
    assert "pipeline.run" in GRAPH["advisor.cli"]  # function-local imports are edges too


def test_no_import_cycle_among_the_projects_modules() -> None:
    cycles = [c for c in _strongly_connected(GRAPH) if len(c) > 1]
    assert cycles == []


def _package(module: str) -> str:
    """The package a module belongs to, at the granularity of the stage folders: advisor.measure.evaluate
    -> advisor.measure; a module directly under advisor/ or pipeline/ is a node of its own."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_among_the_projects_packages() -> None:
    """Module cycles are not enough: two stages that import each other through different modules form
    one knot a reader cannot take apart (measure <-> decide, report <-> rundir were such pairs)."""
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        edges = packages.setdefault(_package(module), set())
        edges.update(_package(t) for t in targets if _package(t) != _package(module))
    graph = {p: sorted(t for t in edges if t in packages) for p, edges in packages.items()}
    assert {"advisor.measure", "advisor.decide", "advisor.report", "advisor.rundir"} <= set(graph)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_the_advisor_never_imports_the_pipeline() -> None:
    # The one exception is the CLI's `train`/`run` commands, which start the pipeline when they run.
    wrong = [
        (m, t)
        for m, targets in GRAPH.items()
        for t in targets
        if m.startswith("advisor") and t.startswith("pipeline") and m != "advisor.cli"
    ]
    assert wrong == []


def test_project_modules_are_imported_at_the_top() -> None:
    hidden = [
        f"{path.relative_to(REPO)}:{line}: imports {target} inside a function"
        for module, path in MODULES.items()
        if module not in LAZY_PROJECT_IMPORTS
        for target, line, in_function in _imports(module, path)
        if in_function
    ]
    assert hidden == []
