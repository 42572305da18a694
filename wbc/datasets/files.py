"""Files of a tree: images and masks found and paired, decoded to prove them readable, and the
problems that decoding finds turned into ``Problem`` lines (or files left out)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from wbc.datasets.imageio import ImageError, ImageInfo, inspect_image
from wbc.datasets.layout import IMAGE_SUFFIXES, canonical_class
from wbc.datasets.problems import Problem

__all__ = [
    "DATA_DIRS",
    "MASK_DIRS",
    "SPLIT_ALIASES",
    "UNREADABLE_FOLDER",
    "Sample",
    "children",
    "exclude_problem_files",
    "find_class_folders",
    "find_dir",
    "find_images",
    "find_splits",
    "pair_masks",
    "problems_from_decoding",
    "scan_labelled_split",
    "verify_files",
]

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
UNREADABLE_FOLDER = "unreadable folder"


@dataclass(frozen=True)
class Sample:
    """One image of a split: its file, its class index (-1 when unlabelled) and its mask file."""

    path: Path
    label: int
    mask: Path | None = None


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in ("Thumbs.db", "__MACOSX")


def _unreadable(err: OSError, folder: Path, problems: list[Problem] | None) -> None:
    """A folder that cannot be listed is an error: its images would silently go missing."""
    if problems is None:
        return
    problem = Problem(Path(err.filename or folder),
                      f"{UNREADABLE_FOLDER} ({err.strerror or err}); its images cannot be "
                      "counted or used: fix its permissions", "error")
    if problem not in problems:  # a folder listed twice (images, then masks) is said once
        problems.append(problem)


def children(folder: Path, problems: list[Problem] | None = None) -> list[Path]:
    """The entries of ``folder``, hidden ones left out; an unlisted folder becomes an error."""
    try:
        return sorted(p for p in folder.iterdir() if not _is_hidden(p))
    except OSError as err:
        _unreadable(err, folder, problems)
        return []


def find_images(folder: Path, problems: list[Problem] | None = None) -> list[Path]:
    """Image files below ``folder`` at any depth, sorted; other files become warnings and
    folders that cannot be listed errors."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(
            folder, onerror=lambda err: _unreadable(err, folder, problems)):
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
    for child in children(folder, problems):
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


def find_dir(parent: Path, names: Iterable[str], problems: list[Problem] | None = None
             ) -> Path | None:
    wanted = {n.lower() for n in names}
    for child in children(parent, problems):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    return None


def find_splits(dataset_dir: Path, problems: list[Problem]) -> dict[str, Path]:
    splits: dict[str, Path] = {}
    for child in children(dataset_dir, problems):
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


def scan_labelled_split(
    split_dir: Path,
    classes: tuple[str, ...],
    problems: list[Problem],
    *,
    kind: str,
    required_classes: bool,
) -> list[Sample]:
    listed = len(problems)
    data_dir = find_dir(split_dir, DATA_DIRS, problems)
    if data_dir is None:
        if len(problems) > listed:  # the split folder itself could not be listed
            return []
        problems.append(
            Problem(split_dir, f"missing split folder '{split_dir.name}/data' "
                               f"(expected {kind}/data/<Class>/<image>)", "error")
        )
        return []
    listed = len(problems)
    image_folders = find_class_folders(data_dir, classes, problems, kind=kind)
    if any(p.path == data_dir and p.reason.startswith(UNREADABLE_FOLDER)
           for p in problems[listed:]):
        return []  # said once for the folder, not once per class it hides
    mask_dir = find_dir(split_dir, MASK_DIRS, problems)
    mask_folders = (
        find_class_folders(mask_dir, classes, problems, kind=f"{kind} masks")
        if mask_dir is not None
        else {}
    )
    samples: list[Sample] = []
    for label, cls in enumerate(classes):
        listed = len(problems)
        images = [p for folder in image_folders.get(cls, []) for p in find_images(folder, problems)]
        unlisted = any(p.reason.startswith(UNREADABLE_FOLDER) for p in problems[listed:])
        masks = [p for folder in mask_folders.get(cls, []) for p in find_images(folder, problems)]
        if not images and not unlisted and (cls in image_folders or required_classes):
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
            elif info is not None and mask_info is not None:
                reason = _mask_mismatch(info, mask_info, sample.path)
                if reason is not None:
                    reported.add(sample.mask)
                    problems.append(Problem(sample.mask, reason, "error", excludes=(sample.mask,)))


def _mask_mismatch(info: ImageInfo, mask: ImageInfo, image: Path) -> str | None:
    """Why a decoded mask cannot go with its decoded image, or None."""
    if (mask.width, mask.height) != (info.width, info.height):
        return (f"mask is {mask.width}x{mask.height} but its image {image.name} is "
                f"{info.width}x{info.height}")
    if mask.blank:
        # An error, not a dropped mask: blank masks come from an export gone wrong (a wrong
        # level or channel) and usually many at once; --exclude-bad drops them, keeping images.
        return ("blank mask: every pixel is background (0); a paste from it would be plain "
                "background labelled as the class")
    return None


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
