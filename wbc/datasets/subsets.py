"""Label-budget subsets drawn by the report's rule.

The report's WBC_50/10/1 keep ``floor(n * p)`` images of each class (176 -> 88 -> 17 -> 1
Basophils) and, within that, ``floor(m * p)`` of the ``m`` images that have a mask (17 -> 8 ->
1 -> 0). Drawing each (class, has-mask) stratum as a prefix of one seeded permutation gives
exactly those counts and nests the subsets (WBC_1 within WBC_10 within WBC_50), so that budgets
differ only in how many images they add, never in which.

A subset keeps at least one image of every class WBC_100 has (``subset_count``): a budget that
lacks a class cannot learn it at all, which measures the subset's luck rather than its size.
At the report's counts nothing changes (its smallest class, 176 Basophils, keeps 1 at WBC_1);
on a small tree (a quick synthetic one, a small real set) every class stays learnable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["derive_subsets", "floor_count", "subset_count"]


def floor_count(n: int, percent: int) -> int:
    """The report's rule: ``floor(n * percent / 100)`` in exact integer arithmetic."""
    if not 0 < percent <= 100:
        raise ValueError(f"subset percent must be in 1..100, got {percent}")
    return n * percent // 100


def subset_count(n: int, percent: int) -> int:
    """Images a subset keeps of a class of ``n``: the report's ``floor(n * p)``, at least one
    (none of an empty class)."""
    return max(1, floor_count(n, percent)) if n > 0 else 0


def derive_subsets(
    labels: Sequence[int] | np.ndarray,
    has_mask: Sequence[bool] | np.ndarray,
    percents: Sequence[int],
    *,
    seed: int,
) -> dict[int, np.ndarray]:
    """Indices of each subset, stratified by class and by mask, nested, reproducible by seed.

    ``labels`` and ``has_mask`` describe the full training set (WBC_100). Returns a dict from
    percent to the sorted indices into it. The same seed gives the same subsets on any machine
    (numpy's PCG64 stream is platform independent); another seed redraws them.
    """
    labels = np.asarray(labels, dtype=np.int64)
    has_mask = np.asarray(has_mask, dtype=bool)
    if labels.shape != has_mask.shape:
        raise ValueError(f"labels {labels.shape} and has_mask {has_mask.shape} differ in shape")
    rng = np.random.default_rng(seed)
    chosen: dict[int, list[np.ndarray]] = {p: [] for p in percents}
    for cls in np.unique(labels):
        in_class = labels == cls
        n_class = int(in_class.sum())
        masked = np.flatnonzero(in_class & has_mask)
        unmasked = np.flatnonzero(in_class & ~has_mask)
        # One permutation per stratum, drawn in a fixed order so that adding a percent to the
        # request does not change the others.
        masked = masked[rng.permutation(masked.size)]
        unmasked = unmasked[rng.permutation(unmasked.size)]
        for p in percents:
            n_masked = floor_count(masked.size, p)
            n_unmasked = subset_count(n_class, p) - n_masked
            if n_unmasked > unmasked.size:  # a class of masked images only: one more of those
                n_masked += n_unmasked - unmasked.size
                n_unmasked = unmasked.size
            chosen[p].append(masked[:n_masked])
            chosen[p].append(unmasked[:n_unmasked])
    return {p: np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)
            for p, parts in chosen.items()}
