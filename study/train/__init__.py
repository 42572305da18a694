"""Ray Train runs: one training or SimCLR run on Ray Train workers (``trainer``), its reports
on the driver as they are made (``reports``)."""

from __future__ import annotations

from study.train.trainer import (
    CHECKPOINT_FILE,
    POLL_INTERVAL_ENV,
    POLL_INTERVAL_SECONDS,
    RunSpec,
    TrainOutcome,
    build_trainer,
    ray_ssl_run,
    ray_train_run,
    warm_cache,
)

__all__ = [
    "CHECKPOINT_FILE",
    "POLL_INTERVAL_ENV",
    "POLL_INTERVAL_SECONDS",
    "RunSpec",
    "TrainOutcome",
    "build_trainer",
    "ray_ssl_run",
    "ray_train_run",
    "warm_cache",
]
