"""Ray Train entry: one training run (one cell, fixed hyperparameters) on Ray Train workers.

The per-worker function is thin (house style 3): it turns its config into typed objects, maps
the decode cache, builds the model for the strategy, wraps it with ``prepare_model`` (DDP across
workers, gloo on CPU, NCCL on GPU) and hands ``wbc.train.fit`` a callback that turns epochs into
``ray.train.report`` calls with checkpoints. ``ray.train.get_checkpoint`` resumes it.

Ray Train V2 costs about a second per report (DESIGN.md), so a run reports every
``report_every`` epochs, and the last report carries the final record.
"""

from __future__ import annotations

import os
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
    "ensure_ssl_pretrain",
    "run_training",
    "ssl_loop_per_worker",
    "train_loop_per_worker",
    "warm_cache",
]

CHECKPOINT_FILE = "checkpoint.pt"
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_SECONDS = "0.25"  # unless the environment says otherwise


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


def _report(metrics: dict[str, Any], state: dict[str, Any] | None, filename: str) -> None:
    """``ray.train.report`` from a worker, with ``state`` saved as a checkpoint when given
    (rank 0 only: the others report the metrics alone)."""
    if state is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(state, Path(folder) / filename)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                         checkpoint_dir_name=f"epoch-{metrics['epoch']:05d}")


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
        _report(metrics, state if rank == 0 else None, CHECKPOINT_FILE)

    fit(model, config, data.train, data.selection, data.reporting, on_epoch=on_epoch,
        resume=resume)


