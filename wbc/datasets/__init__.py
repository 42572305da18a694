"""Find, validate and describe a dataset tree in the report's layout.

``scan_tree(root)`` runs one scanner per dataset (``wbc_scanner``: ``ROOT/WBC_*``,
``cam16_scanner``: ``ROOT/CAM16``, ``prcc_scanner``: ``ROOT/pRCC``), pairs masks with images by
file stem, decodes every distinct file once to prove it readable (``files``), and returns a
``Tree`` (``tree``): typed splits (``tree.wbc.subset(10)``, ``tree.wbc.val``,
``tree.cam16.train``, ``tree.prcc``) plus the problems found, each naming a file and a reason.

Policy for problems:

- ``error`` problems would break training or the figures (an unreadable, truncated, zero-byte or
  non-image file, or one declaring more pixels than ``wbc.datasets.imageio.max_image_pixels``; a
  mask whose size differs from its image, or a blank mask; an unknown class folder; a folder that
  cannot be listed; a missing split; a class with no images in WBC_100's train or val; a
  training subset with no images; the same image, by content, in training and validation or
  test, or under two classes: ``duplicates``). They make the tree unusable.
- ``warning`` problems are reported and otherwise harmless (a mask without an image, an empty
  class folder in a subset, a file that is not an image type).
- With ``exclude_bad=True`` every error about particular files is resolved by leaving those
  files out (an image with its mask; a bad mask alone, keeping its image; the training-side
  copies of a leaked image; every copy of an image under two classes). The excluded files are
  listed in ``Tree.excluded`` and counted wherever the tree's data is used downstream.
  Structural errors (a missing split, an unreadable folder, an empty subset) cannot be excluded.

WBC subsets that are not on disk (for example WBC_50/10/1 beside a lone WBC_100) are derived by
``wbc.datasets.subsets.derive_subsets`` with ``subset_seed``; subsets that are on disk are used as
they are.

CAM16 and pRCC kept outside the tree (real WBC sets have neither) are put in place of the
tree's own by ``with_histology(tree, cam16=FOLDER, prcc=FOLDER)`` (``histology``), which scans
and verifies them as ``scan_tree`` does; ``histology_origin`` says where they came from.

Top-level folders other than these are not scanned; ``ROOT/truth/``, the true masks that
``wbc synth`` writes for every image (``truth``: :func:`true_mask`), is one of them, so a tree's
samples are the same with or without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from wbc.datasets.cam16_scanner import cam16_splits, scan_cam16
from wbc.datasets.duplicates import content_keys, duplicate_problems, file_digest
from wbc.datasets.files import (
    Sample,
    exclude_problem_files,
    find_class_folders,
    find_images,
    pair_masks,
    problems_from_decoding,
    verify_files,
)
from wbc.datasets.histology import (
    CAM16_LAYOUT,
    PRCC_LAYOUT,
    histology_dir,
    histology_origin,
    with_histology,
)
from wbc.datasets.layout import SUBSET_PERCENTS
from wbc.datasets.prcc_scanner import scan_prcc
from wbc.datasets.problems import DatasetError, Problem, Severity
from wbc.datasets.tree import Cam16Splits, Split, Tree, WbcSplits, class_counts
from wbc.datasets.truth import TRUTH_DIR, true_mask, truth_path
from wbc.datasets.wbc_scanner import (
    check_required_classes,
    derive_missing,
    labels_before_exclusion,
    scan_wbc,
    wbc_splits,
)

__all__ = [
    "CAM16_LAYOUT",
    "PRCC_LAYOUT",
    "TRUTH_DIR",
    "Cam16Splits",
    "DatasetError",
    "Problem",
    "Sample",
    "Severity",
    "Split",
    "Tree",
    "WbcSplits",
    "class_counts",
    "content_keys",
    "duplicate_problems",
    "exclude_problem_files",
    "file_digest",
    "find_class_folders",
    "find_images",
    "histology_dir",
    "histology_origin",
    "pair_masks",
    "problems_from_decoding",
    "scan_tree",
    "true_mask",
    "truth_path",
    "verify_files",
    "with_histology",
]


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; give the dataset root (the folder holding "
                           "WBC_100/), or make one with `wbc synth` or `wbc import`")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give the dataset root (the folder holding "
                           "WBC_100/)")


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
    _check_root(root)
    problems: list[Problem] = []
    wbc, on_disk = scan_wbc(root, problems)
    cam16 = scan_cam16(root, problems)
    prcc = scan_prcc(root, problems)
    samples = {**wbc, **cam16, **({"pRCC": prcc} if prcc is not None else {})}
    if progress is not None:
        progress(f"found {sum(len(g) for g in samples.values())} images in {root}")
    if verify:
        files = [p for g in samples.values() for s in g for p in (s.path, s.mask) if p is not None]
        problems_from_decoding(samples, verify_files(files, workers=workers), problems)
        images = [s.path for k, g in samples.items() if k != "pRCC" for s in g]
        problems += duplicate_problems(samples, content_keys(images, workers=workers))
    excluded: list[Problem] = []
    if exclude_bad:
        before = labels_before_exclusion(samples)
        problems, excluded = exclude_problem_files(samples, problems)
        check_required_classes(before, samples, root, problems)
    wbc_samples = {k: v for k, v in samples.items() if k.startswith("WBC_")}
    derived = derive_missing(wbc_samples, on_disk, derive, subset_seed)
    return Tree(
        root=root,
        wbc=wbc_splits(wbc_samples, derived),
        cam16=cam16_splits({k: v for k, v in samples.items() if k.startswith("CAM16/")}),
        prcc=tuple(samples.get("pRCC", ())),
        problems=tuple(problems),
        excluded=tuple(excluded),
        verified=verify,
    )
