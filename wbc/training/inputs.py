"""From a scanned tree and the decode cache to the tensors a training run needs.

Which split does what:

- train: ``<subset>/train`` (a subset redrawn from WBC_100/train when ``subset_seed`` is set).
- selection (chooses the best epoch) and reporting (the figures reported): the tree's test split
  when it has one (selection = val, reporting = test); otherwise a fixed stratified half of val
  each (``selection_reporting_split``, seed 0 for every trial of every study). One function,
  ``evaluation_splits``, makes both for training and for ``wbc evaluate``, which scores a saved
  model on exactly the images its run reported on.

Documented behaviour for awkward inputs:

- A training subset that lacks a class (WBC_1 often lacks Basophils) trains anyway: the head keeps
  all classes, the class cannot be learnt, and its recall shows it. ``PreparedData.notes`` says so.
- A mask-augmenting strategy on a subset with no masks trains without pastes (noted); on a tree
  with no masks at all it is an error, since the strategy could never do what it says.
- A strategy that needs CAM16 on a tree without it is an error naming the folder.
- A training subset on disk with no images is an error of the tree (``scan_tree``), so such a
  tree is not usable; ``fit`` refuses an empty training split too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wbc.augment import pastes_enabled
from wbc.config import TrainConfig
from wbc.datasets import DatasetError, Sample, Tree
from wbc.datasets.cache import DecodedSet, decode_samples
from wbc.datasets.layout import CAM16_CLASSES, WBC_CLASSES, subset_percent
from wbc.datasets.subsets import derive_subsets, subset_count
from wbc.strategies import get_strategy

__all__ = [
    "SELECTION_SEED",
    "EvalData",
    "NamedSplit",
    "PreparedData",
    "SplitPlan",
    "TrainData",
    "eval_data",
    "evaluation_splits",
    "load_plan",
    "plan_cam16",
    "plan_wbc",
    "scaled_selection",
    "selection_reporting_split",
    "train_samples",
    "wbc_decode_set",
]

SELECTION_SEED = 0  # the val halves are fixed across trials and seeds: comparable figures


@dataclass
class TrainData:
    """The training split on the device: uint8 NHWC images, labels, masks of the masked rows."""

    images: Tensor  # (N, S, S, 3) uint8
    labels: Tensor  # (N,) int64
    has_mask: Tensor  # (N,) bool
    masks: Tensor  # (M, S, S) bool, one per True in has_mask, in order
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device) -> TrainData:
        return TrainData(self.images.to(device), self.labels.to(device),
                         self.has_mask.to(device), self.masks.to(device), self.class_names)


@dataclass
class EvalData:
    """An evaluation split on the device."""

    name: str  # what it is, for the record: "WBC_100/val (half A)", "WBC_100/test", ...
    images: Tensor  # (N, S, S, 3) uint8
    labels: Tensor  # (N,) int64

    def to(self, device: torch.device) -> EvalData:
        return EvalData(self.name, self.images.to(device), self.labels.to(device))


def selection_reporting_split(labels: Sequence[int] | np.ndarray, *, seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified half of a validation set: (selection indices, reporting indices).

    Used when a tree has no test split: the best epoch is chosen on one half and the reported
    figures come from the other, so the figures are not inflated by the choice. The split
    depends only on the labels and ``seed`` (fixed for a study), never on the trial.
    """
    labels_arr = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    selection, reporting = [], []
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        members = members[rng.permutation(members.size)]
        half = (members.size + 1) // 2  # an odd class gives selection the extra image
        selection.append(members[:half])
        reporting.append(members[half:])
    return np.sort(np.concatenate(selection)), np.sort(np.concatenate(reporting))


@dataclass(frozen=True)
class SplitPlan:
    """Which files make each split: small, picklable, sent to every training worker."""

    dataset: str  # "WBC" or "CAM16": names the decode cache
    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]
    image_size: int
    excluded_files: int = 0  # files left out by --exclude-bad, carried into results
    notes: tuple[str, ...] = ()
    # Percent of the selection split a run selects on: 100, or the label budget's own percent
    # when selection is "scaled" (a researcher with 1% of the labels has 1% of the val labels).
    selection_percent: int = 100
    # The files of the decode cache the splits are rows of (empty: the splits' own files). A
    # WBC plan names every WBC image of the tree, so all subsets map one cache, decoded once.
    decode_set: tuple[Sample, ...] = ()
    # That cache's fingerprint when the caller knows it (a study checked the files once): the
    # cache then opens without a stat of every file.
    decode_fingerprint: str | None = None

    def decode_files(self) -> list[Sample]:
        """The files the plan's decode cache holds."""
        return list(self.decode_set) or [*self.train, *self.val, *self.test]


