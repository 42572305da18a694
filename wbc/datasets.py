"""Find, validate and describe a dataset tree in the report's layout.

``scan_tree(root)`` walks ``ROOT/WBC_*``, ``ROOT/CAM16`` and ``ROOT/pRCC``, pairs masks with images
by file stem, decodes every distinct file once to prove it readable, and returns a ``Tree``: the
samples of every split plus the problems found, each naming a file and a reason.

Policy for problems:

- ``error`` problems would break training (an unreadable, truncated, zero-byte or non-image
  file; a mask whose size differs from its image; an unknown class folder; a missing split; a
  class with no images in WBC_100's train or val). They make the tree unusable.
- ``warning`` problems are reported and otherwise harmless (a mask without an image, an empty
  class folder in a subset, a file that is not an image type).
- With ``exclude_bad=True`` every error about particular files is resolved by leaving those
  files out (an image with its mask; a bad mask alone, keeping its image). The excluded files
  are listed in ``Tree.excluded`` and counted wherever the tree's data is used downstream.
  Structural errors (a missing split) cannot be excluded.

WBC subsets that are not on disk (for example WBC_50/10/1 beside a lone WBC_100) are derived by
``wbc.subsets.derive_subsets`` with ``subset_seed``; subsets that are on disk are used as they are.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from wbc.imageio import ImageError, ImageInfo, inspect_image
from wbc.layout import (
    CAM16_CLASSES,
    IMAGE_SUFFIXES,
    SUBSET_PERCENTS,
    WBC_CLASSES,
    canonical_class,
    subset_name,
    subset_percent,
)
from wbc.subsets import derive_subsets

__all__ = [
    "DatasetError",
    "Problem",
    "Sample",
    "Tree",
    "class_counts",
    "exclude_problem_files",
    "find_class_folders",
    "find_images",
    "pair_masks",
    "problems_from_decoding",
    "scan_tree",
    "verify_files",
]

Severity = Literal["error", "warning"]

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
DATA_DIRS = ("data", "images", "image")
MASK_DIRS = ("mask", "masks")


class DatasetError(Exception):
    """A user-facing problem with a path given on the command line (not a file inside a tree)."""


@dataclass(frozen=True)
class Sample:
    """One image of a split: its file, its class index (-1 when unlabelled) and its mask file."""

    path: Path
    label: int
    mask: Path | None = None


@dataclass(frozen=True)
class Problem:
    """Something wrong with a file or folder, said so that a user can act on it."""

    path: Path
    reason: str
    severity: Severity = "error"
    # The samples whose image (or, for a bad mask, whose mask) excluding this problem removes.
    excludes: tuple[Path, ...] = ()

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.reason}"


@dataclass(frozen=True)
class Tree:
    """A scanned tree: samples per split, problems, exclusions and derived subsets.

    ``wbc`` maps ``"WBC_100/train"``, ``"WBC_100/val"``, ``"WBC_50/train"``, ... to samples;
    ``cam16`` maps ``"train"``, ``"val"``, ``"test"``; ``prcc`` is unlabelled (label -1).
    """

    root: Path
    wbc: dict[str, tuple[Sample, ...]]
    cam16: dict[str, tuple[Sample, ...]]
    prcc: tuple[Sample, ...]
    derived: dict[str, int] = field(default_factory=dict)  # split name -> seed it was drawn with
    problems: tuple[Problem, ...] = ()
    excluded: tuple[Problem, ...] = ()
    verified: bool = True

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def usable(self) -> bool:
        """True when training can run on this tree as it stands (after any exclusions)."""
        return not self.errors

    @property
    def excluded_files(self) -> tuple[Path, ...]:
        files: dict[Path, None] = {}
        for problem in self.excluded:
            for path in problem.excludes or (problem.path,):
                files[path] = None
        return tuple(files)

    def subsets(self) -> list[int]:
        """The WBC subset percents present (on disk or derived), largest first."""
        found = {subset_percent(name.split("/")[0]) for name in self.wbc}
        return sorted((p for p in found if p is not None), reverse=True)

    def all_samples(self) -> Iterable[Sample]:
        for group in (*self.wbc.values(), *self.cam16.values(), self.prcc):
            yield from group


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in ("Thumbs.db", "__MACOSX")


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not _is_hidden(p))
    except OSError:
        return []


def find_images(folder: Path, problems: list[Problem] | None = None) -> list[Path]:
    """Image files below ``folder`` at any depth, sorted; other files become warnings."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(Path(d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if _is_hidden(path):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
            elif problems is not None:
                problems.append(
                    Problem(path, "not an image file type; ignored", "warning")
                )
    return found


