"""``wbc import``: an ImageFolder set becomes the report's layout, and subsets are written out.

The source is only read. The new tree is assembled in a temporary sibling folder and renamed into
place at the end, so an interrupted import leaves no half-made tree behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbc.datasets import (
    DatasetError,
    Problem,
    Sample,
    content_keys,
    exclude_problem_files,
    find_class_folders,
    find_images,
    pair_masks,
    problems_from_decoding,
    scan_tree,
    verify_files,
)
from wbc.datasets.layout import SUBSET_PERCENTS, WBC_CLASSES, subset_name
from wbc.datasets.subsets import derive_subsets

__all__ = [
    "ImportResult",
    "import_imagefolder",
    "link_or_copy",
    "stratified_val_split",
    "write_subsets",
]

# The report's validation share: 1728 / (8447 + 1728).
DEFAULT_VAL_FRACTION = 0.17


@dataclass(frozen=True)
class ImportResult:
    root: Path
    train: int
    val: int
    masks: int
    excluded: tuple[Path, ...]
    warnings: tuple[Problem, ...]
    subsets: dict[int, int]


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra space), copying where links are not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stratified_val_split(
    labels: Sequence[int], fraction: float, *, seed: int, groups: Sequence[int] | None = None
) -> np.ndarray:
    """Boolean array, True for validation: ``floor(n * fraction)`` of each class, seeded.

    The floor rule reproduces the report's validation counts from its class totals (e.g. 212
    Basophils -> 36). A class of two or more images keeps at least one image on each side; a
    class of one image stays in train. ``groups`` (one id per image, equal for copies of one
    image) keeps each group on one side, filling validation with whole groups up to the count.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    group_arr = np.arange(labels_arr.size) if groups is None else np.asarray(groups)
    is_val = np.zeros(labels_arr.size, dtype=bool)
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels_arr):
        units: dict[int, list[int]] = {}
        for index in np.flatnonzero(labels_arr == cls):
            units.setdefault(int(group_arr[index]), []).append(int(index))
        members = list(units.values())
        size = sum(len(m) for m in members)
        n_val = int(np.floor(size * fraction + 1e-9))
        n_val = min(max(n_val, 1), size - 1) if len(members) >= 2 else 0
        taken = 0
        for unit in rng.permutation(len(members)):
            if taken + len(members[unit]) <= n_val:
                is_val[members[unit]] = True
                taken += len(members[unit])
        if n_val and not taken:  # every group is larger than the count: the smallest one
            is_val[min(members, key=len)] = True
    return is_val


def _content_groups(samples: Sequence[Sample], keys: dict[Path, str]) -> list[int]:
    """A group id per sample, equal for images with the same bytes."""
    ids: dict[str, int] = {}
    return [ids.setdefault(keys.get(s.path, str(s.path)), len(ids)) for s in samples]


def _class_conflicts(samples: Sequence[Sample], keys: dict[Path, str]) -> list[Problem]:
    """Errors for images whose bytes are under two classes of the source."""
    by_key: dict[str, list[Sample]] = {}
    for sample in samples:
        by_key.setdefault(keys.get(sample.path, str(sample.path)), []).append(sample)
    problems = []
    for copies in by_key.values():
        labels = sorted({s.label for s in copies})
        if len(labels) > 1:
            names = ", ".join(WBC_CLASSES[label] for label in labels)
            others = ", ".join(str(s.path) for s in copies[1:])
            problems.append(Problem(copies[0].path, f"the same image is under {names}: also "
                                                    f"{others}; its class is ambiguous: keep "
                                                    "one copy in the right class folder",
                                    "error", excludes=tuple(s.path for s in copies)))
    return problems


def _relative_target(sample: Sample, used: set[Path], base: Path) -> Path:
    """``<Class>/<name>``, made unique when two source folders of one class share a file name."""
    cls = WBC_CLASSES[sample.label]
    target = base / cls / sample.path.name
    n = 2
    while target in used:
        target = base / cls / f"{sample.path.stem}_{n}{sample.path.suffix}"
        n += 1
    used.add(target)
    return target


def write_subsets(root: Path, *, seed: int, percents: Sequence[int] = SUBSET_PERCENTS[1:]
                  ) -> dict[int, int]:
    """Write ``WBC_<p>/train`` subsets of ``root/WBC_100/train`` as hard links (or copies).

    Uses the report's stratified floor rule (``wbc.datasets.subsets.derive_subsets``); masks go with
    their images. Returns percent -> images written.
    """
    tree = scan_tree(root, verify=False, derive=())
    full = tree.wbc.subset(100)
    drawn = derive_subsets([s.label for s in full], [s.mask is not None for s in full],
                           list(percents), seed=seed)
    train_dir = root / "WBC_100" / "train"
    written: dict[int, int] = {}
    for percent, indices in drawn.items():
        dest = root / subset_name(percent) / "train"
        # Created even when the rule leaves the subset empty: on disk it is the subset as drawn.
        (dest / "data").mkdir(parents=True, exist_ok=True)
        for i in indices:
            sample = full[i]
            link_or_copy(sample.path, dest / sample.path.relative_to(train_dir))
            if sample.mask is not None:
                link_or_copy(sample.mask, dest / sample.mask.relative_to(train_dir))
        written[percent] = len(indices)
    return written


def _find_mask_root(src: Path, masks: Path | None) -> Path | None:
    if masks is not None:
        if not masks.is_dir():
            raise DatasetError(f"{masks}: masks folder not found; give a folder shaped like the "
                               "source (<Class>/<mask files>), or leave out --masks")
        return masks
    for name in ("masks", "mask"):
        candidate = src / name
        if candidate.is_dir():
            return candidate
    return None


