"""CAM16 and pRCC kept outside the WBC tree: the histology the pretraining strategies need.

Real WBC sets (``wbc import``) hold no histology; users keep CAM16 and pRCC elsewhere.
``with_histology(tree, cam16=FOLDER)`` scans a folder that either is CAM16's layout
(``FOLDER/{train,val,test}/data/{normal,tumor}/...``) or holds it (``FOLDER/CAM16/...``), proves
its files readable as ``scan_tree`` does the tree's own (decoding each once; duplicates across
its splits), and returns the tree with those samples in place of its own CAM16. pRCC likewise
(``FOLDER/train/data/...`` or ``FOLDER/pRCC/...``, images at any depth). A given folder always
wins over the tree's own, whose problems then no longer count. ``histology_origin`` says where a
tree's CAM16 or pRCC came from and whether it is synthetic (``wbc synth`` writes ``synth.json``
at the root of the tree it makes) or real.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from wbc.datasets.cam16_scanner import cam16_splits, scan_cam16_dir
from wbc.datasets.duplicates import content_keys, duplicate_problems
from wbc.datasets.files import (
    Sample,
    exclude_problem_files,
    find_dir,
    find_splits,
    problems_from_decoding,
    verify_files,
)
from wbc.datasets.layout import CAM16_CLASSES
from wbc.datasets.prcc_scanner import scan_prcc_dir
from wbc.datasets.problems import DatasetError, Problem
from wbc.datasets.tree import Tree

__all__ = ["CAM16_LAYOUT", "PRCC_LAYOUT", "histology_dir", "histology_origin", "with_histology"]

Histology = Literal["CAM16", "pRCC"]
CAM16_LAYOUT = "CAM16/{train,val,test}/data/{normal,tumor}/<image> (test optional)"
PRCC_LAYOUT = "pRCC/train/data/.../<image> (any depth)"
_LAYOUT = {"CAM16": CAM16_LAYOUT, "pRCC": PRCC_LAYOUT}


def _expected(dataset: Histology) -> str:
    return f"give a folder that holds {_LAYOUT[dataset]}, or is that layout itself"


def histology_dir(folder: Path | str, dataset: Histology) -> Path:
    """The folder in ``dataset``'s layout that ``folder`` is or holds; ``DatasetError``
    naming the folder and the layout expected when it is neither."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DatasetError(f"{dataset} folder {folder} {what}; {_expected(dataset)}")
    inner = find_dir(folder, [dataset])
    if inner is not None:
        return inner
    if dataset == "CAM16" and "train" in find_splits(folder, []):
        return folder
    if dataset == "pRCC" and find_dir(folder, ["train"]) is not None:
        return folder
    raise DatasetError(f"{dataset} folder {folder} holds no {dataset}: neither a {dataset}/ "
                       f"folder nor a train/ split in it; {_expected(dataset)}")


def _verified(samples: dict[str, list[Sample]], problems: list[Problem], *, labelled: bool,
              exclude_bad: bool, workers: int | None) -> tuple[list[Problem], list[Problem]]:
    """Decode every file once (and, for labelled sets, find copies across splits); with
    ``exclude_bad`` the bad files are left out of ``samples``: (problems, excluded)."""
    files = [p for group in samples.values() for s in group for p in (s.path, s.mask)
             if p is not None]
    problems_from_decoding(samples, verify_files(files, workers=workers), problems)
    if labelled:
        images = [s.path for group in samples.values() for s in group]
        problems += duplicate_problems(samples, content_keys(images, workers=workers))
    if exclude_bad:
        return exclude_problem_files(samples, problems)
    return problems, []


def _outside(problems: tuple[Problem, ...], root: Path, dataset: Histology) -> list[Problem]:
    """The problems not about the tree's own ``dataset`` folder (a given folder replaces it)."""
    def inside(path: Path) -> bool:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            return False
        return bool(parts) and parts[0].lower() == dataset.lower()

    return [p for p in problems if not inside(p.path)]


