from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.treegen import make_cam16_prcc, make_wbc_tree
from wbc.augment import device_constant, normalize
from wbc.config import OptimConfig, TrainConfig
from wbc.datasets import DatasetError, scan_tree
from wbc.datasets.layout import WBC_CLASSES
from wbc.training.distributed import autocast
from wbc.training.inputs import (
    PreparedData,
    TrainData,
    load_plan,
    plan_cam16,
    plan_wbc,
    selection_reporting_split,
)
from wbc.training.loop import _class_weights, fit, load_checkpoint, save_checkpoint
from wbc.training.resnet import build_resnet18
from wbc.training.schedule import Schedule, build_optimizer
from wbc.training.seeding import seed_everything

FAST = {"image_size": 32, "batch_size": 16, "lr": 0.02, "color_jitter": 0.0,
        "warmup_epochs": 0.5}


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_wbc_tree(root, {c: (16, 4, 8) for c in WBC_CLASSES})
    make_cam16_prcc(root, n=6)
    return root


def _prepared(root: Path, config: TrainConfig, cache: Path) -> PreparedData:
    return load_plan(plan_wbc(scan_tree(root), config), cache_dir=cache)


def test_lr_schedules_are_pure_functions_of_the_step() -> None:
    cosine = OptimConfig(lr=1.0, schedule="cosine")
    schedule = Schedule.for_run(cosine, steps_per_epoch=10, epochs=10)
    values = [schedule.lr(s) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    step = OptimConfig(lr=1.0, schedule="step", step_every=2, step_gamma=0.5, warmup_epochs=0)
    schedule = Schedule.for_run(step, steps_per_epoch=10, epochs=6)
    assert [schedule.lr(s) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]


def test_class_weights_are_sklearn_balanced_and_zero_for_an_absent_class() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor([0, 0, 0, 1, 2, 2, 4, 4, 4, 4, 4, 4])
    with_all = torch.cat([labels, torch.tensor([3])])
    assert _class_weights(with_all, 5).tolist() == pytest.approx(
        compute_class_weight("balanced", classes=np.arange(5), y=with_all.numpy()).tolist())
    # Class 3 absent (a tiny subset): weight 0, the others n / (num_classes * count), the
    # denominator counting all 5 classes (sklearn raises here).
    assert _class_weights(labels, 5).tolist() == pytest.approx(
        [12 / (5 * 3), 12 / 5, 12 / (5 * 2), 0.0, 12 / (5 * 6)])
    with pytest.raises(ValueError, match="classes should have valid labels"):
        compute_class_weight("balanced", classes=np.arange(5), y=labels.numpy())


def test_large_batch_rules_scale_the_peak_rate_by_the_global_batch() -> None:
    linear = OptimConfig(lr=0.1, batch_size=512, lr_rule="linear", lr_reference_batch=256)
    assert linear.peak_lr() == pytest.approx(0.2)
    assert linear.peak_lr(workers=4) == pytest.approx(0.8)  # global batch 2048
    sqrt = OptimConfig(lr=0.1, batch_size=1024, lr_rule="sqrt", lr_reference_batch=256)
    assert sqrt.peak_lr() == pytest.approx(0.2)
    assert OptimConfig(lr=0.1, batch_size=1024).peak_lr(workers=8) == 0.1  # "none"
    # The schedule warms up to, and decays from, the scaled rate.
    schedule = Schedule.for_run(linear, steps_per_epoch=10, epochs=10, workers=4)
    assert schedule.lr(9) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="lr_rule='cubic'"):
        OptimConfig(lr_rule="cubic")  # type: ignore[arg-type]


def test_optimisers_are_the_fused_kind() -> None:
    model = build_resnet18(5)
    for name in ("sgd", "adamw"):
        optimizer = build_optimizer(model, OptimConfig(optimizer=name))
        assert optimizer.defaults["fused"] is True, name


def test_precision_auto_means_fp32_on_a_cpu(tiny_tree: Path) -> None:
    model = build_resnet18(5)
    x = torch.randn(2, 3, 32, 32)
    for precision, dtype in (("auto", torch.float32), ("fp32", torch.float32),
                             ("bf16", torch.bfloat16)):
        with autocast(torch.device("cpu"), precision):
            assert model(x).dtype == dtype, precision
    assert TrainConfig().precision == "auto"


