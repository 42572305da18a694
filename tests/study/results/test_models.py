"""Which models a study keeps: the rule of ``keep_models`` on real model folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from study.results.kept import best_seed, kept_models, model_folder, place_model, settle_models
from wbc.classifier.model_file import MODEL_FILE, Card, read_card, save_classifier
from wbc.datasets.layout import WBC_CLASSES
from wbc.training.resnet import build_resnet18

CELL = "WBC_10-pretrain"


@pytest.fixture(scope="module")
def weights() -> dict[str, Any]:
    return build_resnet18(len(WBC_CLASSES)).state_dict()


def _row(seed: int, f1: float | None, status: str = "completed") -> dict[str, Any]:
    return {"cell": CELL, "phase": "final", "seed": seed, "status": status,
            "val_macro_f1": f1, "trial_id": f"{CELL}/final-seed{seed}"}


def _study(tmp_path: Path, weights: dict[str, Any], seeds: list[int]) -> Path:
    """A results folder whose final trials each left a model, in Tune's folder and models/."""
    results = tmp_path / "results"
    for seed in seeds:
        card = Card(classes=WBC_CLASSES, image_size=32, mean=(0.5,) * 3, std=(0.2,) * 3,
                    cell=CELL, seed=seed, trial_key=f"{CELL}/final-seed{seed}")
        checkpoint = results / "tune" / f"{CELL}-final-seed{seed}" / "checkpoint_000000"
        save_classifier(weights, card, checkpoint)
        place_model(results, CELL, seed, checkpoint)
    return results


def test_best_seed_is_the_best_selection_score_and_the_lower_seed_on_a_tie() -> None:
    assert best_seed([_row(1, 0.5), _row(2, 0.7), _row(3, 0.6)]) == 2
    assert best_seed([_row(4, 0.7), _row(2, 0.7)]) == 2
    assert best_seed([_row(1, 0.9, "error"), _row(2, 0.1)]) == 2  # a failed run keeps nothing
    assert best_seed([_row(1, None, "error")]) is None


def test_best_keeps_one_model_once_every_seed_is_in(tmp_path: Path,
                                                    weights: dict[str, Any]) -> None:
    results = _study(tmp_path, weights, [1, 2, 3])
    # Two of three seeds in: nothing is removed yet (the third might be better).
    assert settle_models(results, [_row(1, 0.4), _row(2, 0.8)], keep="best", final_seeds=3) == []
    assert len(kept_models(results)) == 3
    rows = [_row(1, 0.4), _row(2, 0.8), _row(3, 0.6)]
    removed = settle_models(results, rows, keep="best", final_seeds=3)
    assert sorted(removed) == [model_folder(results, CELL, 1), model_folder(results, CELL, 3)]
    assert [(m.cell, m.seed) for m in kept_models(results)] == [(CELL, 2)]
    assert read_card(model_folder(results, CELL, 2)).seed == 2
    # Tune's copies of the others are emptied, with a note saying where the kept one is.
    tune = results / "tune"
    assert (tune / f"{CELL}-final-seed2/checkpoint_000000" / MODEL_FILE).exists()
    note = tune / f"{CELL}-final-seed1/checkpoint_000000/dropped.txt"
    assert not note.with_name(MODEL_FILE).exists() and "seed-2" in note.read_text()
    assert settle_models(results, rows, keep="best", final_seeds=3) == []  # idempotent


def test_a_failed_seed_counts_as_in_and_all_keeps_every_model(tmp_path: Path,
                                                             weights: dict[str, Any]) -> None:
    results = _study(tmp_path, weights, [1, 2])
    rows = [_row(1, 0.3), _row(2, 0.5), _row(3, None, "error")]
    assert settle_models(results, rows, keep="all", final_seeds=3) == []
    assert len(kept_models(results)) == 2
    settle_models(results, rows, keep="best", final_seeds=3)
    assert [m.seed for m in kept_models(results)] == [2]


def test_placing_a_model_again_replaces_it_whole(tmp_path: Path,
                                                 weights: dict[str, Any]) -> None:
    results = _study(tmp_path, weights, [1])
    first = model_folder(results, CELL, 1)
    inode = (first / MODEL_FILE).stat().st_ino
    again = _study(tmp_path / "again", weights, [1])
    place_model(results, CELL, 1, again / "tune" / f"{CELL}-final-seed1" / "checkpoint_000000")
    assert (first / MODEL_FILE).stat().st_ino != inode
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # nothing staged