def find_class_folders(
    folder: Path, classes: tuple[str, ...], problems: list[Problem], *, kind: str
) -> dict[str, list[Path]]:
    """Class name -> folders spelling it (``Eosinophils``, ``eosinophil`` ...) under ``folder``.

    Files lying directly in ``folder`` and folders naming no known class become problems.
    """
    by_class: dict[str, list[Path]] = defaultdict(list)
    for child in _children(folder):
        if child.is_dir():
            name = canonical_class(child.name, classes)
            if name is None:
                count = len(find_images(child))
                problems.append(
                    Problem(
                        child,
                        f"unknown class folder '{child.name}' in {kind} ({count} images); "
                        f"expected one of {', '.join(classes)} (any case, singular or plural)",
                        "error" if count else "warning",
                        excludes=tuple(find_images(child)),
                    )
                )
            else:
                by_class[name].append(child)
        elif child.suffix.lower() in IMAGE_SUFFIXES:
            problems.append(
                Problem(child, f"image outside any class folder of {kind}; ignored", "warning")
            )
    return by_class


def pair_masks(
    images: Sequence[Path], masks: Sequence[Path], problems: list[Problem]
) -> dict[Path, Path]:
    """Image -> its mask, matched by file stem; a mask with no image becomes a warning."""
    by_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in by_stem:
            problems.append(
                Problem(
                    image,
                    f"two images share the stem '{image.stem}' (also {by_stem[image.stem].name});"
                    " a mask pairs with the first",
                    "warning",
                )
            )
            continue
        by_stem[image.stem] = image
    paired: dict[Path, Path] = {}
    for mask in masks:
        match = by_stem.get(mask.stem)
        if match is None:
            problems.append(
                Problem(mask, "mask without image (no image with this file stem); ignored",
                        "warning")
            )
        else:
            paired[match] = mask
    return paired


def _find_dir(parent: Path, names: Iterable[str]) -> Path | None:
    wanted = {n.lower() for n in names}
    for child in _children(parent):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    return None


def _find_splits(dataset_dir: Path, problems: list[Problem]) -> dict[str, Path]:
    splits: dict[str, Path] = {}
    for child in _children(dataset_dir):
        if not child.is_dir():
            continue
        split = SPLIT_ALIASES.get(child.name.lower())
        if split is None:
            continue
        if split in splits:
            problems.append(
                Problem(child, f"a second '{split}' split beside {splits[split].name}; "
                               "merge or remove one", "error")
            )
            continue
        splits[split] = child
    return splits


def _scan_labelled_split(
    split_dir: Path,
    classes: tuple[str, ...],
    problems: list[Problem],
    *,
    kind: str,
    required_classes: bool,
) -> list[Sample]:
    data_dir = _find_dir(split_dir, DATA_DIRS)
    if data_dir is None:
        problems.append(
            Problem(split_dir, f"missing split folder '{split_dir.name}/data' "
                               f"(expected {kind}/data/<Class>/<image>)", "error")
        )
        return []
    image_folders = find_class_folders(data_dir, classes, problems, kind=kind)
    mask_dir = _find_dir(split_dir, MASK_DIRS)
    mask_folders = (
        find_class_folders(mask_dir, classes, problems, kind=f"{kind} masks")
        if mask_dir is not None
        else {}
    )
    samples: list[Sample] = []
    for label, cls in enumerate(classes):
        images = [p for folder in image_folders.get(cls, []) for p in find_images(folder, problems)]
        masks = [p for folder in mask_folders.get(cls, []) for p in find_images(folder, problems)]
        if not images and (cls in image_folders or required_classes):
            where = image_folders[cls][0] if cls in image_folders else data_dir / cls
            problems.append(
                Problem(
                    where,
                    f"empty class: no images of {cls} in {kind}"
                    + ("; training needs every class here" if required_classes else ""),
                    "error" if required_classes else "warning",
                )
            )
        paired = pair_masks(images, masks, problems)
        samples.extend(Sample(image, label, paired.get(image)) for image in images)
    return samples