def test_normalize_keeps_its_constants_on_the_device_once() -> None:
    x = torch.rand(4, 3, 8, 8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(normalize(x, mean, std), want)
    assert normalize(x, mean, std) is not x
    # Made once per (values, device, dtype): no host-to-device copy per batch.
    assert device_constant((0.5, 0.25), (2,), torch.device("cpu"), torch.float32) is device_constant(
        (0.5, 0.25), (2,), torch.device("cpu"), torch.float32)


def test_selection_and_reporting_halves_are_disjoint_stratified_and_fixed() -> None:
    labels = np.repeat(np.arange(5), [3, 10, 20, 4, 50])
    sel, rep = selection_reporting_split(labels)
    assert not set(sel) & set(rep) and len(sel) + len(rep) == labels.size
    for cls in range(5):
        assert abs((labels[sel] == cls).sum() - (labels[rep] == cls).sum()) <= 1
    again = selection_reporting_split(labels)
    np.testing.assert_array_equal(sel, again[0])


def test_the_loop_learns(tiny_tree: Path, tmp_path: Path) -> None:
    config = TrainConfig().replace(epochs=6, **FAST)
    data = _prepared(tiny_tree, config, tmp_path)
    seed_everything(0)
    epochs: list[dict[str, Any]] = []
    result = fit(build_resnet18(5), config, data.train, data.selection, data.reporting,
                 on_epoch=lambda m, _c: epochs.append(m))
    losses = [e["train_loss"] for e in epochs]
    assert losses[-1] < 0.5 * losses[0]
    assert result.selection["accuracy"] >= 0.6  # chance is 0.2
    assert result.reporting["macro_f1"] >= 0.5
    assert result.metrics["test_n"] == data.reporting.labels.numel()
    assert [e["epoch"] for e in epochs] == list(range(1, 7))
    assert "test_accuracy" in epochs[-1] and "test_accuracy" not in epochs[0]
    assert set(result.metrics) >= {"val_accuracy", "val_macro_f1", "val_balanced_accuracy",
                                   "test_recall_Basophil", "best_epoch", "train_images"}


def test_resume_continues_at_the_next_epoch(tiny_tree: Path, tmp_path: Path) -> None:
    config = TrainConfig().replace(epochs=3, **FAST)
    data = _prepared(tiny_tree, config, tmp_path)
    saved: dict[int, Path] = {}

    def keep(metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is not None:
            saved[metrics["epoch"]] = tmp_path / f"e{metrics['epoch']}.pt"
            save_checkpoint(checkpoint, saved[metrics["epoch"]])

    seed_everything(1)
    full = fit(build_resnet18(5), config, data.train, data.selection, data.reporting,
               on_epoch=keep)
    state = load_checkpoint(saved[2])  # weights_only=True inside
    assert state["epoch"] == 2 and state["config"]["epochs"] == 3
    seen: list[int] = []
    seed_everything(2)  # a different init: everything must come from the checkpoint
    resumed = fit(build_resnet18(5), config, data.train, data.selection, data.reporting,
                  on_epoch=lambda m, _c: seen.append(m["epoch"]), resume=state)
    assert seen == [3]
    assert resumed.resumed_from_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # The same data order and augmentation streams: epoch 3 trains like the first run's.
    assert resumed.history[2]["train_loss"] == pytest.approx(full.history[2]["train_loss"],
                                                             rel=0.05)


def test_mask_augmentation_adds_factor_images_per_mask(tiny_tree: Path, tmp_path: Path,
                                                       ) -> None:
    config = TrainConfig().replace(epochs=1, strategy="pretrain_aug", aug_factor=3,
                                   background="other", **FAST)
    data = _prepared(tiny_tree, config, tmp_path)
    seed_everything(0)
    result = fit(build_resnet18(5), config, data.train, data.selection, data.reporting)
    masked = int(data.train.has_mask.sum())
    assert masked == 20
    assert result.train_images == data.train.labels.numel() + 3 * masked


@pytest.mark.parametrize("overrides", [{"precision": "bf16"}, {"imbalance": "weighted"},
                                       {"lr_rule": "linear", "lr_reference_batch": 8},
                                       {"imbalance": "balanced", "optimizer": "adamw",
                                        "lr": 1e-3}])
def test_options_run(tiny_tree: Path, tmp_path: Path, overrides: dict[str, Any]) -> None:
    config = TrainConfig().replace(epochs=1, **{**FAST, **overrides})
    data = _prepared(tiny_tree, config, tmp_path)
    result = fit(build_resnet18(5), config, data.train, data.selection, data.reporting)
    assert np.isfinite(result.history[0]["train_loss"])


def test_bad_inputs_say_what_to_do(tmp_path: Path) -> None:
    no_masks = make_wbc_tree(tmp_path / "a", {c: (4, 0, 2) for c in WBC_CLASSES})
    tree = scan_tree(no_masks)
    with pytest.raises(DatasetError, match="pretrains on CAM16"):
        plan_wbc(tree, TrainConfig().replace(strategy="pretrain"))
    make_cam16_prcc(no_masks)
    tree = scan_tree(no_masks)
    with pytest.raises(DatasetError, match="has no masks"):
        plan_wbc(tree, TrainConfig().replace(strategy="pretrain_aug"))
    assert plan_wbc(tree, TrainConfig().replace(strategy="pretrain")).train
    (no_masks / "WBC_100/val/data/Monocyte/va0000.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="not usable"):
        plan_wbc(scan_tree(no_masks), TrainConfig())
    # A subset without a class trains, and says so.
    root = make_wbc_tree(tmp_path / "b", {c: (4, 1, 2) for c in WBC_CLASSES})
    plan = plan_wbc(scan_tree(root), TrainConfig().replace(subset="WBC_50"))
    assert len(plan.train) == 10
    # Derived subsets keep one image of every class (floor(4 * 10%) would be none) ...
    plan = plan_wbc(scan_tree(root), TrainConfig().replace(subset="WBC_10"))
    assert sorted(s.label for s in plan.train) == [0, 1, 2, 3, 4] and not plan.notes
    # ... a subset on disk is used as it is, and one that lacks a class says so.
    for cls in WBC_CLASSES[1:]:
        source = root / "WBC_100/train/data" / cls / "tr0000.png"
        target = root / "WBC_10/train/data" / cls / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    plan = plan_wbc(scan_tree(root), TrainConfig().replace(subset="WBC_10"))
    assert len(plan.train) == 4 and any("no training images of Basophil" in n
                                        for n in plan.notes)


def test_scaled_selection_picks_on_a_part_as_large_as_the_budget(tiny_tree: Path,
                                                                  tmp_path: Path) -> None:
    tree = scan_tree(tiny_tree)
    full = load_plan(plan_wbc(tree, TrainConfig().replace(subset="WBC_10", **FAST)),
                     cache_dir=tmp_path)
    scaled = load_plan(plan_wbc(tree, TrainConfig().replace(subset="WBC_10", selection="scaled",
                                                            **FAST)), cache_dir=tmp_path)
    # 8 val images a class, halved: 4 select; 10% of 4 is 0, at least one of each class.
    assert full.selection.labels.numel() == 20 and scaled.selection.labels.numel() == 5
    assert sorted(scaled.selection.labels.tolist()) == [0, 1, 2, 3, 4]
    assert "10% of it (5 images)" in scaled.selection.name
    # The reporting split is the same whatever selects: budgets stay comparable.
    assert torch.equal(full.reporting.images, scaled.reporting.images)
    wbc100 = load_plan(plan_wbc(tree, TrainConfig().replace(selection="scaled", **FAST)),
                       cache_dir=tmp_path)
    assert torch.equal(wbc100.selection.images, full.selection.images)


def test_cam16_plan_reports_on_its_test_split(tiny_tree: Path, tmp_path: Path) -> None:
    data = load_plan(plan_cam16(scan_tree(tiny_tree), image_size=32), cache_dir=tmp_path)
    assert data.train.class_names == ("normal", "tumor")
    assert data.reporting.name == "CAM16/test" and data.selection.name == "CAM16/val"
    assert torch.equal(torch.unique(data.train.labels), torch.tensor([0, 1]))


def test_training_refuses_an_empty_training_split(tiny_tree: Path, tmp_path: Path) -> None:
    config = TrainConfig().replace(epochs=1, **FAST)
    data = _prepared(tiny_tree, config, tmp_path / "cache")
    empty = TrainData(data.train.images[:0], data.train.labels[:0], data.train.has_mask[:0],
                      data.train.masks[:0], data.train.class_names)
    with pytest.raises(ValueError, match=r"training split holds no images.*WBC_100"):
        fit(build_resnet18(5), config, empty, data.selection, data.reporting)


def test_max_epoch_images_caps_an_epoch_with_a_fresh_part_each_epoch() -> None:
    from wbc.training.loop import _epoch_order, steps_per_epoch

    labels = torch.arange(100) % 5
    config = TrainConfig().replace(batch_size=16, max_epoch_images=40)
    first, second = (_epoch_order(labels, config=config, epoch=e, rank=0, workers=1)
                     for e in (1, 2))
    assert first.numel() == second.numel() == 40
    assert len(set(first.tolist())) == 40  # no image twice within an epoch
    assert set(first.tolist()) != set(second.tolist())  # another part of the set
    assert steps_per_epoch(100, config.optim, 1) == 3  # 40 images in batches of 16
    # The floor still applies below the cap; no cap (0) is one pass.
    small = TrainConfig().replace(batch_size=16, min_epoch_images=64, max_epoch_images=40)
    assert _epoch_order(torch.arange(10) % 5, config=small, epoch=1, rank=0,
                        workers=1).numel() == 40
    assert _epoch_order(labels, config=TrainConfig(), epoch=1, rank=0, workers=1).numel() == 100
    with pytest.raises(ValueError, match="max_epoch_images"):
        TrainConfig().replace(max_epoch_images=-1)


def test_min_epoch_steps_shrinks_the_batch_of_a_small_epoch_only() -> None:
    from wbc.training.loop import epoch_batch, steps_per_epoch, train_one_epoch

    config = TrainConfig().replace(batch_size=64, min_epoch_images=512, min_epoch_steps=20)
    # 13 images (WBC_1 of the quick tree) make a 520-image epoch: 9 steps of 64, so 20 of 26.
    assert epoch_batch(13, config.optim, 1) == 26
    assert steps_per_epoch(13, config.optim, 1) == 20
    # 1,267 images (its WBC_100) already give 20 steps of 64: the batch stays.
    assert epoch_batch(1267, config.optim, 1) == 64
    assert steps_per_epoch(1267, config.optim, 1) == 20
    # Per rank: 512 images on 2 ranks are 256 each, 20 steps of 13.
    assert epoch_batch(13, config.optim, 2) == 13
    # Never a batch of one, which BatchNorm cannot train on; 0 keeps batch_size.
    assert epoch_batch(3, TrainConfig().replace(min_epoch_steps=100).optim, 1) == 2
    assert epoch_batch(13, TrainConfig().replace(min_epoch_images=512).optim, 1) == 64
    with pytest.raises(ValueError, match="min_epoch_steps"):
        TrainConfig().replace(min_epoch_steps=-1)
    # The loop takes the steps the schedule was planned on.
    small = config.replace(image_size=32, min_epoch_images=64, batch_size=16, min_epoch_steps=8)
    model = build_resnet18(5)
    images = torch.randint(0, 256, (10, 32, 32, 3), dtype=torch.uint8)
    labels = torch.arange(10) % 5
    schedule = Schedule.for_run(small.optim, steps_per_epoch=steps_per_epoch(10, small.optim, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    row = train_one_epoch(model, optimizer, images, labels, config=small, epoch=1, step=0,
                          schedule=schedule, loss_weights=None)
    assert row["steps"] == steps_per_epoch(10, small.optim, 1) == 8  # 70 images, batches of 9
