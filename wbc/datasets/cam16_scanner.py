"""The CAM16 part of a tree: tumour and normal patches in train, val and an optional test."""

from __future__ import annotations

from pathlib import Path

from wbc.datasets.files import Sample, find_dir, find_splits, scan_labelled_split
from wbc.datasets.layout import CAM16_CLASSES
from wbc.datasets.problems import Problem
from wbc.datasets.tree import Cam16Splits, Split

__all__ = ["cam16_splits", "scan_cam16", "scan_cam16_dir"]


def scan_cam16(root: Path, problems: list[Problem]) -> dict[str, list[Sample]]:
    """The CAM16 samples by ``"CAM16/<split>"``; none when the tree has no CAM16 folder."""
    cam16_dir = find_dir(root, ["CAM16"], problems)
    if cam16_dir is None:
        return {}
    return scan_cam16_dir(cam16_dir, problems)


def scan_cam16_dir(cam16_dir: Path, problems: list[Problem]) -> dict[str, list[Sample]]:
    """The samples of a folder in CAM16's layout (``train``, ``val``, ``test``), by
    ``"CAM16/<split>"``, wherever it lies and whatever its name."""
    samples: dict[str, list[Sample]] = {}
    splits = find_splits(cam16_dir, problems)
    for split in ("train", "val"):
        if split not in splits:
            problems.append(Problem(cam16_dir / split, f"missing split CAM16/{split}", "error"))
    for split in sorted(splits, key=("train", "val", "test").index):
        key = f"CAM16/{split}"
        samples[key] = scan_labelled_split(splits[split], CAM16_CLASSES, problems, kind=key,
                                           required_classes=split in ("train", "val"))
    return samples


def cam16_splits(samples: dict[str, list[Sample]]) -> Cam16Splits:
    """The typed CAM16 splits from the samples by name."""
    names: tuple[Split, ...] = ("train", "val", "test")
    found = tuple(s for s in names if f"CAM16/{s}" in samples)
    return Cam16Splits(train=tuple(samples.get("CAM16/train", ())),
                       val=tuple(samples.get("CAM16/val", ())),
                       test=tuple(samples.get("CAM16/test", ())), found=found)
