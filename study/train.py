"""Ray Train entry: one training run (one cell, fixed hyperparameters) on Ray Train workers.

The per-worker function is thin (house style 3): it turns its config into typed objects, maps
the decode cache, builds the model for the strategy, wraps it with ``prepare_model`` (DDP across
workers, gloo on CPU, NCCL on GPU) and hands ``wbc.train.fit`` a callback that turns epochs into
``ray.train.report`` calls with checkpoints. ``ray.train.get_checkpoint`` resumes it.

Ray Train V2 costs about a second per report (DESIGN.md), so a run reports every
``report_every`` epochs, and the last report carries the final record.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer, get_device, prepare_model

from wbc.cache import decode_samples
from wbc.config import TrainConfig
from wbc.data import SplitPlan, load_plan, plan_cam16
from wbc.datasets import Tree
from wbc.pretrain import (
    PretrainResult,
    cached_pretrain,
    initial_model,
    pretrain_config,
    pretrain_key,
    pretrain_lock,
    store_pretrain,
)
from wbc.seeding import seed_everything
from wbc.train import fit, load_checkpoint, save_checkpoint

__all__ = [
    "RunSpec",
    "TrainOutcome",
    "build_trainer",
    "ensure_cam16_pretrain",
    "run_training",
    "train_loop_per_worker",
    "warm_cache",
]

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class RunSpec:
    """Where and on what a run executes."""

    storage_path: str  # absolute path or URI; shared (NFS, EFS, s3://) on a multi-node cluster
    name: str  # stable and unique per run: the same name resumes the same run
    workers: int = 1  # Ray Train workers (DDP ranks)
    use_gpu: bool = False
    gpus_per_worker: float = 1.0  # below 1 packs several runs on one GPU
    cpus_per_worker: float = 1.0
    max_failures: int = 0  # worker crashes retried from the last checkpoint
    cache_dir: str | None = None  # decode cache; default $WBC_CACHE_DIR or ~/.cache/wbc
    log_level: str = "WARNING"  # Ray Train's own logs; INFO prints every report


@dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, Any]  # the final record: val_* (selection), test_* (reporting), ...
    checkpoint: Checkpoint | None  # the run's last checkpoint (complete: best weights too)
    path: str  # the run's folder in storage

    def load_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint's contents (``wbc.train.fit``'s checkpoint dict)."""
        if self.checkpoint is None:
            raise RuntimeError(f"the run at {self.path} reported no checkpoint")
        with self.checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_FILE)


