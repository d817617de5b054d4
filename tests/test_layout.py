"""The core's layout: imports run one way (contracts <- registry <- recipe <- builtins <- train <- runs <- use and
CLI), with no cycles, and plugins use only the public API. The built-in components come after the recipe layer:
the ``mixture`` dataset structures its sources' sections as the recipe does."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"

LAYERS = [
    {"contracts", "protocols", "hookspecs", "pairs", "files"},
    {"contrastive", "data", "registry"},
    {"recipe"},
    {"builtins"},
    {"train"},
    {"runs"},
    {"use", "cli", "testing", "scaffold", "__init__"},
]
"""A core module (or package) may import only from its own layer or the layers above it in this list."""


def _layer(unit: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if unit in names)


def _unit(path: Path) -> str:
    return path.relative_to(CORE).parts[0].removesuffix(".py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    return ".".join(["mmcore", *([] if parts == ["__init__"] else [p for p in parts if p != "__init__"])])


def _core_imports(path: Path) -> set:
    """The mmcore modules ``path`` imports (relative imports resolved inside the core), at any depth of the file."""
    package = _module_name(path).split(".") if CORE in path.parents else ["plugin"]
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("mmcore"):
                found.add(name)
                found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mmcore"))
    return found


def _files():
    return {_module_name(p): p for p in CORE.rglob("*.py")}


def test_core_imports_run_one_way():
    problems = []
    for name, path in _files().items():
        unit = _unit(path)
        for imported in _core_imports(path):
            parts = imported.split(".")
            if len(parts) < 2 or parts[1] in ("__version__",):
                continue
            target = parts[1]
            if (CORE / target).is_dir() or (CORE / f"{target}.py").is_file():
                if _layer(target) > _layer(unit):
                    problems.append(f"{name} ({unit}) imports {imported} ({target}, a later layer)")
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_core_modules():
    files = _files()
    graph = {name: {i for i in _core_imports(path) if i in files and i != name} for name, path in files.items()}
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in graph[node]:
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)


def test_plugins_import_only_the_public_api():
    """A plugin package (and its tests) imports ``mmcore`` itself, never ``mmcore.<module>``; the public names
    are those ``mmcore`` exports."""
    import mmcore

    problems = []
    for path in (ROOT / "plugins").glob("*/mmcore_*/**/*.py"):
        for imported in _core_imports(path):
            if imported != "mmcore" and not (imported.count(".") == 1 and imported.split(".")[1] in mmcore.__all__):
                problems.append(f"{path.relative_to(ROOT)} imports {imported}")
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mmcore"
                    and node.attr not in mmcore.__all__ and node.attr != "__version__"):
                problems.append(f"{path.relative_to(ROOT)} uses mmcore.{node.attr}, which is not public")
    assert not problems, "\n".join(problems)


def test_every_public_name_resolves_and_help_shows_it():
    import mmcore

    for name in mmcore.__all__:
        assert getattr(mmcore, name) is not None, name
    assert {"load", "TensorSplit", "info_nce_rows"} <= set(dir(mmcore))