def _verify_one(path: Path) -> tuple[Path, ImageInfo | str]:
    try:
        return path, inspect_image(path)
    except ImageError as err:
        return path, err.reason


def verify_files(paths: Sequence[Path], *, workers: int | None = None) -> dict[Path, ImageInfo | str]:
    """Fully decode each distinct file once (hard links count once); reason strings for failures."""
    unique: dict[tuple[int, int] | Path, Path] = {}
    key_of: dict[Path, tuple[int, int] | Path] = {}
    for path in paths:
        try:
            stat = path.stat()
            key: tuple[int, int] | Path = (stat.st_dev, stat.st_ino)
        except OSError:
            key = path
        key_of[path] = key
        unique.setdefault(key, path)
    todo = list(unique.values())
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers > 1 and len(todo) > 64:
        chunk = max(16, len(todo) // (workers * 8))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = dict(pool.map(_verify_one, todo, chunksize=chunk))
    else:
        results = dict(map(_verify_one, todo))
    return {path: results[unique[key_of[path]]] for path in paths}


def _wbc_subset_dirs(root: Path, problems: list[Problem]) -> dict[int, Path]:
    subsets: dict[int, Path] = {}
    for child in _children(root):
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


def _find_named(root: Path, name: str) -> Path | None:
    return _find_dir(root, [name])


def problems_from_decoding(
    samples: dict[str, list[Sample]],
    results: dict[Path, ImageInfo | str],
    problems: list[Problem],
) -> None:
    """Turn decode failures and size mismatches into problems (each file reported once)."""
    reported: set[Path] = set()
    for group in samples.values():
        for sample in group:
            info = results.get(sample.path)
            if isinstance(info, str):
                if sample.path not in reported:
                    reported.add(sample.path)
                    excludes = (sample.path,) + ((sample.mask,) if sample.mask else ())
                    problems.append(Problem(sample.path, info, "error", excludes=excludes))
                continue
            if sample.mask is None or sample.mask in reported:
                continue
            mask_info = results.get(sample.mask)
            if isinstance(mask_info, str):
                reported.add(sample.mask)
                problems.append(
                    Problem(sample.mask, f"bad mask: {mask_info}", "error", excludes=(sample.mask,))
                )
            elif info is not None and mask_info is not None and (
                (mask_info.width, mask_info.height) != (info.width, info.height)
            ):
                reported.add(sample.mask)
                problems.append(
                    Problem(
                        sample.mask,
                        f"mask is {mask_info.width}x{mask_info.height} but its image "
                        f"{sample.path.name} is {info.width}x{info.height}",
                        "error",
                        excludes=(sample.mask,),
                    )
                )


def exclude_problem_files(
    samples: dict[str, list[Sample]], problems: list[Problem]
) -> tuple[list[Problem], list[Problem]]:
    """Leave out the files named by excludable errors; returns (remaining, excluded)."""
    excluded = [p for p in problems if p.severity == "error" and p.excludes]
    remaining = [p for p in problems if not (p.severity == "error" and p.excludes)]
    drop = {path for p in excluded for path in p.excludes}
    for name, group in samples.items():
        kept: list[Sample] = []
        for sample in group:
            if sample.path in drop:
                continue
            if sample.mask is not None and sample.mask in drop:
                sample = replace(sample, mask=None)
            kept.append(sample)
        samples[name] = kept
    return remaining, excluded


def _check_required_classes(
    before: dict[str, set[int]], samples: dict[str, list[Sample]], root: Path,
    problems: list[Problem],
) -> None:
    """WBC_100's train and val must still hold every class that exclusions emptied."""
    for split, labels_before in before.items():
        present = {s.label for s in samples.get(split, [])}
        for label in sorted(labels_before - present):
            problems.append(
                Problem(root / split, f"no usable images of {WBC_CLASSES[label]} left in {split} "
                                      "after exclusions; training needs every class here", "error")
            )


def scan_tree(
    root: Path | str,
    *,
    verify: bool = True,
    exclude_bad: bool = False,
    subset_seed: int = 0,
    derive: Sequence[int] = SUBSET_PERCENTS[1:],
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Tree:
    """Scan ``root`` (see the module docstring). Raises ``DatasetError`` if it is not a folder.

    ``verify=False`` skips decoding (structure and pairing only, no size checks): for quick
    listings; training always uses a verified tree.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; give the dataset root (the folder holding "
                           "WBC_100/), or make one with `wbc synth` or `wbc import`")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give the dataset root (the folder holding "
                           "WBC_100/)")
    problems: list[Problem] = []
    samples: dict[str, list[Sample]] = {}

    subset_dirs = _wbc_subset_dirs(root, problems)
    if 100 not in subset_dirs:
        problems.append(
            Problem(root / "WBC_100", "missing WBC_100 (the full training set with its val split); "
                                      "every subset is validated on WBC_100's val", "error")
        )
    for percent, subset_dir in sorted(subset_dirs.items(), reverse=True):
        name = subset_name(percent)
        splits = _find_splits(subset_dir, problems)
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
            samples[f"{name}/{split}"] = _scan_labelled_split(
                split_dir, WBC_CLASSES, problems, kind=f"{name}/{split}",
                required_classes=percent == 100 and split in ("train", "val"),
            )

    cam16_dir = _find_named(root, "CAM16")
    cam16_names: list[str] = []
    if cam16_dir is not None:
        splits = _find_splits(cam16_dir, problems)
        for split in ("train", "val"):
            if split not in splits:
                problems.append(
                    Problem(cam16_dir / split, f"missing split CAM16/{split}", "error")
                )
        for split, split_dir in splits.items():
            key = f"CAM16/{split}"
            cam16_names.append(key)
            samples[key] = _scan_labelled_split(
                split_dir, CAM16_CLASSES, problems, kind=key,
                required_classes=split in ("train", "val"),
            )

    prcc_dir = _find_named(root, "pRCC")
    if prcc_dir is not None:
        mask_dirs = {d.lower() for d in MASK_DIRS}
        prcc_images = [
            p for p in find_images(prcc_dir, problems)
            if not mask_dirs.intersection(part.lower() for part in p.relative_to(prcc_dir).parts)
        ]
        if not prcc_images:
            problems.append(Problem(prcc_dir, "pRCC holds no images", "warning"))
        samples["pRCC"] = [Sample(p, -1) for p in prcc_images]

    if progress is not None:
        count = sum(len(g) for g in samples.values())
        progress(f"found {count} images in {root}")
    if verify:
        files = [p for g in samples.values() for s in g for p in (s.path, s.mask) if p is not None]
        problems_from_decoding(samples, verify_files(files, workers=workers), problems)

    excluded: list[Problem] = []
    if exclude_bad:
        before: dict[str, set[int]] = {
            k: {s.label for s in samples[k]} for k in ("WBC_100/train", "WBC_100/val")
            if k in samples}
        problems, excluded = exclude_problem_files(samples, problems)
        _check_required_classes(before, samples, root, problems)

    derived: dict[str, int] = {}
    if "WBC_100/train" in samples:
        full = samples["WBC_100/train"]
        missing = [p for p in derive if p not in subset_dirs and p != 100]
        if missing and full:
            drawn = derive_subsets(
                [s.label for s in full], [s.mask is not None for s in full], missing,
                seed=subset_seed,
            )
            for percent, indices in drawn.items():
                key = f"{subset_name(percent)}/train"
                samples[key] = [full[i] for i in indices]
                derived[key] = subset_seed

    split_rank = {"train": 0, "val": 1, "test": 2}

    def order(name: str) -> tuple[int, int]:
        dataset, split = name.split("/")
        return (-(subset_percent(dataset) or 0), split_rank[split])

    wbc = {k: tuple(samples[k]) for k in sorted(
        (k for k in samples if k.startswith("WBC_")), key=order)}
    cam16 = {k.split("/")[1]: tuple(samples[k]) for k in sorted(cam16_names, key=order)}
    return Tree(
        root=root,
        wbc=wbc,
        cam16=cam16,
        prcc=tuple(samples.get("pRCC", ())),
        derived=derived,
        problems=tuple(problems),
        excluded=tuple(excluded),
        verified=verify,
    )


def class_counts(samples: Sequence[Sample], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class image and mask counts of a split."""
    data = np.zeros(n_classes, dtype=np.int64)
    mask = np.zeros(n_classes, dtype=np.int64)
    for sample in samples:
        if 0 <= sample.label < n_classes:
            data[sample.label] += 1
            mask[sample.label] += sample.mask is not None
    return data, mask
