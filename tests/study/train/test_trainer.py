from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.pretraining import TrainExecutor, ensure_sources
from study.train import RunSpec, ray_train_run, warm_cache
from wbc.config import PretrainSettings, TrainConfig
from wbc.datasets import Tree, scan_tree
from wbc.training.inputs import plan_wbc
from wbc.training.pretrain import PretrainResult, WeightsStore

FAST = {"image_size": 32, "batch_size": 16, "lr": 0.02, "color_jitter": 0.0,
        "warmup_epochs": 0.5, "bn_recalibrate": 64}


def ensure_cam16_pretrain(tree: Tree, config: TrainConfig, spec: RunSpec, *, epochs: int
                          ) -> PretrainResult:
    """The CAM16 weights as ``wbc train`` makes them: Ray Train runs, kept in the cache."""
    done = ensure_sources(["cam16"], tree, config, PretrainSettings(cam16_epochs=epochs),
                          WeightsStore(spec.cache_dir), TrainExecutor(spec),
                          cache_dir=spec.cache_dir)["cam16"]
    return PretrainResult(done.weights, done.record, done.key)


def test_wbc_never_imports_ray() -> None:
    code = ("import sys, wbc, wbc.training.loop, wbc.training.inputs, wbc.training.pretrain\n"
            "import wbc.cli, wbc.synth\n"
            "wbc.cli.build_parser()\n"
            "assert 'ray' not in sys.modules, 'wbc imported ray'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_worker_ddp_on_cpu_runs_and_reports(ray_local: None, tiny_root: Path,
                                                tmp_path: Path) -> None:
    config = TrainConfig().replace(epochs=2, **FAST)
    plan = plan_wbc(scan_tree(tiny_root), config)
    warm_cache(plan)
    spec = RunSpec(storage_path=str(tmp_path), name="ddp", workers=2)
    outcome = ray_train_run(plan, config, spec)
    assert outcome.metrics["world_size"] == 2
    assert outcome.metrics["epoch"] == 2
    assert 0.0 <= outcome.metrics["test_accuracy"] <= 1.0
    assert outcome.metrics["test_n"] == 15  # every reporting image once, gathered from 2 ranks
    state = outcome.load_checkpoint()
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]


def test_a_run_resumes_by_name_at_the_next_epoch(ray_local: None, tiny_root: Path,
                                                 tmp_path: Path) -> None:
    plan = plan_wbc(scan_tree(tiny_root), TrainConfig().replace(**FAST))
    spec = RunSpec(storage_path=str(tmp_path), name="resume-me")
    first = ray_train_run(plan, TrainConfig().replace(epochs=2, **FAST), spec)
    assert first.metrics["resumed_from_epoch"] == 0
    second = ray_train_run(plan, TrainConfig().replace(epochs=3, **FAST), spec)
    assert second.metrics["resumed_from_epoch"] == 2
    assert second.metrics["epoch"] == 3
    assert [h["epoch"] for h in second.load_checkpoint()["history"]] == [1, 2, 3]


def test_cam16_pretraining_runs_once_and_is_reused(ray_local: None, tiny_root: Path,
                                                   tmp_path: Path) -> None:
    tree = scan_tree(tiny_root)
    config = TrainConfig().replace(strategy="pretrain", **FAST)
    spec = RunSpec(storage_path=str(tmp_path), name="unused", cache_dir=str(tmp_path / "cache"))
    first = ensure_cam16_pretrain(tree, config, spec, epochs=1)
    assert first.weights.exists() and "val_accuracy" in first.metrics
    assert "test_accuracy" in first.metrics  # CAM16's own test split reports
    second = ensure_cam16_pretrain(tree, config, spec, epochs=1)
    assert second.key == first.key and second.weights == first.weights
    assert second.weights.stat().st_mtime_ns == first.weights.stat().st_mtime_ns
    other = ensure_cam16_pretrain(tree, config.replace(image_size=48), spec, epochs=1)
    assert other.key != first.key


@pytest.mark.slow  # a SimCLR run through Ray Train: about 40 s on an idle 2-core CPU
def test_in_domain_ssl_trains_on_wbc100_train_only_and_is_probed_on_wbc(
        ray_local: None, tiny_root: Path, tmp_path: Path) -> None:
    """ssl_wbc: SimCLR on WBC_100/train's images (never val's), a k-NN probe from the labelled
    training images to the selection split, the WBC model started from its backbone."""
    from study.pretraining import sources_of
    from wbc.config import SSLConfig
    from wbc.training.pretrain import initial_model

    tree = scan_tree(tiny_root)
    assert sources_of(["scratch", "ssl_wbc"]) == ["wbc_ssl"]
    config = TrainConfig().replace(strategy="ssl_wbc", **FAST)
    settings = PretrainSettings(ssl=SSLConfig(image_size=32, epochs=1, batch_size=8,
                                              probe_steps=5, knn_k=3))
    spec = RunSpec(storage_path=str(tmp_path), name="unused", cache_dir=str(tmp_path / "cache"))
    done = ensure_sources(["wbc_ssl"], tree, config, settings, WeightsStore(tmp_path / "store"),
                          TrainExecutor(spec), cache_dir=spec.cache_dir, say=lambda _: None)
    record = done["wbc_ssl"].record
    assert set(done) == {"wbc_ssl"}  # no pRCC, no CAM16 needed
    assert record["ssl_images"] == len(tree.wbc.subset(100)) == 60
    assert record["probe"] == "WBC" and 0.0 <= record["knn_accuracy"] <= 1.0
    assert "knn_accuracy_random" in record
    assert (tmp_path / "store" / "pretrain" / f"wbc_ssl-{done['wbc_ssl'].key}").is_dir()
    model = initial_model(config, pretrained=done["wbc_ssl"].weights)
    assert model.fc.out_features == 5


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["scratch", "pretrain", "pretrain_aug"])
def test_wbc_train_command_end_to_end(tiny_root: Path, tmp_path: Path, strategy: str) -> None:
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-m", "wbc", "train", "--data", str(tiny_root), "--strategy", strategy,
         "--epochs", "2", "--pretrain-epochs", "1", "--image-size", "32", "--batch-size", "16",
         "--aug-factor", "2", "--storage", str(tmp_path / "runs"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for text in ("accuracy", "macro-F1", "balanced accuracy", "recall Basophil",
                 "reporting split: WBC_100/val half B"):
        assert text in run.stdout
    if strategy != "scratch":
        assert "CAM16 pretraining: val accuracy" in run.stdout
    # The run's best-epoch model, in the format wbc predict reads, with the run's figures.
    from wbc.classifier.model_file import load_classifier

    line = next(x for x in run.stdout.splitlines() if x.startswith("model: "))
    card = load_classifier(Path(line.split()[1])).card
    assert (card.strategy, card.subset, card.image_size) == (strategy, "WBC_100", 32)
    assert card.figures["test_accuracy"] is not None
