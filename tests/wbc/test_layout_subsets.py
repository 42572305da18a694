from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wbc.datasets.layout import (
    CAM16_CLASSES,
    REPORT_TABLE1,
    WBC_CLASSES,
    canonical_class,
    subset_percent,
)
from wbc.datasets.subsets import derive_subsets, floor_count, subset_count


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Eosinophil", "Eosinophil"),
        ("eosinophils", "Eosinophil"),
        ("EOSINOPHILS", "Eosinophil"),
        ("neutrophil", "Neutrophil"),
        ("Lymphocytes", "Lymphocyte"),
        ("monocyte", "Monocyte"),
        ("Basophile", "Basophil"),
        ("Platelet", None),
        ("Eosinophil_old", None),
    ],
)
def test_class_folders_in_any_case_singular_or_plural(folder: str, expected: str | None) -> None:
    assert canonical_class(folder, WBC_CLASSES) == expected


@pytest.mark.parametrize("folder", ["tumor", "Tumour", "TUMORS", "tumours"])
def test_cam16_tumour_spellings(folder: str) -> None:
    assert canonical_class(folder, CAM16_CLASSES) == "tumor"


def test_subset_folder_names() -> None:
    assert subset_percent("WBC_100") == 100
    assert subset_percent("wbc-10") == 10
    assert subset_percent("WBC1") == 1
    assert subset_percent("WBC_0") is None
    assert subset_percent("CAM16") is None


def test_floor_rule_matches_report_example() -> None:
    assert [floor_count(176, p) for p in (100, 50, 10, 1)] == [176, 88, 17, 1]


def _report_population() -> tuple[np.ndarray, np.ndarray]:
    labels, has_mask = [], []
    for label, cls in enumerate(WBC_CLASSES):
        n, m, _ = REPORT_TABLE1[cls]
        labels += [label] * n
        has_mask += [True] * m + [False] * (n - m)
    return np.array(labels), np.array(has_mask)


def test_derived_subsets_reproduce_report_table1_exactly() -> None:
    labels, has_mask = _report_population()
    subsets = derive_subsets(labels, has_mask, [50, 10, 1], seed=3)
    # Table 1 of the report: (data, mask) per class for WBC_50, WBC_10, WBC_1.
    expected = {
        50: {"Basophil": (88, 8), "Eosinophil": (309, 30), "Lymphocyte": (1007, 100),
             "Monocyte": (233, 23), "Neutrophil": (2586, 258)},
        10: {"Basophil": (17, 1), "Eosinophil": (61, 6), "Lymphocyte": (201, 20),
             "Monocyte": (46, 4), "Neutrophil": (517, 51)},
        1: {"Basophil": (1, 0), "Eosinophil": (6, 0), "Lymphocyte": (20, 2),
            "Monocyte": (4, 0), "Neutrophil": (51, 5)},
    }
    totals = {50: (4223, 419), 10: (842, 82), 1: (82, 7)}
    for percent, per_class in expected.items():
        idx = subsets[percent]
        for label, cls in enumerate(WBC_CLASSES):
            chosen = idx[labels[idx] == label]
            assert (chosen.size, int(has_mask[chosen].sum())) == per_class[cls], (percent, cls)
        assert (idx.size, int(has_mask[idx].sum())) == totals[percent]


def test_subsets_are_nested_reproducible_and_redrawn_by_seed() -> None:
    labels, has_mask = _report_population()
    a = derive_subsets(labels, has_mask, [50, 10, 1], seed=0)
    b = derive_subsets(labels, has_mask, [50, 10, 1], seed=0)
    c = derive_subsets(labels, has_mask, [50, 10, 1], seed=1)
    assert set(a[1]) <= set(a[10]) <= set(a[50])
    for p in (50, 10, 1):
        np.testing.assert_array_equal(a[p], b[p])
    assert not np.array_equal(a[10], c[10])


def test_subsets_identical_in_another_process() -> None:
    labels, has_mask = _report_population()
    here = derive_subsets(labels, has_mask, [10], seed=7)[10]
    code = (
        "import numpy as np, sys\n"
        "from tests.wbc.test_layout_subsets import _report_population\n"
        "from wbc.datasets.subsets import derive_subsets\n"
        "l, m = _report_population()\n"
        "print(','.join(map(str, derive_subsets(l, m, [10], seed=7)[10])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(map(str, here))


def test_every_class_keeps_at_least_one_image() -> None:
    # floor(3 * .01) = 0 would drop class 0 from WBC_1 and leave a classifier that cannot name
    # it; the subset keeps one image of it instead, and floor(200 * .01) = 2 of class 1.
    labels = np.array([0] * 3 + [1] * 200)
    subsets = derive_subsets(labels, np.zeros(203, bool), [1, 10], seed=0)
    assert np.bincount(labels[subsets[1]]).tolist() == [1, 2]
    assert np.bincount(labels[subsets[10]]).tolist() == [1, 20]
    assert set(subsets[1]) <= set(subsets[10])
    # An empty class stays empty.
    assert subset_count(0, 1) == 0 and subset_count(3, 1) == 1 and subset_count(200, 1) == 2
