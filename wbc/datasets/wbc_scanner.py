"""The WBC part of a tree: ``WBC_100`` (train, val, optional test) and the label budgets
``WBC_<p>/train`` on disk, or derived from WBC_100 when they are not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wbc.datasets.files import Sample, children, find_splits, scan_labelled_split
from wbc.datasets.layout import WBC_CLASSES, subset_name, subset_percent
from wbc.datasets.problems import Problem
from wbc.datasets.subsets import derive_subsets
from wbc.datasets.tree import Split, WbcSplits

__all__ = [
    "check_required_classes",
    "derive_missing",
    "labels_before_exclusion",
    "scan_wbc",
    "wbc_splits",
]

Groups = dict[str, list[Sample]]


def _subset_dirs(root: Path, problems: list[Problem]) -> dict[int, Path]:
    subsets: dict[int, Path] = {}
    for child in children(root, problems):
        percent = subset_percent(child.name) if child.is_dir() else None
        if percent is None:
            continue
        if percent in subsets:
            problems.append(
                Problem(child, f"a second folder for {subset_name(percent)} beside "
                               f"{subsets[percent].name}; keep one", "error")
            )
            continue
        subsets[percent] = child
    return subsets


def scan_wbc(root: Path, problems: list[Problem]) -> tuple[Groups, set[int]]:
    """The WBC samples by ``"WBC_<p>/<split>"``, and the label budgets on disk."""
    samples: Groups = {}
    subset_dirs = _subset_dirs(root, problems)
    if 100 not in subset_dirs:
        problems.append(
            Problem(root / "WBC_100", "missing WBC_100 (the full training set with its val split); "
                                      "every subset is validated on WBC_100's val", "error")
        )
    for percent, subset_dir in sorted(subset_dirs.items(), reverse=True):
        name = subset_name(percent)
        splits = find_splits(subset_dir, problems)
        wanted = ("train", "val") if percent == 100 else ("train",)
        for split in wanted:
            if split not in splits:
                problems.append(
                    Problem(subset_dir / split, f"missing split {name}/{split}"
                            + (" (also accepted: 'validation')" if split == "val" else ""), "error")
                )
        for split, split_dir in splits.items():
            if percent != 100 and split != "train":
                problems.append(
                    Problem(split_dir, f"{name} is a training subset; its '{split_dir.name}' "
                                       "folder is ignored (validation uses WBC_100's val)",
                            "warning")
                )
                continue
            listed = len(problems)
            samples[f"{name}/{split}"] = found = scan_labelled_split(
                split_dir, WBC_CLASSES, problems, kind=f"{name}/{split}",
                required_classes=percent == 100 and split in ("train", "val"),
            )
            if not found and percent != 100 and not any(p.severity == "error"
                                                        for p in problems[listed:]):
                # Empty classes are warnings in a subset, but an empty subset is an error: a run
                # on it would train on nothing and still report figures.
                problems.append(Problem(split_dir, f"{name}/{split} holds no images; a run on "
                                        "it would train on nothing: add its images, or remove "
                                        "the folder to have it drawn from WBC_100/train",
                                        "error"))
    return samples, set(subset_dirs)


def labels_before_exclusion(samples: Groups) -> dict[str, set[int]]:
    """The classes of each WBC split, taken before exclusions for ``check_required_classes``."""
    return {k: {s.label for s in group} for k, group in samples.items() if k.startswith("WBC_")}


def check_required_classes(before: dict[str, set[int]], samples: Groups, root: Path,
                           problems: list[Problem]) -> None:
    """WBC_100's train and val must still hold every class that exclusions emptied, and a
    training subset that held images must still hold some."""
    for split, labels_before in before.items():
        present = {s.label for s in samples.get(split, [])}
        if split in ("WBC_100/train", "WBC_100/val"):
            for label in sorted(labels_before - present):
                problems.append(
                    Problem(root / split, f"no usable images of {WBC_CLASSES[label]} left in "
                                          f"{split} after exclusions; training needs every class "
                                          "here", "error")
                )
        elif split.endswith("/train") and labels_before and not present:
            problems.append(Problem(root / split, f"no usable images left in {split} after "
                                                  "exclusions; a run on it would train on "
                                                  "nothing", "error"))


def derive_missing(samples: Groups, on_disk: set[int], derive: Sequence[int], seed: int
                   ) -> dict[int, int]:
    """Draw the label budgets in ``derive`` that are not on disk from WBC_100/train (adding
    them to ``samples``); percent -> the seed each was drawn with."""
    full = samples.get("WBC_100/train")
    missing = [p for p in derive if p not in on_disk and p != 100]
    if not missing or not full:
        return {}
    drawn = derive_subsets([s.label for s in full], [s.mask is not None for s in full], missing,
                           seed=seed)
    for percent, indices in drawn.items():
        samples[f"{subset_name(percent)}/train"] = [full[i] for i in indices]
    return dict.fromkeys(drawn, seed)


def wbc_splits(samples: Groups, derived: dict[int, int]) -> WbcSplits:
    """The typed WBC splits from the samples by name."""
    train: dict[int, tuple[Sample, ...]] = {}
    for name, group in samples.items():
        dataset, split = name.split("/")
        percent = subset_percent(dataset)
        if percent is not None and split == "train":
            train[percent] = tuple(group)
    names: tuple[Split, ...] = ("train", "val", "test")
    found = tuple(s for s in names if f"WBC_100/{s}" in samples)
    return WbcSplits(train=dict(sorted(train.items(), reverse=True)),
                     val=tuple(samples.get("WBC_100/val", ())),
                     test=tuple(samples.get("WBC_100/test", ())), found=found, derived=derived)