def _source_samples(src: Path, mask_root: Path | None, problems: list[Problem]) -> list[Sample]:
    """The labelled images of ``src/<Class>/`` and their masks (problems appended)."""
    folders = find_class_folders(src, WBC_CLASSES, problems, kind=str(src))
    # The masks folder sits inside the source in the usual ImageFolder-with-masks shape.
    problems[:] = [p for p in problems if mask_root is None or p.path != mask_root]
    mask_folders = (
        find_class_folders(mask_root, WBC_CLASSES, problems, kind=f"{mask_root}")
        if mask_root is not None else {}
    )
    samples: list[Sample] = []
    for label, cls in enumerate(WBC_CLASSES):
        images = [p for f in folders.get(cls, []) for p in find_images(f, problems)]
        mask_files = [p for f in mask_folders.get(cls, []) for p in find_images(f, problems)]
        paired = pair_masks(images, mask_files, problems)
        samples += [Sample(p, label, paired.get(p)) for p in images]
    if not samples:
        raise DatasetError(f"{src}: no images in class folders named "
                           f"{', '.join(WBC_CLASSES)} (any case, singular or plural)")
    return samples


def _verified(src: Path, samples: list[Sample], problems: list[Problem], *, exclude_bad: bool,
              workers: int | None, progress: Callable[[str], None] | None
              ) -> tuple[list[Sample], list[Problem], tuple[Path, ...], dict[Path, str]]:
    """Decode every file; (kept samples, remaining problems, excluded files, content keys),
    or ``DatasetError`` listing the errors when ``exclude_bad`` is off."""
    if progress is not None:
        progress(f"verifying {len(samples)} images in {src}")
    files = [p for s in samples for p in (s.path, s.mask) if p is not None]
    groups = {"source": samples}
    problems_from_decoding(groups, verify_files(files, workers=workers), problems)
    keys = content_keys([s.path for s in samples], workers=workers)
    problems += _class_conflicts(samples, keys)
    errors = [p for p in problems if p.severity == "error"]
    if errors and not exclude_bad:
        lines = "\n".join(str(p) for p in errors)
        raise DatasetError(f"{src}: {len(errors)} problem(s); fix them or rerun with "
                           f"--exclude-bad to leave those files out:\n{lines}")
    problems, dropped = exclude_problem_files(groups, problems)
    excluded = tuple(dict.fromkeys(f for p in dropped for f in p.excludes))
    return groups["source"], problems, excluded, keys


def _copy_split(staging: Path, kept: list[Sample], is_val: np.ndarray) -> None:
    """WBC_100's train and val (data and masks) in the layout, copies with their times."""
    used: set[Path] = set()
    for sample, val in zip(kept, is_val, strict=True):
        split = staging / "WBC_100" / ("val" if val else "train")
        target = _relative_target(sample, used, split / "data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sample.path, target)
        if sample.mask is not None:
            mask_target = (split / "mask" / target.relative_to(split / "data")).with_suffix(
                sample.mask.suffix)
            mask_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(sample.mask, mask_target)


def import_imagefolder(
    src: Path | str,
    root: Path | str,
    *,
    masks: Path | str | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    exclude_bad: bool = False,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Copy ``src/<Class>/*`` (and masks) into ``root`` in the report's layout.

    Splits each class into train and val with ``stratified_val_split``, copies of one image
    (same bytes) kept on one side; the same bytes under two classes is an error. Writes WBC_50/10/1 with
    ``write_subsets`` and records what was done in ``root/import.json``. Raises
    ``DatasetError`` (nothing written) when the source has errors and ``exclude_bad`` is off, or
    when ``root`` exists and is not empty.
    """
    started = time.time()
    src, root = Path(src), Path(root)
    if not src.is_dir():
        raise DatasetError(f"{src}: no such folder; give an ImageFolder set (<Class>/<images>)")
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root}: exists and is not empty; give a new folder to import into")
    mask_root = _find_mask_root(src, Path(masks) if masks is not None else None)
    problems: list[Problem] = []
    samples = _source_samples(src, mask_root, problems)
    kept, problems, excluded, keys = _verified(src, samples, problems, exclude_bad=exclude_bad,
                                               workers=workers, progress=progress)
    # Copies of one image (the source may hold duplicate files) go to one side of the split:
    # an image in both would be scored on what it was trained on.
    is_val = stratified_val_split([s.label for s in kept], val_fraction, seed=seed,
                                  groups=_content_groups(kept, keys))
    staging = root.with_name(f".{root.name}.importing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _copy_split(staging, kept, is_val)
        subsets = write_subsets(staging, seed=seed)
        record = {
            "source": str(src.resolve()),
            "masks": str(mask_root.resolve()) if mask_root else None,
            "val_fraction": val_fraction,
            "seed": seed,
            "train": int((~is_val).sum()),
            "val": int(is_val.sum()),
            "subsets": {subset_name(p): n for p, n in subsets.items()},
            "excluded": [str(p) for p in excluded],
            "seconds": round(time.time() - started, 2),
        }
        (staging / "import.json").write_text(json.dumps(record, indent=2) + "\n")
        if root.exists():
            root.rmdir()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportResult(
        root=root,
        train=int((~is_val).sum()),
        val=int(is_val.sum()),
        masks=sum(s.mask is not None for s in kept),
        excluded=excluded,
        warnings=tuple(p for p in problems if p.severity == "warning"),
        subsets=subsets,
    )
