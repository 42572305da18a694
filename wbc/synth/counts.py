"""How many images and masks each dataset, split and class of a synthetic tree holds."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from wbc.datasets.layout import (
    CAM16_CLASSES,
    REPORT_TABLE1,
    REPORT_TABLE2,
    WBC_CLASSES,
    subset_name,
)
from wbc.datasets.subsets import derive_subsets

__all__ = ["SUBSETS", "Counts", "planned_counts"]

# The label budgets written besides WBC_100, as percents for wbc.datasets.subsets.
SUBSETS: tuple[int, ...] = (50, 10, 1)

# dataset -> split -> class -> (data images, masks). pRCC has no class folder: its class is "".
Counts = Mapping[str, Mapping[str, Mapping[str, tuple[int, int]]]]


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding (round(0.5) == 0); counts should not depend on
    # whether a product lands on an even integer.
    return math.floor(x + 0.5)


def _scaled(n: int, scale: float, *, minimum: int) -> int:
    return max(minimum, _round_half_up(n * scale))


def _scaled_masks(masks: int, images: int, scale: float) -> int:
    m = _round_half_up(masks * scale)
    if scale >= 0.05 and images >= 2:
        m = max(m, 1)
    return min(m, images)


def _check_scale(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def planned_counts(
    scale: float = 1.0,
    *,
    val_scale: float | None = None,
    tissue_scale: float | None = None,
    test_scale: float | None = None,
) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """The (data, mask) counts ``synthesize(scale=scale, ...)`` writes, without drawing anything.

    ``scale=1.0`` is exactly the report's Table 1 (WBC_100, and WBC_50/10/1 as
    :func:`wbc.datasets.subsets.derive_subsets` takes them of WBC_100/train) and Table 2 (CAM16,
    pRCC). Smaller scales round each count half-up, keep at least one image per class and split, and
    give a class with two or more images at least one mask when ``scale >= 0.05``.

    ``val_scale`` scales WBC_100/val and ``tissue_scale`` CAM16 and pRCC (masks included), by the
    same rule; None means ``scale``. Only ``scale`` decides WBC_100/train and so WBC_50/10/1: a
    large held-out set or a large CAM16 can go with a small training set.

    ``test_scale`` adds a WBC_100/test split the report does not have, its classes in val's
    proportions (the report's val counts at ``test_scale``); None: no test split. A tree with
    one reports on it and picks epochs on all of val (``wbc.training.inputs``), so a large test
    split buys reporting images without making every epoch's scoring dearer.
    """
    _check_scale("scale", scale)
    val_scale = scale if val_scale is None else val_scale
    tissue_scale = scale if tissue_scale is None else tissue_scale
    _check_scale("val_scale", val_scale)
    _check_scale("tissue_scale", tissue_scale)
    if test_scale is not None:
        _check_scale("test_scale", test_scale)
    counts: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    train: dict[str, tuple[int, int]] = {}
    val: dict[str, tuple[int, int]] = {}
    for cls in WBC_CLASSES:
        n_train, n_mask, n_val = REPORT_TABLE1[cls]
        images = _scaled(n_train, scale, minimum=1)
        train[cls] = (images, _scaled_masks(n_mask, images, scale))
        val[cls] = (_scaled(n_val, val_scale, minimum=1), 0)
    counts["WBC_100"] = {"train": train, "val": val}
    if test_scale is not None:
        counts["WBC_100"]["test"] = {cls: (_scaled(REPORT_TABLE1[cls][2], test_scale,
                                                   minimum=1), 0) for cls in WBC_CLASSES}
    counts.update(_subset_counts(train))
    counts["CAM16"] = _cam16_counts(tissue_scale)
    prcc = REPORT_TABLE2["pRCC"]
    assert isinstance(prcc, int)
    counts["pRCC"] = {"train": {"": (_scaled(prcc, tissue_scale, minimum=1), 0)}}
    return counts


def _subset_counts(
    train: dict[str, tuple[int, int]],
) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """WBC_50/10/1 per class, as :func:`wbc.datasets.subsets.derive_subsets` picks them from
    ``train``.

    Asked of derive_subsets itself, so that the plan cannot drift from the files the writer
    links; its counts per (class, has-mask) stratum do not depend on the seed.
    """
    sizes = [train[c][0] for c in WBC_CLASSES]
    labels = np.repeat(np.arange(len(WBC_CLASSES)), sizes)
    has_mask = np.concatenate([np.arange(d) < m for d, m in (train[c] for c in WBC_CLASSES)])
    out: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    for p, chosen in derive_subsets(labels, has_mask, SUBSETS, seed=0).items():
        data = np.bincount(labels[chosen], minlength=len(WBC_CLASSES))
        masks = np.bincount(labels[chosen[has_mask[chosen]]], minlength=len(WBC_CLASSES))
        out[subset_name(p)] = {"train": {
            c: (int(d), int(m)) for c, d, m in zip(WBC_CLASSES, data, masks, strict=True)}}
    return out


def _cam16_counts(scale: float) -> dict[str, dict[str, tuple[int, int]]]:
    cam = REPORT_TABLE2["CAM16"]
    assert isinstance(cam, dict)
    counts: dict[str, dict[str, tuple[int, int]]] = {"train": {}, "val": {}, "test": {}}
    for cls in CAM16_CLASSES:
        n_train, n_mask, n_val, n_test = cam[cls]
        images = _scaled(n_train, scale, minimum=1)
        counts["train"][cls] = (images, _scaled_masks(n_mask, images, scale))
        counts["val"][cls] = (_scaled(n_val, scale, minimum=1), 0)
        counts["test"][cls] = (_scaled(n_test, scale, minimum=1), 0)
    return counts
