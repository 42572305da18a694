"""A scanned tree: the samples of every split, typed, and the problems found."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from wbc.datasets.files import Sample
from wbc.datasets.layout import subset_name
from wbc.datasets.problems import Problem

__all__ = ["Cam16Splits", "Split", "Tree", "WbcSplits", "class_counts"]

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class WbcSplits:
    """The WBC data: a training set per label budget (percent -> samples, WBC_100 the full
    one), and WBC_100's validation split and optional test split, on which every budget is
    scored."""

    train: Mapping[int, tuple[Sample, ...]] = field(default_factory=dict)
    val: tuple[Sample, ...] = ()
    test: tuple[Sample, ...] = ()
    found: tuple[Split, ...] = ()  # WBC_100's splits on disk
    derived: Mapping[int, int] = field(default_factory=dict)  # percent -> seed it was drawn with

    @property
    def percents(self) -> list[int]:
        """The label budgets present (on disk or derived), largest first."""
        return sorted(self.train, reverse=True)

    def has(self, percent: int) -> bool:
        return percent in self.train

    def subset(self, percent: int = 100) -> tuple[Sample, ...]:
        """The training samples of ``WBC_<percent>``; none when the tree lacks it."""
        return self.train.get(percent, ())

    def groups(self) -> Iterator[tuple[str, tuple[Sample, ...]]]:
        """``("WBC_100/train", samples)``, ``("WBC_100/val", ...)``, ..., the subsets after."""
        for percent in self.percents:
            if percent == 100 and "train" not in self.found:
                continue
            yield f"{subset_name(percent)}/train", self.train[percent]
            if percent == 100:
                for split in ("val", "test"):
                    if split in self.found:
                        yield f"{subset_name(100)}/{split}", getattr(self, split)

    def samples(self) -> Iterator[Sample]:
        """Every sample of every split (a subset's samples repeat WBC_100's)."""
        for _, group in self.groups():
            yield from group


@dataclass(frozen=True)
class Cam16Splits:
    """The CAM16 tumour/normal patches of the supervised pretraining."""

    train: tuple[Sample, ...] = ()
    val: tuple[Sample, ...] = ()
    test: tuple[Sample, ...] = ()
    found: tuple[Split, ...] = ()  # the splits on disk

    def groups(self) -> Iterator[tuple[Split, tuple[Sample, ...]]]:
        for split in ("train", "val", "test"):
            if split in self.found:
                yield split, getattr(self, split)

    def samples(self) -> Iterator[Sample]:
        for _, group in self.groups():
            yield from group


@dataclass(frozen=True)
class Tree:
    """A scanned tree: samples per split, problems, exclusions and derived subsets."""

    root: Path
    wbc: WbcSplits
    cam16: Cam16Splits
    prcc: tuple[Sample, ...]  # unlabelled (label -1)
    problems: tuple[Problem, ...] = ()
    excluded: tuple[Problem, ...] = ()
    verified: bool = True
    # The folder of predicted masks ``with_masks`` filled in (``wbc segment --out``), if any.
    predicted_masks: Path | None = None
    # Where CAM16 and pRCC were taken from when the user keeps them outside this tree
    # (``wbc.datasets.with_histology``); None: the tree's own ``CAM16/`` and ``pRCC/``.
    cam16_source: Path | None = None
    prcc_source: Path | None = None

    @property
    def cam16_dir(self) -> Path:
        """The folder the CAM16 samples come from (for messages and the record)."""
        return self.cam16_source or self.root / "CAM16"

    @property
    def prcc_dir(self) -> Path:
        """The folder the pRCC samples come from."""
        return self.prcc_source or self.root / "pRCC"

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

    def with_masks(self, mask_of: Mapping[Path, Path], source: Path) -> Tree:
        """This tree with ``mask_of[image]`` as the mask of each WBC image that has none
        (predicted masks, ``wbc.segment``, from the folder ``source``); an image's own mask is
        never replaced."""

        def fill(samples: tuple[Sample, ...]) -> tuple[Sample, ...]:
            return tuple(s if s.mask is not None or s.path not in mask_of
                         else replace(s, mask=mask_of[s.path]) for s in samples)

        wbc = replace(self.wbc, train={p: fill(s) for p, s in self.wbc.train.items()},
                      val=fill(self.wbc.val), test=fill(self.wbc.test))
        return replace(self, wbc=wbc, predicted_masks=Path(source))

    def all_samples(self) -> Iterator[Sample]:
        yield from self.wbc.samples()
        yield from self.cam16.samples()
        yield from self.prcc


def class_counts(samples: Sequence[Sample], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class image and mask counts of a split."""
    data = np.zeros(n_classes, dtype=np.int64)
    mask = np.zeros(n_classes, dtype=np.int64)
    for sample in samples:
        if 0 <= sample.label < n_classes:
            data[sample.label] += 1
            mask[sample.label] += sample.mask is not None
    return data, mask
