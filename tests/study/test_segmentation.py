"""A study with predicted masks on a real local Ray: the segmenter trained once into the results
folder and recorded, every training image of pretrain_aug_predicted pasted, the given-mask
strategy untouched, a resume reusing the masks, and the report's answer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.runner import run_study
from study.spec import StudySpec, preset
from wbc.datasets import scan_tree
from wbc.segment import mask_path
from wbc.segment.pipeline import METHODS

SPEC: dict[str, Any] = {
    "name": "masks", "image_size": 32, "subsets": ["WBC_100", "WBC_10"],
    "strategies": ["pretrain", "pretrain_aug", "pretrain_aug_predicted"], "search_trials": 1,
    "startup_trials": 1, "epochs": 1, "grace_epochs": 1, "final_seeds": 2,
    "pretrain_epochs": 1,
    "train": {"batch_size": 16, "bn_recalibrate": 32, "min_epoch_images": 32,
              "color_jitter": 0.0, "warmup_epochs": 0.5},
    # A fixed aug_factor (the search's range pinned) makes the count of pastes exact.
    "space": {"aug_factor_min": 2, "aug_factor_max": 2},
    "segmentation": {"image_size": 32, "steps": 4, "folds": 2, "batch_size": 8},
}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def masks_study(ray_local: None, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, StudySpec, dict[str, Any], dict[str, str]]:
    before = _digests(tiny_root)
    spec = StudySpec.from_dict({**StudySpec().to_dict(), **SPEC, "data": str(tiny_root)})
    results = tmp_path_factory.mktemp("masks-study") / "results"
    record = run_study(spec, results, quiet=True)
    return results, spec, record, before


def test_the_segmenter_runs_once_and_is_recorded(masks_study: tuple[Path, StudySpec, dict,
                                                                   dict], tiny_root: Path
                                                 ) -> None:
    results, _, record, before = masks_study
    assert record["status"] == "complete"
    seg = record["segmentation"]
    tree = scan_tree(tiny_root)
    masked = {s.path for s in tree.wbc.samples() if s.mask is not None}
    unmasked = {s.path: s for s in tree.wbc.samples() if s.mask is None}.values()
    # Derived subsets repeat WBC_100's samples: each image once.
    assert seg["masked_images"] == len(masked) and seg["written"] == len(unmasked)
    assert set(seg["heldout"]) == {"folds", *METHODS} and seg["heldout"]["folds"] == 2
    assert seg["heldout"]["model"]["n"] == len(masked)
    assert 0.0 <= seg["heldout"]["model"]["iou"] <= 1.0
    assert seg["seconds"]["total"] > 0 and seg["settings"]["steps"] == 4
    assert record["sessions"][-1]["segmentation_seconds"] > 0
    for sample in unmasked:  # a PNG for every image without a mask, in the results folder
        assert mask_path(results / "masks", tree.root, sample.path).is_file()
    assert _digests(tiny_root) == before  # the tree itself: not a byte changed


def test_only_the_predicted_strategy_pastes_every_image(
        masks_study: tuple[Path, StudySpec, dict, dict], tiny_root: Path) -> None:
    results, _, record, _ = masks_study
    trials = pd.read_parquet(results / "trials.parquet")
    tree = scan_tree(tiny_root)
    full = tree.wbc.subset(100)
    n, n_masked = len(full), sum(s.mask is not None for s in full)
    by_strategy = trials[trials["subset"] == "WBC_100"].groupby("strategy")
    images = by_strategy["train_images"].agg(set).to_dict()
    # aug_factor 2: given masks paste the masked images only; predicted ones every image.
    assert images["pretrain"] == {n}
    assert images["pretrain_aug"] == {n + 2 * n_masked}
    assert images["pretrain_aug_predicted"] == {3 * n}
    prints = trials.groupby("strategy")["data_fingerprint"].agg(set).to_dict()
    assert prints["pretrain_aug_predicted"] == {record["segmentation"]["fingerprint_with_masks"]}
    assert prints["pretrain_aug"] == prints["pretrain"] == {record["data"]["fingerprint"]}


def test_the_report_answers_the_masks_question(masks_study: tuple[Path, StudySpec, dict, dict],
                                               tmp_path: Path) -> None:
    from study.report import write_report

    results, _, record, _ = masks_study
    report, _ = write_report(results, tmp_path / "report")
    text = report.read_text()
    answer = next(line for line in text.splitlines()
                  if line.startswith("- **With masks for every image"))
    assert "at WBC_10?**" in answer  # the study's smallest budget
    assert "predicted minus given" in answer and "pretrain_aug_predicted minus pretrain" in answer
    iou = record["segmentation"]["heldout"]["model"]["iou"]
    assert f"{iou:.3f}" in answer
    section = text[text.index("## Masks for all data"):]
    assert "| held-out masked images (2-fold) | classical (Otsu + morphology) |" in section
    assert (tmp_path / "report" / "figures" / "segmentation.png").is_file()


def test_a_resume_reuses_the_masks(masks_study: tuple[Path, StudySpec, dict, dict]) -> None:
    results, _, record, _ = masks_study
    stamp = (results / "masks" / "segment.json").stat().st_mtime_ns
    again = run_study(None, results, resume=True, quiet=True)
    assert again["status"] == "complete"
    assert (results / "masks" / "segment.json").stat().st_mtime_ns == stamp
    assert again["segmentation"]["key"] == record["segmentation"]["key"]
    assert json.loads((results / "study.json").read_text())["segmentation"]["written"] == \
        record["segmentation"]["written"]


def test_spec_checks_the_segmentation_settings() -> None:
    assert preset("quick-masks").needs_segmentation and not preset("quick").needs_segmentation
    with pytest.raises(ValueError, match="segment_encoder='prcc_ssl'"):
        StudySpec(segment_encoder="prcc_ssl")  # the quick strategies pretrain no SimCLR
    with pytest.raises(ValueError, match="multiple of 32"):
        preset("quick-masks").with_overrides(["segmentation.image_size=48"])


@pytest.fixture
def maskless_root(tmp_path: Path) -> Path:
    """WBC_100 without a single mask (as PBC, BCCD or Raabin come), with CAM16."""
    from tests.treegen import make_cam16_prcc, make_wbc_tree
    from wbc.datasets.layout import WBC_CLASSES

    root = tmp_path / "tree"
    make_wbc_tree(root, {c: (4, 0, 2) for c in WBC_CLASSES})
    make_cam16_prcc(root, n=4)
    return root


def test_a_tree_without_masks_takes_predicted_masks_and_refuses_given_ones(
        maskless_root: Path, tmp_path: Path) -> None:
    from study.data import StudyError, check_tree

    tree = scan_tree(maskless_root, workers=1)
    assert not any(s.mask is not None for s in tree.wbc.samples())
    config = StudySpec().base_config()
    # Its masks come from the study's segmentation, self-trained from classical ones.
    check_tree(tree, (("WBC_100", "pretrain_aug_predicted"), ("WBC_10", "pretrain_aug_predicted"),
                      ("WBC_100", "pretrain")), config)
    with pytest.raises(StudyError, match="cell WBC_100 x pretrain_aug: ") as refused:
        check_tree(tree, (("WBC_100", "pretrain_aug"),), config)
    message = str(refused.value)
    assert str(maskless_root) in message and "has no masks" in message
    assert "use pretrain_aug_predicted" in message and "wbc segment" in message

    spec = StudySpec.from_dict({**StudySpec().to_dict(), **SPEC, "data": str(maskless_root)})
    with pytest.raises(StudyError, match="pretrain_aug"):
        run_study(spec, tmp_path / "results", quiet=True)
    assert not (tmp_path / "results").exists()  # refused before the folder


def test_the_study_self_trains_the_segmenter_on_a_tree_without_masks(
        ray_local: None, maskless_root: Path, tmp_path: Path) -> None:
    from study.segmentation import ensure_masks
    from wbc.config import SegmentSettings
    from wbc.segment import PATH_SELF

    before = _digests(maskless_root)
    tree = scan_tree(maskless_root, workers=1)
    lines: list[str] = []
    masks = ensure_masks(tree, SegmentSettings(**SPEC["segmentation"]), tmp_path / "results",
                         image_size=32, encoder=None, cpus=1, use_gpu=False,
                         cache_dir=str(tmp_path / "cache"), say=lines.append)
    record = masks.record
    images = {s.path for s in tree.wbc.samples()}
    assert record["path"] == PATH_SELF and record["heldout"] is None
    assert record["given_masks"] == 0 and record["written"] == len(images)
    pseudo = record["pseudo_labels"]
    assert 0 < pseudo["kept"] <= pseudo["candidates"] == len(images)
    # Every image of the filled tree has a mask, all of them predicted.
    filled = list(masks.tree.wbc.samples())
    assert all(s.mask is not None and s.mask.is_relative_to(tmp_path / "results" / "masks")
               for s in filled)
    assert "self-trained" in lines[0]
    assert lines[-1] == (f"segmentation: {len(images)} masks predicted; {PATH_SELF} (no given "
                         f"masks; {pseudo['kept']} of {len(images)} kept as pseudo-labels); "
                         "no true masks to score against")
    assert _digests(maskless_root) == before
