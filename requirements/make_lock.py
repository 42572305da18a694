"""Write ``requirements/lock.txt``: every distribution the project needs, at the version this
environment has, for ``pip install -c requirements/lock.txt -e '.[dev]'``.

The set is the dependency closure of the project with its ``dev`` extra, walked from the
installed metadata (markers evaluated for this machine), so packages that happen to be installed
but that nothing here needs stay out. Local version labels (``+cu130``) are dropped: pip matches
``torch==2.14.1`` to the CUDA build on the index the install uses.

    python requirements/make_lock.py          # after pip install -e '.[dev]'
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "wbc-study"
OUT = Path(__file__).with_name("lock.txt")


def _closure(root: str, extras: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if key != canonicalize_name(root):
            found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            try:
                metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                sys.exit(f"{req.name} (needed by {name}) is not installed: run pip install -e "
                         "'.[dev]' first")
            todo.append((req.name, frozenset(req.extras)))
    return found


def main() -> None:
    pins = _closure(PROJECT, {"dev"})
    lines = [f"{name}=={re.sub(r'[+].*$', '', version)}" for name, version in sorted(pins.items())]
    header = ("# The full dependency set of wbc-study[dev], pinned: CI and cluster.yaml install "
              "with\n# pip install -c requirements/lock.txt -e '.[dev]'. Regenerate with\n"
              "# python requirements/make_lock.py after changing pyproject.toml.\n")
    OUT.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {OUT}: {len(lines)} pins")


if __name__ == "__main__":
    main()