@dataclass
class PreparedData:
    train: TrainData
    selection: EvalData
    reporting: EvalData
    fingerprint: str  # the decode cache's: identifies the exact files and resolution
    plan: SplitPlan

    def to(self, device: torch.device) -> PreparedData:
        return PreparedData(self.train.to(device), self.selection.to(device),
                            self.reporting.to(device), self.fingerprint, self.plan)


def train_samples(tree: Tree, config: TrainConfig) -> tuple[Sample, ...]:
    """The training samples of ``config.data.subset``, redrawn when ``subset_seed`` is set."""
    subset = config.data.subset
    percent = subset_percent(subset)
    if percent is None:
        raise DatasetError(f"subset {subset!r} is not a WBC subset name (WBC_100, WBC_50, ...)")
    if config.data.subset_seed is not None and percent != 100:
        full = tree.wbc.subset(100)
        drawn = derive_subsets([s.label for s in full], [s.mask is not None for s in full],
                               [percent], seed=config.data.subset_seed)[percent]
        return tuple(full[i] for i in drawn)
    if not tree.wbc.has(percent):
        have = ", ".join(f"WBC_{p}" for p in tree.wbc.percents)
        raise DatasetError(f"{tree.root}: no {subset} in this tree (it has {have})")
    return tree.wbc.subset(percent)


def _train_data(decoded: DecodedSet, samples: Sequence[Sample], classes: tuple[str, ...]
                ) -> TrainData:
    rows = decoded.rows(samples)
    has_mask = np.array([s.mask is not None for s in samples], dtype=bool)
    mask_rows = decoded.mask_row[rows[has_mask]]
    masks = (np.asarray(decoded.masks[mask_rows]) if mask_rows.size
             else np.zeros((0, decoded.image_size, decoded.image_size), bool))
    return TrainData(
        images=torch.from_numpy(np.ascontiguousarray(decoded.images[rows])),
        labels=torch.from_numpy(decoded.labels[rows].astype(np.int64)),
        has_mask=torch.from_numpy(has_mask),
        masks=torch.from_numpy(np.ascontiguousarray(masks)),
        class_names=classes,
    )


def eval_data(decoded: DecodedSet, samples: Sequence[Sample], name: str) -> EvalData:
    """The rows of ``samples`` in ``decoded`` as an evaluation split (CPU tensors, in the
    samples' order, labels as the samples give them)."""
    rows = decoded.rows(samples)
    return EvalData(name, torch.from_numpy(np.ascontiguousarray(decoded.images[rows])),
                    torch.from_numpy(decoded.labels[rows].astype(np.int64)))


def _missing_classes(samples: Sequence[Sample], classes: tuple[str, ...]) -> list[str]:
    present = {s.label for s in samples}
    return [c for i, c in enumerate(classes) if i not in present]


def plan_wbc(tree: Tree, config: TrainConfig) -> SplitPlan:
    """The WBC splits for ``config`` (see the module docstring); errors name what is missing."""
    if not tree.usable:
        raise DatasetError(f"{tree.root}: not usable ({len(tree.errors)} error(s)); run "
                           "`wbc check` on it, fix them or exclude the files")
    strategy = get_strategy(config.model.strategy)
    if strategy.ssl == "prcc" and not tree.prcc:
        raise DatasetError(f"strategy {strategy.name!r} pretrains self-supervised on pRCC, but "
                           f"{tree.prcc_dir} holds no images; give a folder that holds "
                           "pRCC/train/data/... with --prcc PATH, add pRCC to the tree, or use "
                           "--strategy scratch")
    if strategy.pretrain == "cam16" and not tree.cam16.train:
        raise DatasetError(f"strategy {strategy.name!r} pretrains on CAM16, but "
                           f"{tree.cam16_dir} has no train split; give a folder that holds "
                           "CAM16/{train,val}/data/{normal,tumor}/... with --cam16 PATH, add "
                           "CAM16 to the tree, or use --strategy scratch")
    if strategy.mask_source == "predicted" and tree.predicted_masks is None:
        raise DatasetError(f"strategy {strategy.name!r} pastes predicted masks for the images "
                           f"without one: make them with `wbc segment {tree.root} --out MASKS` "
                           "and give that folder (wbc train --masks MASKS)")
    if strategy.mask_source == "given" and tree.predicted_masks is not None:
        raise DatasetError(f"strategy {strategy.name!r} pastes the given masks only, but this "
                           f"tree carries predicted ones from {tree.predicted_masks}; use "
                           "pretrain_aug_predicted for those, or the tree without them")
    train = train_samples(tree, config)
    notes = []
    if pastes_enabled(config):
        if not any(s.mask is not None for s in tree.wbc.subset(100)):
            raise DatasetError(f"strategy {strategy.name!r} pastes the given masks, but "
                               f"{tree.root} has no masks (WBC_100/train/mask/<Class>/); add "
                               "masks, use pretrain_aug_predicted (it pastes masks predicted "
                               "for every image, self-trained from classical ones on a tree "
                               "with none: `wbc segment`), or --strategy pretrain")
        if not any(s.mask is not None for s in train):
            notes.append(f"{config.data.subset} has no masked images: no pastes are made")
    missing = _missing_classes(train, WBC_CLASSES)
    if missing:
        notes.append(f"{config.data.subset} has no training images of {', '.join(missing)}; "
                     "the model cannot learn them (their recall will show it)")
    percent = subset_percent(config.data.subset) or 100
    return SplitPlan("WBC", WBC_CLASSES, train, tree.wbc.val, tree.wbc.test,
                     config.data.image_size, len(tree.excluded_files), tuple(notes),
                     selection_percent=percent if config.data.selection == "scaled" else 100,
                     decode_set=wbc_decode_set(tree))


