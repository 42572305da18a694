"""The pRCC part of a tree: unlabelled tissue images at any depth (mask folders skipped)."""

from __future__ import annotations

from pathlib import Path

from wbc.datasets.files import MASK_DIRS, Sample, find_dir, find_images
from wbc.datasets.problems import Problem

__all__ = ["scan_prcc", "scan_prcc_dir"]


def scan_prcc(root: Path, problems: list[Problem]) -> list[Sample] | None:
    """The pRCC samples (label -1); None when the tree has no pRCC folder."""
    prcc_dir = find_dir(root, ["pRCC"], problems)
    if prcc_dir is None:
        return None
    return scan_prcc_dir(prcc_dir, problems)


def scan_prcc_dir(prcc_dir: Path, problems: list[Problem]) -> list[Sample]:
    """The images of a folder in pRCC's layout (any depth, mask folders skipped), label -1,
    wherever it lies and whatever its name."""
    mask_dirs = {d.lower() for d in MASK_DIRS}
    images = [p for p in find_images(prcc_dir, problems)
              if not mask_dirs.intersection(part.lower()
                                            for part in p.relative_to(prcc_dir).parts)]
    if not images:
        problems.append(Problem(prcc_dir, "pRCC holds no images", "warning"))
    return [Sample(p, -1) for p in images]
