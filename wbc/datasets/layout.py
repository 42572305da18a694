"""The dataset layout contract: class names, subset names and the report's counts.

Everything that names a folder of the report's tree lives here, so that the scanner, the
importer, the generator and the checker agree on one spelling.
"""

from __future__ import annotations

import re

__all__ = [
    "CAM16_CLASSES",
    "IMAGE_SUFFIXES",
    "REPORT_TABLE1",
    "REPORT_TABLE2",
    "SUBSET_PERCENTS",
    "WBC_CLASSES",
    "canonical_class",
    "subset_name",
    "subset_percent",
]

WBC_CLASSES: tuple[str, ...] = ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil")
CAM16_CLASSES: tuple[str, ...] = ("normal", "tumor")

# The report's label budgets, as integer percentages so that floor(n * p) is exact integer
# arithmetic (176 * 10 // 100 == 17; 176 * 0.1 in floating point is not always safe).
SUBSET_PERCENTS: tuple[int, ...] = (100, 50, 10, 1)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
)

# The report's Table 1 for WBC_100: class -> (train data, train mask, val data). The smaller
# subsets follow from these by the floor rule (see wbc.datasets.subsets).
REPORT_TABLE1: dict[str, tuple[int, int, int]] = {
    "Basophil": (176, 17, 36),
    "Eosinophil": (618, 61, 126),
    "Lymphocyte": (2015, 201, 412),
    "Monocyte": (466, 46, 95),
    "Neutrophil": (5172, 517, 1059),
}

# The report's Table 2. CAM16: class -> (train data, train mask, val data, test data);
# pRCC: unlabelled train images.
REPORT_TABLE2: dict[str, object] = {
    "CAM16": {"normal": (379, 37, 54, 108), "tumor": (378, 37, 54, 108)},
    "pRCC": 1419,
}

_ALIASES: dict[str, str] = {
    # Spellings met in the wild that plural-stripping alone does not map.
    "tumour": "tumor",
    "tumours": "tumor",
    "tumors": "tumor",
    "neutrophile": "Neutrophil",
    "eosinophile": "Eosinophil",
    "basophile": "Basophil",
}


def canonical_class(folder: str, classes: tuple[str, ...]) -> str | None:
    """Map a class folder name to its canonical spelling in ``classes``, or None.

    Case, a plural ``s``, a trailing ``es`` and separators are ignored: ``eosinophils``,
    ``EOSINOPHIL`` and ``Eosinophil`` all name ``Eosinophil``; ``Tumours`` names ``tumor``.
    """
    key = re.sub(r"[\s_\-]+", "", folder).lower()
    by_lower = {c.lower(): c for c in classes}
    candidates = [key]
    if key.endswith("s"):
        candidates.append(key[:-1])
    for cand in candidates:
        if cand in by_lower:
            return by_lower[cand]
        alias = _ALIASES.get(cand)
        if alias is not None and alias.lower() in by_lower:
            return by_lower[alias.lower()]
    return None


_SUBSET_RE = re.compile(r"^wbc[_\- ]?(\d{1,3})$", re.IGNORECASE)


def subset_percent(folder: str) -> int | None:
    """``WBC_10`` -> 10; anything else -> None."""
    match = _SUBSET_RE.match(folder)
    if match is None:
        return None
    percent = int(match.group(1))
    return percent if 0 < percent <= 100 else None


def subset_name(percent: int) -> str:
    """10 -> ``WBC_10``, the canonical folder name."""
    return f"WBC_{percent}"