def warm_cache(plan: SplitPlan, cache_dir: str | None = None) -> str:
    """Decode the plan's files on this node now (once), so workers only map the cache."""
    decoded = decode_samples([*plan.train, *plan.val, *plan.test], plan.image_size,
                             name=plan.dataset, cache_dir=cache_dir)
    return decoded.fingerprint


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    started = time.perf_counter()
    config = TrainConfig.from_flat(loop_config["config"])
    plan: SplitPlan = loop_config["plan"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    threads = max(1, int(loop_config.get("threads", 1)))
    torch.set_num_threads(threads)
    seed_everything(config.seed, rank=rank, deterministic=config.deterministic)
    device = get_device()
    data = load_plan(plan, cache_dir=loop_config.get("cache_dir")).to(device)
    pretrained = loop_config.get("pretrained")
    model = initial_model(config, pretrained=Path(pretrained) if pretrained else None,
                          num_classes=len(plan.classes))
    if config.model.channels_last:
        # Before DDP wraps it: DDP's gradient buckets take the parameters' strides as they are.
        model = model.to(memory_format=torch.channels_last)
    model = prepare_model(model)

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(Path(folder) / CHECKPOINT_FILE)

    resumed_from = int(resume["epoch"]) if resume is not None else 0
    extra = {**loop_config.get("extra", {}), "notes": "; ".join(plan.notes),
             "excluded_files": plan.excluded_files, "data_fingerprint": data.fingerprint,
             "world_size": context.get_world_size(), "resumed_from_epoch": resumed_from,
             "device": str(device), "setup_seconds": time.perf_counter() - started}

    def on_epoch(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        metrics = {**metrics, **extra}
        if resume is not None and metrics["epoch"] == config.optim.epochs:
            # Epochs before the resume: the caller's record of them may be gone.
            metrics["epoch_history"] = [{k: v for k, v in row.items()
                                         if isinstance(v, int | float | str)}
                                        for row in resume["history"]]
        if state is not None and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                                 checkpoint_dir_name=f"epoch-{metrics['epoch']:05d}")
        else:
            ray.train.report(metrics)

    fit(model, config, data.train, data.selection, data.reporting, on_epoch=on_epoch,
        resume=resume)


def build_trainer(plan: SplitPlan, config: TrainConfig, spec: RunSpec, *,
                  pretrained: Path | None = None, callbacks: list[Any] | None = None,
                  extra_metrics: dict[str, Any] | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` for one run; Tune trials add their report callback."""
    resources: dict[str, float] = {"CPU": spec.cpus_per_worker}
    if spec.use_gpu:
        resources["GPU"] = spec.gpus_per_worker
    # mypy resolves ray.train.RunConfig to the Train V1 class; V2's (what runs) has these fields.
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_flat(),
            "plan": plan,
            "pretrained": str(pretrained) if pretrained else None,
            "cache_dir": spec.cache_dir,
            "threads": max(1, int(spec.cpus_per_worker)),
            "extra": dict(extra_metrics or {}),  # added to every report
        },
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(  # type: ignore[call-arg]
            name=spec.name,
            storage_path=spec.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level=spec.log_level),
        ),
    )


def run_training(plan: SplitPlan, config: TrainConfig, spec: RunSpec, *,
                 pretrained: Path | None = None) -> TrainOutcome:
    """Run one training to completion (or resume it) and return its final record."""
    if not (Path(spec.storage_path).is_absolute() or "://" in spec.storage_path):
        raise ValueError(f"storage path {spec.storage_path} must be absolute: under `ray job "
                         "submit` the working directory is a temporary copy")
    result = build_trainer(plan, config, spec, pretrained=pretrained).fit()
    if result.error is not None:
        raise result.error
    return TrainOutcome(dict(result.metrics or {}), result.checkpoint, str(result.path))


def ensure_cam16_pretrain(tree: Tree, wbc_config: TrainConfig, spec: RunSpec, *, epochs: int,
                          lr: float | None = None, log: Any = print,
                          store_dir: Path | str | None = None) -> PretrainResult:
    """The report's step A, once: reuse a stored CAM16 run with the same data and settings.

    Results are stored under ``store_dir`` (default: the cache, ``spec.cache_dir``).
    """
    store = store_dir if store_dir is not None else spec.cache_dir
    config = pretrain_config(wbc_config, epochs=epochs, lr=lr)
    plan = plan_cam16(tree, image_size=wbc_config.data.image_size)
    key = pretrain_key(warm_cache(plan, spec.cache_dir), config)
    found = cached_pretrain(key, store)
    if found is not None:
        log(f"CAM16 pretraining {key}: reused (val accuracy "
            f"{found.metrics.get('val_accuracy', float('nan')):.4f})")
        return found
    with pretrain_lock(key, store):
        found = cached_pretrain(key, store)
        if found is not None:
            return found
        started = time.perf_counter()
        log(f"CAM16 pretraining {key}: {len(plan.train)} images, {epochs} epochs")
        outcome = run_training(plan, config, RunSpec(**{**spec.__dict__,
                                                         "name": f"pretrain-cam16-{key}"}))
        state = outcome.load_checkpoint()["best_state"]
        metrics = {**outcome.metrics, "pretrain_seconds": time.perf_counter() - started}
        return store_pretrain(key, state, metrics, store)
