"""The cost a study says before its trials: images counted from the spec and the tree."""

from __future__ import annotations

from pathlib import Path

from study.estimate import Estimate, estimate, measure_rate, training_images
from study.spec import StudySpec
from wbc.datasets import scan_tree


def _spec(root: Path, **changes: object) -> StudySpec:
    values: dict[str, object] = {"data": str(root), "subsets": ["WBC_100", "WBC_10"],
                                 "strategies": ["scratch"], "search_trials": 2,
                                 "final_seeds": 3, "epochs": 2}
    return StudySpec().replace(**{**values, **changes})


def test_training_images_follow_the_epochs_floor_and_cap(tiny_root: Path) -> None:
    tree = scan_tree(tiny_root)
    n100, n10 = len(tree.wbc.subset(100)), len(tree.wbc.subset(10))
    spec = _spec(tiny_root, train={"min_epoch_images": 0})
    images, trials = training_images(spec, tree)
    assert trials == 2 * 5  # two cells, 2 search + 3 final trials each
    assert images == 5 * 2 * (n100 + n10)
    floored = _spec(tiny_root, train={"min_epoch_images": 40})
    assert training_images(floored, tree)[0] == 5 * 2 * (n100 + n10 * -(-40 // n10))
    capped = _spec(tiny_root, train={"min_epoch_images": 40, "max_epoch_images": 30})
    assert training_images(capped, tree)[0] == 5 * 2 * (30 + 30)


def test_pretraining_counts_both_views_of_simclr(tiny_root: Path) -> None:
    tree = scan_tree(tiny_root)
    plain = _spec(tiny_root, train={"min_epoch_images": 0})
    ssl = _spec(tiny_root, train={"min_epoch_images": 0}, strategies=["scratch", "ssl_wbc"],
                ssl={"epochs": 3}, ssl_min_epoch_images=0)
    extra = training_images(ssl, tree)[0] - 2 * training_images(plain, tree)[0]
    assert extra == 2 * 3 * len(tree.wbc.subset(100))


def test_the_estimate_is_measured_here_and_said_in_minutes(tiny_root: Path) -> None:
    rate = measure_rate(32, 16, 1, steps=1)
    assert rate > 0
    guess = estimate(_spec(tiny_root), scan_tree(tiny_root), 2, rate=100.0)
    assert isinstance(guess, Estimate) and guess.slots == 2
    assert guess.seconds == guess.images / 200 + guess.trials * 2.0 / 2
    assert guess.line().startswith("estimated: at most ")
    gpu = _spec(tiny_root, resources={"gpus_per_trial": 1.0})
    assert estimate(gpu, scan_tree(tiny_root), 1) is None
