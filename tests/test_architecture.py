"""The package's imports flow one way and each module keeps to its own names.

Read with the standard library's `ast`: module-level imports make the import
graph, and it has no cycle, not even through imports made only for type
checking (``if TYPE_CHECKING:``); imports inside functions are allowed only in
the modules of `LAZY_IMPORTS`, which import what a command needs when it runs,
and even those must not close a cycle.  No module imports or calls another
module's ``_private`` names, SQL on the run state stays in ``zooprep/run.py``,
the stages trust their components' Protocols (no ``hasattr``), and each
photometric constant is written once.
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


def _imports(
    module: str, *, type_only: bool = False
) -> tuple[set[str], set[tuple[str, int]]]:
    """(module-level zooprep imports, function-level ones with line numbers).

    ``type_only``: count the imports under ``if TYPE_CHECKING:`` too.
    """
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
                if target is None or target == module or (typing and not type_only):
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


def test_module_level_imports_have_no_cycles_not_even_for_type_checking() -> None:
    graph = {m: _imports(m, type_only=True)[0] for m in MODULES}
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


def _private_definitions() -> dict[str, set[str]]:
    """``{_name: modules}``: the modules defining each private name (any depth)."""
    found: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    found.setdefault(name, set()).add(module)
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    # A private module (renderers/_draw.py) is its package's: the modules
    # beside it may use it, nobody else.
    private = _private_definitions()
    offenders = []
    for module, path in MODULES.items():
        package = module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if not node.module.startswith("zooprep"):
                    continue
                source = node.module
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if target in MODULES:  # a module imported by name
                        hidden = alias.name.startswith("_") and not (
                            source == package or source.startswith(package + ".")
                        )
                    else:
                        hidden = alias.name.startswith("_") and source != module
                    if hidden:
                        offenders.append(f"{module}:{node.lineno} imports {target}")
                parts = source.split(".")
                if any(p.startswith("_") for p in parts[1:]):
                    owner = ".".join(parts[:-1])
                    if package != owner and not package.startswith(owner + "."):
                        offenders.append(f"{module}:{node.lineno} imports {source}")
            elif isinstance(node, ast.Attribute):
                name = node.attr
                if not name.startswith("_") or name.startswith("__"):
                    continue
                owners = private.get(name, set())
                base = node.value
                own = isinstance(base, ast.Name) and base.id in ("self", "cls")
                if owners and module not in owners and not own:
                    offenders.append(
                        f"{module}:{node.lineno} uses {ast.unparse(node)} "
                        f"of {', '.join(sorted(owners))}"
                    )
    assert not offenders, "\n".join(offenders)


def test_the_stages_trust_their_components_protocols() -> None:
    # SourceReader, ImageSource, Renderer and Executor say what a component
    # has: the stages never ask with hasattr().
    offenders = []
    for module, path in MODULES.items():
        if not module.startswith("zooprep.stages."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "hasattr"
            ):
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, f"hasattr in the stages: {offenders}"


def test_each_photometric_constant_is_written_once() -> None:
    # 31.4 (the AB magnitude of 1 nJy) and the 2.5 / ln 10 of magnitude errors
    # live in zooprep/photometry.py; everyone else calls it.
    offenders = []
    for module, path in MODULES.items():
        if module == "zooprep.photometry":
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value == 31.4:
                offenders.append(f"{module}:{node.lineno}: 31.4")
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("log")
                and [ast.unparse(a) for a in node.args] == ["10"]
            ):
                offenders.append(f"{module}:{node.lineno}: log(10)")
            if isinstance(node, ast.Compare) and "isdiffpos" in ast.unparse(node):
                offenders.append(f"{module}:{node.lineno}: isdiffpos parsed")
    assert not offenders, offenders