def wbc_decode_set(tree: Tree) -> tuple[Sample, ...]:
    """Every WBC image of the tree (all subsets and splits): the one WBC decode cache."""
    return tuple(tree.wbc.samples())


def plan_cam16(tree: Tree, *, image_size: int) -> SplitPlan:
    """The CAM16 splits for pretraining: train; val selects; test (or half of val) reports."""
    train, val = tree.cam16.train, tree.cam16.val
    if not train or not val:
        raise DatasetError(f"{tree.cam16_dir}: pretraining needs CAM16/train and CAM16/val "
                           "with normal and tumor images")
    return SplitPlan("CAM16", CAM16_CLASSES, train, val, tree.cam16.test, image_size,
                     len(tree.excluded_files))


def scaled_selection(labels: Sequence[int] | np.ndarray, percent: int, *,
                     seed: int = SELECTION_SEED) -> np.ndarray:
    """Positions of a stratified ``percent``% of a selection split (``floor(n_c * p)`` of each
    class, at least one): nested across budgets, fixed by ``seed``."""
    labels_arr = np.asarray(labels, dtype=np.int64)
    if percent >= 100:
        return np.arange(labels_arr.size)
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        members = members[rng.permutation(members.size)]
        keep.append(members[:subset_count(members.size, percent)])
    return np.sort(np.concatenate(keep))


@dataclass(frozen=True)
class NamedSplit:
    """The samples of an evaluation split and the name its record gives it."""

    name: str  # "WBC_100/val half B (reporting)", "WBC_100/test", ...
    samples: tuple[Sample, ...]


def evaluation_splits(val: Sequence[Sample], test: Sequence[Sample], *, prefix: str = "WBC_100"
                      ) -> tuple[NamedSplit, NamedSplit]:
    """The (selection, reporting) splits of a tree's ``val`` and ``test`` samples: val and test
    when there is a test split, else the fixed stratified halves A and B of val (seed
    ``SELECTION_SEED``). The one definition that training (``load_plan``) and ``wbc evaluate``
    share, so that a model is scored later on exactly the images its run reported on. The
    selection split is whole here; ``load_plan`` scales it for a scaled-selection run."""
    if test:
        return NamedSplit(f"{prefix}/val", tuple(val)), NamedSplit(f"{prefix}/test", tuple(test))
    sel, rep = selection_reporting_split([s.label for s in val], seed=SELECTION_SEED)
    return (NamedSplit(f"{prefix}/val half A (selection)", tuple(val[i] for i in sel)),
            NamedSplit(f"{prefix}/val half B (reporting)", tuple(val[i] for i in rep)))


def _selection_name(name: str, plan: SplitPlan, n: int) -> str:
    if plan.selection_percent >= 100:
        return name
    return f"{name}, {plan.selection_percent}% of it ({n} images)"


def load_plan(plan: SplitPlan, *, cache_dir: Path | str | None = None,
              workers: int | None = None) -> PreparedData:
    """Decode the plan's files (once per cache) and assemble CPU tensors for each split."""
    decoded = decode_samples(plan.decode_files(), plan.image_size, name=plan.dataset,
                             cache_dir=cache_dir, workers=workers,
                             fingerprint=plan.decode_fingerprint)
    prefix = "WBC_100" if plan.dataset == "WBC" else plan.dataset
    whole_selection, reporting_split = evaluation_splits(plan.val, plan.test, prefix=prefix)
    reporting = eval_data(decoded, reporting_split.samples, reporting_split.name)
    keep = scaled_selection([s.label for s in whole_selection.samples], plan.selection_percent)
    chosen = [whole_selection.samples[i] for i in keep]
    selection = eval_data(decoded, chosen,
                          _selection_name(whole_selection.name, plan, len(chosen)))
    return PreparedData(_train_data(decoded, plan.train, plan.classes), selection, reporting,
                        decoded.fingerprint, plan)
