"""The same image where a study must keep it apart: in training and in validation (or test), or
under two classes.

A leaked validation image inflates every figure; an image under two classes teaches both labels.
Files are compared by content (blake2b), but only files whose sizes collide are read, since files
of different sizes cannot be the same bytes; hard links are their inode's content, known without
reading. The subsets on disk (links or copies of WBC_100/train images) are training copies of
training images and so never a problem here.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wbc.datasets.files import Sample
from wbc.datasets.layout import CAM16_CLASSES, WBC_CLASSES
from wbc.datasets.problems import Problem

__all__ = ["content_keys", "duplicate_problems", "file_digest"]

# The order a study uses splits in: a copy is left out of every split but the last it is in, so
# validation and test (the yardstick) stay as they are.
_ROLES = ("train", "val", "test")


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes (160 bits: no accidental collision in any real data set)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=20)).hexdigest()


def content_keys(paths: Sequence[Path], *, workers: int | None = None) -> dict[Path, str]:
    """A key per readable file, equal for two files exactly when their bytes are: the digest for
    files whose size another file shares, the inode otherwise. Reading threads: hashing and file
    reads release the GIL."""
    inode_of: dict[Path, tuple[int, int]] = {}
    by_size: dict[int, dict[tuple[int, int], Path]] = defaultdict(dict)
    for path in dict.fromkeys(paths):
        try:
            stat = path.stat()
        except OSError:
            continue  # the decode check reports it
        inode_of[path] = (stat.st_dev, stat.st_ino)
        by_size[stat.st_size].setdefault(inode_of[path], path)
    todo = {inode: path for group in by_size.values() if len(group) > 1
            for inode, path in group.items()}
    threads = max(1, min(8, workers if workers is not None else (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = dict(zip(todo, pool.map(_digest_or_none, todo.values()), strict=True))
    keys: dict[Path, str] = {}
    for path, inode in inode_of.items():
        digest = digests.get(inode)
        keys[path] = digest if digest is not None else f"inode:{inode[0]}:{inode[1]}"
    return keys


def _digest_or_none(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def _place(group: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(dataset, role, classes) of a split name; None for unlabelled pRCC."""
    dataset, _, split = group.partition("/")
    if dataset.startswith("WBC_"):
        return "WBC", split, WBC_CLASSES
    if dataset == "CAM16":
        return "CAM16", split, CAM16_CLASSES
    return None


def duplicate_problems(samples: dict[str, list[Sample]], keys: dict[Path, str]) -> list[Problem]:
    """Errors for images whose bytes are in two splits, or under two classes, of one data set.

    Each names one file and the other copy; excluding it leaves out the training-side copies of
    a leak (all copies when the class is ambiguous).
    """
    copies: dict[tuple[str, str], dict[Path, tuple[str, int, str]]] = defaultdict(dict)
    classes: dict[str, tuple[str, ...]] = {}
    for group, members in samples.items():
        place = _place(group)
        if place is None:
            continue
        dataset, role, classes[dataset] = place
        for sample in members:
            key = keys.get(sample.path)
            if key is not None:
                copies[(dataset, key)].setdefault(sample.path, (role, sample.label, group))
    problems = []
    for (dataset, _), found in copies.items():
        if len(found) > 1:
            problem = _problem(found, classes[dataset])
            if problem is not None:
                problems.append(problem)
    return problems


def _problem(found: dict[Path, tuple[str, int, str]], classes: tuple[str, ...]
             ) -> Problem | None:
    labels = sorted({label for _, label, _ in found.values()})
    paths = sorted(found, key=lambda p: (_ROLES.index(found[p][0]), str(p)))
    if len(labels) > 1:
        names = ", ".join(classes[label] for label in labels)
        others = ", ".join(f"{p} ({found[p][2]})" for p in paths[1:])
        return Problem(paths[0], f"the same image is under {names}: also {others}; its class "
                                 "is ambiguous: keep one copy in the right class folder",
                       "error", excludes=tuple(paths))
    last = max(_ROLES.index(role) for role, _, _ in found.values())
    leaked = [p for p in paths if _ROLES.index(found[p][0]) < last]
    if not leaked:
        return None
    kept = next(p for p in paths if _ROLES.index(found[p][0]) == last)
    more = f" (and {len(leaked) - 1} more cop{'y' if len(leaked) == 2 else 'ies'} in "\
           f"{', '.join(sorted({found[p][2] for p in leaked[1:]}))})" if len(leaked) > 1 else ""
    return Problem(leaked[0], f"the same image as {kept} in {found[kept][2]}{more}: an image "
                              f"scored in {found[kept][2]} must not be trained or selected on; "
                              "remove the copy", "error", excludes=tuple(leaked))
