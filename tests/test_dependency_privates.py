"""No private name of a dependency is read or written: the project talks to Ray, Optuna, torch
and the rest through their public interfaces, so that a new release of one breaks only what its
changelog says (and the Ray range can be wider than one minor version).

A private name is one with a leading underscore (not a dunder). Four ways in are checked, in
every Python file of the repository:

- imports of a dependency's private module or name (``from ray._private import services``);
- attribute chains rooted at an imported dependency (``nn.modules.batchnorm._BatchNorm``);
- ``obj._name`` on anything else where no class or module of the project defines ``_name``
  (``model._orig_mod``, ``parser._actions``), and ``self._name`` in a class built on a
  dependency's class that never sets ``_name`` itself (``self._ot_trials`` in an
  ``OptunaSearch`` subclass), or ``super()._name`` there;
- a method of ours that overrides a private method of a dependency's base class (argparse's
  ``HelpFormatter._get_help_string``), found by importing the project's modules.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's packages, and the modules of its benchmarks and tests (imported by stem).
OWN = {"wbc", "study", "tests", "benchmarks"} | {
    p.stem for folder in ("benchmarks", "tests") for p in (ROOT / folder).rglob("*.py")}
# Documented public despite the underscore.
PUBLIC = {"os._exit", "sys._getframe"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if not any(p.startswith(".") or p in ("build", "dist") for p in parts):
            yield path


TREES = {path: ast.parse(path.read_text(), filename=str(path)) for path in _files()}


def _own_names() -> set[str]:
    """Every underscore name the project itself defines: functions, classes, attributes it
    assigns, class-level fields, module-level names."""
    names: set[str] = set()
    for tree in TREES.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return {n for n in names if _private(n)}


OWN_NAMES = _own_names()


def _dependency_roots(tree: ast.Module) -> dict[str, str]:
    """Local names bound to a dependency's module by the file's imports: name -> module."""
    roots = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in OWN:
                    local = alias.asname or alias.name.split(".")[0]
                    roots[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level \
                and node.module.split(".")[0] not in OWN:
            for alias in node.names:
                roots[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return roots


def _chain(node: ast.Attribute) -> tuple[str | None, list[str]]:
    """``a.b._c`` -> ("a", ["b", "_c"]); a chain not rooted at a name -> (None, [...])."""
    attrs = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        attrs.append(current.attr)
        current = current.value
    return (current.id if isinstance(current, ast.Name) else None), attrs[::-1]


def _violations(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    roots = _dependency_roots(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if isinstance(node, ast.ImportFrom) and (node.level or (module or "").split(".")[0]
                                                     in OWN):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}" if module else alias.name
                if full.split(".")[0] not in OWN and any(map(_private, full.split("."))):
                    yield node.lineno, module if module and any(
                        map(_private, module.split("."))) else full
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            root, attrs = _chain(node)
            if root in roots:  # rooted at a dependency: any private step is theirs
                written = f"{roots[root]}.{'.'.join(attrs)}"
                if written not in PUBLIC:
                    yield node.lineno, f"{root}.{'.'.join(attrs)}"
            elif root not in ("self", "cls") and node.attr not in OWN_NAMES \
                    and not _is_super(node.value):
                yield node.lineno, f".{node.attr}"
    yield from _inherited(tree)


def _is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
        and node.func.id == "super"


def _inherited(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``self._x`` in a class built on a dependency's class, where the class never sets
    ``_x`` itself and no class of the project defines it."""
    roots = _dependency_roots(tree)
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if not any(_chain(b)[0] in roots if isinstance(b, ast.Attribute)
                   else isinstance(b, ast.Name) and b.id in roots for b in cls.bases):
            continue
        own = {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute)
               and isinstance(n.ctx, ast.Store)}
        own |= {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        own |= {t.id for n in cls.body if isinstance(n, ast.Assign | ast.AnnAssign)
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Name)}
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and _private(node.attr) and _is_super(node.value):
                yield node.lineno, f"super().{node.attr}"  # the base's own, whatever we define
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "self" and _private(node.attr) and node.attr not in own:
                yield node.lineno, f"self.{node.attr}"


def _found() -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for path, tree in TREES.items():
        for line, name in _violations(path, tree):
            found.setdefault((str(path.relative_to(ROOT)), name), []).append(line)
    return found


def test_no_private_name_of_a_dependency_is_used() -> None:
    found = _found()
    new = {f"{file}:{lines[0]}: {name}" for (file, name), lines in found.items()}
    assert not new, ("private names of a dependency (use its public interface, or define the "
                     "name in the project): " + "; ".join(sorted(new)))


def _project_classes() -> Iterator[type]:
    for path in TREES:
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] not in ("wbc", "study") or parts[-1] == "__main__":
            continue
        module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
        yield from (value for value in vars(module).values() if isinstance(value, type)
                    and value.__module__ == module.__name__)


def test_no_private_hook_of_a_dependency_is_overridden() -> None:
    # A method of ours that a dependency's base class also has, under a private name, replaces
    # part of its implementation (argparse's HelpFormatter._get_help_string, say): found by
    # importing the project's modules, as no reading of the source can tell.
    overrides = sorted(
        f"{cls.__module__}.{cls.__qualname__}.{name}" for cls in _project_classes()
        for name, value in vars(cls).items() if _private(name) and callable(value) and any(
            hasattr(base, name) for base in cls.__mro__[1:]
            if base.__module__.split(".")[0] not in OWN))
    assert not overrides, f"private hooks of a dependency overridden: {overrides}"


def test_the_check_finds_each_kind() -> None:
    source = (
        "import argparse\nimport torch.nn as nn\nfrom ray._private import services\nfrom optuna import Study\n"
        "class S(Study):\n    def f(self):\n        return self._storage_x\n"
        "x = nn.modules.batchnorm._BatchNorm\ny = model._orig_mod_x\n"
        "class F(argparse.HelpFormatter):\n    def h(self):\n        return super()._fill_x()\n")
    found = {name for _, name in _violations(ROOT / "x.py", ast.parse(source))}
    assert found == {"ray._private", "nn.modules.batchnorm._BatchNorm", "._orig_mod_x",
                     "self._storage_x", "super()._fill_x"}