def build_trainer(plan: SplitPlan, config: TrainConfig, spec: RunSpec, *,
                  pretrained: Path | None = None, callbacks: list[Any] | None = None,
                  extra_metrics: dict[str, Any] | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` for one run; Tune trials add their report callback."""
    return _trainer(train_loop_per_worker, {
        "config": config.to_flat(),
        "plan": plan,
        "pretrained": str(pretrained) if pretrained else None,
        "extra": dict(extra_metrics or {}),  # added to every report
    }, spec, callbacks=callbacks)


def _trainer(loop: Any, loop_config: dict[str, Any], spec: RunSpec, *,
             callbacks: list[Any] | None = None) -> TorchTrainer:
    """The ``TorchTrainer`` of every run here: ``spec``'s workers and resources, one kept
    checkpoint, and the cache folder and thread count added to ``loop_config``."""
    # The trainer's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, and a
    # worker's report waits for that poll: 2 s a report with Ray's default, measured
    # (benchmarks/report_overhead.py). The controller takes the variable from this process.
    os.environ.setdefault(POLL_INTERVAL_ENV, POLL_INTERVAL_SECONDS)
    resources: dict[str, float] = {"CPU": spec.cpus_per_worker}
    if spec.use_gpu:
        resources["GPU"] = spec.gpus_per_worker
    # mypy resolves ray.train.RunConfig to the Train V1 class; V2's (what runs) has these fields.
    return TorchTrainer(
        loop,
        train_loop_config={**loop_config, "cache_dir": spec.cache_dir,
                           "threads": max(1, int(spec.cpus_per_worker))},
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
                          store_dir: Path | str | None = None,
                          init: tuple[Path, str] | None = None) -> PretrainResult:
    """The report's step A, once: reuse a stored CAM16 run with the same data and settings.

    Results are stored under ``store_dir`` (default: the cache, ``spec.cache_dir``). ``init``:
    (weights, key) of a backbone to start from (the pRCC SSL one, for ``ssl_pretrain``).
    """
    store = store_dir if store_dir is not None else spec.cache_dir
    config = pretrain_config(wbc_config, epochs=epochs, lr=lr, from_ssl=init is not None)
    plan = plan_cam16(tree, image_size=wbc_config.data.image_size)
    key = pretrain_key(warm_cache(plan, spec.cache_dir), config,
                       init=init[1] if init else None)
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
                                                         "name": f"pretrain-cam16-{key}"}),
                               pretrained=init[0] if init else None)
        state = outcome.load_checkpoint()["best_state"]
        metrics = {**outcome.metrics, "pretrain_seconds": time.perf_counter() - started}
        return store_pretrain(key, state, metrics, store)


SSL_CHECKPOINT_FILE = "ssl.pt"


def _ssl_images(samples: Any, image_size: int, cache_dir: str | None, *,
                min_epoch_images: int) -> torch.Tensor:
    """The unlabelled images as uint8 (N, S, S, 3), tiled to at least ``min_epoch_images`` (a
    tiny pRCC would give an epoch of one step; each copy gets its own random views)."""
    import numpy as np

    decoded = decode_samples(list(samples), image_size, name="pRCC", cache_dir=cache_dir)
    images = torch.from_numpy(np.array(decoded.images))  # a copy: the cache is read-only
    n = images.shape[0]
    if n < min_epoch_images:
        images = images[torch.arange(min_epoch_images) % n]
    return images


def ssl_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker of a self-supervised pretraining run runs."""
    from wbc.ssl import SSLConfig, ssl_pretrain

    config = SSLConfig(**loop_config["ssl"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    device = get_device()
    images = _ssl_images(loop_config["samples"], config.image_size, loop_config["cache_dir"],
                            min_epoch_images=loop_config["min_epoch_images"])
    images = images.to(device)
    probe = None
    plan: SplitPlan | None = loop_config.get("probe_plan")
    if plan is not None:  # the quality signal: a k-NN probe of the frozen backbone on CAM16
        data = load_plan(plan, cache_dir=loop_config["cache_dir"]).to(device)
        probe = (data.train.images, data.train.labels, data.selection.images,
                 data.selection.labels)
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(Path(folder) / SSL_CHECKPOINT_FILE)

    def on_epoch(row: dict[str, Any], state: dict[str, Any] | None) -> None:
        row = {k: v for k, v in row.items() if isinstance(v, int | float | str)}
        _report(row, state if rank == 0 else None, SSL_CHECKPOINT_FILE)

    ssl_pretrain(images, config, probe=probe, on_epoch=on_epoch, resume=resume)


def ensure_ssl_pretrain(tree: Tree, config: Any, spec: RunSpec, *, min_epoch_images: int = 0,
                        include_wbc: bool = False, log: Any = print,
                        store_dir: Path | str | None = None) -> tuple[PretrainResult, bool]:
    """SimCLR on the tree's pRCC images, once: (the stored backbone, whether trained now).
    ``include_wbc`` adds the WBC_100 training images, their labels unused.

    A Ray Train run (``spec``: workers, GPU, CPUs) whose every epoch reports the loss and, when
    the tree has CAM16, a k-NN probe accuracy on CAM16 val; the last report adds a linear probe
    and the random-init baselines of both. Keyed by the pRCC decode fingerprint and every
    setting (``wbc.pretrain.pretrain_key``), stored under ``store_dir`` (default: the cache).
    """
    if not tree.prcc:
        raise ValueError(f"{tree.root / 'pRCC'} holds no images: self-supervised pretraining "
                         "needs them")
    store = store_dir if store_dir is not None else spec.cache_dir
    samples = [*tree.prcc, *(tree.wbc.get("WBC_100/train", ()) if include_wbc else ())]
    decoded = decode_samples(samples, config.image_size, name="pRCC", cache_dir=spec.cache_dir)
    settings = {**config.to_flat(), "min_epoch_images": min_epoch_images}
    key = pretrain_key(decoded.fingerprint, settings)
    found = cached_pretrain(key, store, kind="prcc_ssl")
    if found is not None:
        log(f"pRCC self-supervised pretraining {key}: reused (k-NN probe accuracy "
            f"{found.metrics.get('knn_accuracy', float('nan')):.3f})")
        return found, False
    probe_plan = None
    if tree.cam16.get("train") and tree.cam16.get("val"):
        probe_plan = plan_cam16(tree, image_size=config.image_size)
        warm_cache(probe_plan, spec.cache_dir)
    with pretrain_lock(key, store, kind="prcc_ssl"):
        found = cached_pretrain(key, store, kind="prcc_ssl")
        if found is not None:
            return found, False
        log(f"pRCC self-supervised pretraining {key}: {len(samples)} images, "
            f"{config.epochs} epochs")
        result = _trainer(ssl_loop_per_worker, {
            "ssl": config.to_flat(), "samples": samples, "probe_plan": probe_plan,
            "min_epoch_images": min_epoch_images,
        }, RunSpec(**{**spec.__dict__, "name": f"{spec.name}-{key}"})).fit()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError(f"the pRCC self-supervised run at {result.path} left no "
                               "checkpoint")
        with result.checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / SSL_CHECKPOINT_FILE)
        metrics = dict(result.metrics or {})
        metrics["loop_seconds"] = float(sum(row.get("epoch_seconds", 0.0)
                                            for row in state["history"]))
        metrics["prcc_images"] = len(tree.prcc)
        metrics["ssl_images"] = len(samples)
        stored = store_pretrain(key, state["model"], metrics, store, kind="prcc_ssl")
        log(f"pRCC self-supervised pretraining {key}: loss "
            f"{state['history'][0].get('ssl_loss', float('nan')):.3f} -> "
            f"{metrics.get('ssl_loss', float('nan')):.3f}; CAM16 probe: k-NN "
            f"{metrics.get('knn_accuracy', float('nan')):.3f} (random init "
            f"{metrics.get('knn_accuracy_random', float('nan')):.3f}), linear "
            f"{metrics.get('linear_probe_accuracy', float('nan')):.3f} (random init "
            f"{metrics.get('linear_probe_accuracy_random', float('nan')):.3f})")
        return stored, True
