"""The shape of the code, checked: short functions and modules, public names between modules,
no import loops, ``__all__`` on every package, and ``wbc`` free of Ray.

These are the limits a newcomer can rely on when carrying the code on; a change that breaks one
should split the function or module, or make the shared name public.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wbc", "study")
MAX_FUNCTION_LINES = 80  # docstring lines not counted
MAX_MODULE_LINES = 600


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


MODULES = dict(_modules())


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module of a ``from ... import`` (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = module.split(".")
    base = base if _is_package(module) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import in ``name``, at any
    depth (function-level imports included: a loop through them is still a loop)."""
    for node in ast.walk(_tree(MODULES[name])):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, node)
            if target is None:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if candidate in MODULES:  # ``from wbc import cache``: a module, not a name
                    yield candidate, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _function_lengths(path: Path) -> Iterator[tuple[str, int, int]]:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            doc = 0
            first = body[0] if body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                assert first.end_lineno is not None
                doc = first.end_lineno - first.lineno + 1
            assert node.end_lineno is not None
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1 - doc


def test_functions_are_short() -> None:
    long = [f"{path.relative_to(ROOT)}:{line} {func} ({length} lines)"
            for path in MODULES.values() for func, line, length in _function_lengths(path)
            if length > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_modules_are_short() -> None:
    long = [f"{path.relative_to(ROOT)} ({n} lines)" for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_module_imports_another_modules_private_names() -> None:
    found = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}.{imported}"
             for name in MODULES for target, imported, line in _imports(name)
             if imported and imported.startswith("_") and target.split(".")[0] in PACKAGES
             and not imported.startswith("__") and target != name]
    assert not found, found


def _owner(module: str) -> str:
    """The unit of the package graph: ``wbc.augment`` for ``wbc.augment.paste``, ``study.data``
    for the module ``study.data``."""
    return ".".join(module.split(".")[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("level", ["package", "module"])
def test_the_import_graph_has_no_loop(level: str) -> None:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        source = _owner(name) if level == "package" else name
        for target, _, _ in _imports(name):
            if target.split(".")[0] not in PACKAGES:
                continue
            # A package's __init__ re-exporting its own modules is not a loop.
            if level == "module" and target.startswith(name + ".") and _is_package(name):
                continue
            dest = _owner(target) if level == "package" else target
            if dest != source and dest in {(_owner(m) if level == "package" else m)
                                           for m in MODULES}:
                graph.setdefault(source, set()).add(dest)
    assert _cycle(graph) is None, f"import loop: {' -> '.join(_cycle(graph) or [])}"


def _assigns_all(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    return (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and node.target.id == "__all__")


def test_every_package_declares_its_public_names() -> None:
    missing = [name for name in MODULES if _is_package(name)
               and not any(_assigns_all(node) for node in _tree(MODULES[name]).body)]
    assert not missing, f"packages without __all__: {missing}"


def test_the_domain_library_never_imports_ray() -> None:
    found = [f"{MODULES[name].relative_to(ROOT)}:{line}" for name in MODULES
             if name.startswith("wbc") for target, _, line in _imports(name)
             if target.split(".")[0] in ("ray", "study")]
    assert not found, f"wbc imports ray or study: {found}"


def test_no_two_modules_share_a_name() -> None:
    # ``run.py`` in wbc and in wbc/segment, ``models.py`` in two study packages: a reader (and a
    # traceback) should tell them apart by name alone.
    seen: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        if path.stem not in ("__init__", "__main__"):
            seen.setdefault(path.stem, []).append(name)
    assert not {stem: names for stem, names in seen.items() if len(names) > 1}
