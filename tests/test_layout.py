"""The package's layout: no module imports its way back to itself, and the method stays at
the top while the periphery (evaluation, hf, experiments, cli, demo, tracking) depends on
it and not the other way round."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERIPHERY = ("minidml.evaluation", "minidml.hf", "minidml.experiments", "minidml.cli",
             "minidml.demo", "minidml.tracking")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in (REPO / "minidml").rglob("*.py"):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_pkg: bool) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        if node.level:
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        subs = [f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in MODULES]
        names = subs if len(subs) == len(node.names) else [prefix, *subs]
    found = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return ids


@cache
def imports() -> dict[str, frozenset[str]]:
    """Each module's imports of other minidml modules, at run time (function-local ones too;
    type-checking-only ones and the package root's lazy re-exports left out)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
                found |= _resolve(module, node, path.name == "__init__.py")
        graph[module] = frozenset(found - {module, "minidml"})
    return graph


def levels() -> int:
    """The longest chain of imports, counted in modules."""
    graph = imports()

    @cache
    def depth(module: str) -> int:
        return 1 + max((depth(m) for m in graph[module]), default=0)

    return max(depth(m) for m in graph)


def test_no_module_imports_its_way_back_to_itself():
    graph = imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert levels() <= 12  # the longest chain: __main__, cli, demo, launch, tracking, trainer, ...


def test_the_method_does_not_import_the_periphery():
    graph = imports()
    core = [m for m in graph if not m.startswith(PERIPHERY) and m != "minidml.__main__"]
    assert len(core) >= 20
    for module in core:
        # launch sets a run up, and so builds its trackers
        allowed = ("minidml.tracking",) if module == "minidml.launch" else ()
        wrong = {m for m in graph[module] if m.startswith(PERIPHERY) and not m.startswith(allowed)}
        assert not wrong, f"{module} imports {sorted(wrong)}"


def test_moved_modules_still_import_under_their_old_names_with_a_warning():
    import importlib
    import sys
    import warnings

    from minidml._moved import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message)
                   for w in caught), old
        assert new in MODULES and old not in MODULES  # the old file is gone
