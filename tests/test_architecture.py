"""The package's imports flow one way: no cycles, and no import hidden in a
function to dodge one.

Read with the standard library's `ast`: module-level imports (those under
``if TYPE_CHECKING:`` excepted) make the import graph; imports inside
functions are allowed only in the modules of `LAZY_IMPORTS`, which import what
a command needs when it runs, and even those must not close a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "zooprep"

#: Modules that import other zooprep modules inside functions, and why.
LAZY_IMPORTS = {
    "zooprep.images": "ButlerImages needs the optional lsst-daf-butler",
    "zooprep.stages.render": "only the image source and renderer a run uses "
    "(astropy for FITS, lsst for a Butler, fastavro for alert stamps)",
    "zooprep.stages.select": "only the reader asked for (SQLAlchemy, pandas, fastavro)",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The zooprep module an imported name lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> tuple[set[str], set[tuple[str, int]]]:
    """(module-level zooprep imports, function-level ones with line numbers)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top: set[str] = set()
    lazy: set[tuple[str, int]] = set()

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            function = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            typing = type_only or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [
                    f"{child.module}.{alias.name}"
                    if f"{child.module}.{alias.name}" in MODULES
                    else child.module
                    for alias in child.names
                ]
            for name in names:
                target = _target(name) if name.startswith("zooprep") else None
                if target is None or target == module or typing:
                    continue
                if function:
                    lazy.add((target, child.lineno))
                else:
                    top.add(target)
            visit(child, function, typing)

    visit(tree, False, False)
    return top, lazy


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_module_level_imports_have_no_cycles() -> None:
    graph = {m: _imports(m)[0] for m in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_function_level_import_closes_a_cycle() -> None:
    graph = {}
    for module in MODULES:
        top, lazy = _imports(module)
        graph[module] = top | {target for target, _ in lazy}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle through a function: " + " -> ".join(cycle)


def test_function_level_imports_only_where_a_command_loads_what_it_needs() -> None:
    lazy = {m: sorted(_imports(m)[1]) for m in MODULES}
    unexpected = {
        m: [f"{target} (line {line})" for target, line in found]
        for m, found in lazy.items()
        if found and m not in LAZY_IMPORTS
    }
    assert not unexpected, f"imports inside functions: {unexpected}"
    stale = [m for m in LAZY_IMPORTS if not lazy.get(m)]
    assert not stale, f"LAZY_IMPORTS lists modules without lazy imports: {stale}"


def test_the_graph_reader_sees_the_package() -> None:
    top, _ = _imports("zooprep.stages.upload")
    assert {"zooprep.panoptes", "zooprep.run", "zooprep.stages.review"} <= top
    _, lazy = _imports("zooprep.stages.select")
    assert "zooprep.readers.apdb" in {target for target, _ in lazy}


def test_only_the_run_module_talks_to_the_run_database() -> None:
    # Stages ask `Run` methods; SQL on the run state lives in zooprep/run.py.
    # (SQL for an APDB, in zooprep/readers, is another database.)
    offenders = []
    for module, path in MODULES.items():
        if module == "zooprep.run":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [
            f"{module}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("db", "_db")
        ]
    assert not offenders, f"run state SQL outside zooprep/run.py: {offenders}"
