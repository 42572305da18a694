"""Ray Train runs: one training (or self-supervised pretraining) on Ray Train workers.

The per-worker functions are thin: they turn their config into typed objects
and call ``wbc.training.run`` with the worker's device and ``prepare_model`` (DDP across workers,
gloo on CPU, NCCL on GPU), and hand its epochs to ``ray.train.report`` with checkpoints on rank 0.
``ray.train.get_checkpoint`` resumes them.

Ray Train V2 costs about a second per report, so a run reports every
``report_every`` epochs, and the last report carries the final record.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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

from study.train.reports import EpochReports, Reports, progress_lines
from wbc.config import SSLConfig, TrainConfig
from wbc.datasets.cache import decode_samples
from wbc.metrics import scalars
from wbc.training.inputs import SplitPlan
from wbc.training.loop import load_checkpoint, save_checkpoint
from wbc.training.run import ssl_run, train_run

__all__ = [
    "CHECKPOINT_FILE",
    "POLL_INTERVAL_ENV",
    "POLL_INTERVAL_SECONDS",
    "SSL_CHECKPOINT_FILE",
    "RunSpec",
    "TrainOutcome",
    "build_trainer",
    "ray_ssl_run",
    "ray_train_run",
    "warm_cache",
]

CHECKPOINT_FILE = "checkpoint.pt"
SSL_CHECKPOINT_FILE = "ssl.pt"
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

    def named(self, name: str) -> RunSpec:
        """The same resources and storage for another run."""
        return dataclasses.replace(self, name=name)


@dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, Any]  # the final record: val_* (selection), test_* (reporting), ...
    checkpoint: Checkpoint | None  # the run's last checkpoint (complete: best weights too)
    path: str  # the run's folder in storage

    def load_checkpoint(self, filename: str = CHECKPOINT_FILE) -> dict[str, Any]:
        """The last checkpoint's contents (``wbc.training.loop.fit``'s checkpoint dict)."""
        if self.checkpoint is None:
            raise RuntimeError(f"the run at {self.path} reported no checkpoint")
        with self.checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / filename)


def warm_cache(plan: SplitPlan, cache_dir: str | None = None) -> str:
    """Decode the plan's files on this node now (once), so workers only map the cache."""
    decoded = decode_samples(plan.decode_files(), plan.image_size, name=plan.dataset,
                             cache_dir=cache_dir, fingerprint=plan.decode_fingerprint)
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


def _resume_state(filename: str) -> dict[str, Any] | None:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder) / filename)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker of a training run runs."""
    config = TrainConfig.from_flat(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()
    pretrained = loop_config.get("pretrained")
    train_run(loop_config["plan"], config, device=get_device(),
              weights=Path(pretrained) if pretrained else None,
              resume=_resume_state(CHECKPOINT_FILE),
              on_epoch=lambda m, s: _report(m, s if rank == 0 else None, CHECKPOINT_FILE),
              cache_dir=loop_config.get("cache_dir"), threads=loop_config.get("threads"),
              rank=rank, wrap=prepare_model,
              extra={**(loop_config.get("extra") or {}),
                     "node_id": ray.get_runtime_context().get_node_id()})


def ssl_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker of a self-supervised pretraining run runs."""
    rank = ray.train.get_context().get_world_rank()
    ssl_run(loop_config["samples"], SSLConfig(**loop_config["ssl"]),
            probe_plan=loop_config.get("probe_plan"),
            min_epoch_images=loop_config["min_epoch_images"], device=get_device(),
            resume=_resume_state(SSL_CHECKPOINT_FILE),
            on_epoch=lambda row, s: _report(scalars(row), s if rank == 0 else None,
                                            SSL_CHECKPOINT_FILE),
            cache_dir=loop_config.get("cache_dir"), threads=loop_config.get("threads"))


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


def build_trainer(plan: SplitPlan, config: TrainConfig, spec: RunSpec, *,
                  pretrained: Path | None = None, callbacks: list[Any] | None = None,
                  extra_metrics: dict[str, Any] | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` for one training run; Tune trials add their report callback."""
    return _trainer(train_loop_per_worker, {
        "config": config.to_flat(),
        "plan": plan,
        "pretrained": str(pretrained) if pretrained else None,
        "extra": dict(extra_metrics or {}),  # added to every report
    }, spec, callbacks=callbacks)


def _check_storage(spec: RunSpec) -> None:
    if not (Path(spec.storage_path).is_absolute() or "://" in spec.storage_path):
        raise ValueError(f"storage path {spec.storage_path} must be absolute: under `ray job "
                         "submit` the working directory is a temporary copy")


@contextmanager
def _own_sigint() -> Iterator[None]:
    """Keep this process's SIGINT handler: ``TorchTrainer.fit()`` in the main thread installs
    one that holds the run's controller actor, which would then outlive the run (about 1 GB on
    the driver's node for the rest of a study)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _fit(trainer: TorchTrainer) -> Any:
    with _own_sigint():
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


def ray_train_run(plan: SplitPlan, config: TrainConfig, spec: RunSpec, *,
                  pretrained: Path | None = None, on_report: Reports | None = None
                  ) -> TrainOutcome:
    """One training on Ray Train (``wbc.training.run.train_run`` on every worker), to completion
    or resumed, and its final record; ``on_report`` gets each report's ``brief`` on this
    driver as it is made."""
    _check_storage(spec)
    with progress_lines(on_report) as queue:
        result = _fit(build_trainer(plan, config, spec, pretrained=pretrained,
                                    callbacks=None if queue is None else [EpochReports(queue)]))
    return TrainOutcome(dict(result.metrics or {}), result.checkpoint, str(result.path))


def ray_ssl_run(samples: list[Any], config: SSLConfig, spec: RunSpec, *,
                probe_plan: SplitPlan | None, min_epoch_images: int,
                on_report: Reports | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[dict[str, Any]]]:
    """One SimCLR run on Ray Train (``wbc.training.run.ssl_run``): (backbone state dict, final
    record, history); ``on_report`` as for ``ray_train_run``."""
    _check_storage(spec)
    with progress_lines(on_report) as queue:
        result = _fit(_trainer(ssl_loop_per_worker, {
            "ssl": config.to_flat(), "samples": samples, "probe_plan": probe_plan,
            "min_epoch_images": min_epoch_images,
        }, spec, callbacks=None if queue is None else [EpochReports(queue)]))
    outcome = TrainOutcome(dict(result.metrics or {}), result.checkpoint, str(result.path))
    state = outcome.load_checkpoint(SSL_CHECKPOINT_FILE)
    return state["model"], outcome.metrics, list(state["history"])