def with_histology(tree: Tree, *, cam16: Path | str | None = None,
                   prcc: Path | str | None = None, exclude_bad: bool = False,
                   workers: int | None = None) -> Tree:
    """``tree`` with its CAM16 (pRCC) taken from the folder ``cam16`` (``prcc``) when given
    (see the module docstring). ``DatasetError`` names a folder that does not exist, is not
    the layout, or has no CAM16 train and val images (no pRCC images)."""
    problems, excluded = list(tree.problems), list(tree.excluded)
    changes: dict[str, Any] = {}
    if cam16 is not None:
        folder = histology_dir(cam16, "CAM16")
        found: list[Problem] = []
        samples = scan_cam16_dir(folder, found)
        found, dropped = _verified(samples, found, labelled=True, exclude_bad=exclude_bad,
                                   workers=workers)
        splits = cam16_splits(samples)
        if not splits.train or not splits.val:
            split = "train" if not splits.train else "val"
            found_errors = [f"{p.path}: {p.reason}" for p in found if p.severity == "error"]
            raise DatasetError(f"CAM16 folder {cam16}: no {split} images in {folder} "
                               f"(pretraining needs train and val, each with data/"
                               f"{{{','.join(CAM16_CLASSES)}}}/<image>"
                               + "".join(f"; {e}" for e in found_errors[:1])
                               + f"); {_expected('CAM16')}")
        problems, excluded = _outside(tuple(problems), tree.root, "CAM16"), _outside(
            tuple(excluded), tree.root, "CAM16")
        problems += found
        excluded += dropped
        changes.update(cam16=splits, cam16_source=folder)
    if prcc is not None:
        folder = histology_dir(prcc, "pRCC")
        found = []
        images = {"pRCC": scan_prcc_dir(folder, found)}
        found, dropped = _verified(images, found, labelled=False, exclude_bad=exclude_bad,
                                   workers=workers)
        if not images["pRCC"]:
            raise DatasetError(f"pRCC folder {prcc}: no images in {folder}; "
                               f"{_expected('pRCC')}")
        problems = _outside(tuple(problems), tree.root, "pRCC") + found
        excluded = _outside(tuple(excluded), tree.root, "pRCC") + dropped
        changes.update(prcc=tuple(images["pRCC"]), prcc_source=folder)
    return replace(tree, problems=tuple(problems), excluded=tuple(excluded), **changes)


def histology_origin(tree: Tree, dataset: str) -> dict[str, Any]:
    """Where ``tree``'s CAM16 or pRCC came from, for the record: ``source`` ("folder", given
    apart from the tree, or "tree"), its folder, ``kind`` ("synthetic" when the tree it lies in
    was made by ``wbc synth``, which leaves ``synth.json`` at its root; "real" otherwise) and
    its image counts (per split and class for CAM16). Empty when the tree has none."""
    if dataset == "CAM16":
        splits = tree.cam16
        if not splits.train and not splits.val:
            return {}
        given, folder = tree.cam16_source is not None, tree.cam16_dir
        counts: dict[str, Any] = {
            split: {cls: sum(s.label == i for s in group) for i, cls in enumerate(CAM16_CLASSES)}
            for split, group in splits.groups()}
        images = sum(len(group) for _, group in splits.groups())
    elif dataset == "pRCC":
        if not tree.prcc:
            return {}
        given, folder = tree.prcc_source is not None, tree.prcc_dir
        counts, images = {"train": len(tree.prcc)}, len(tree.prcc)
    else:
        raise ValueError(f"histology {dataset!r} is not one of: CAM16, pRCC")
    synthetic = any((place / "synth.json").is_file() for place in (folder, folder.parent))
    return {"source": "folder" if given else "tree", "root": str(folder),
            "kind": "synthetic" if synthetic else "real", "images": images, "counts": counts}
