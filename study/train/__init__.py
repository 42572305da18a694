"""Ray Train runs: one training or SimCLR run on Ray Train workers (``trainer``)."""

from __future__ import annotations

from study.train.trainer import (
    CHECKPOINT_FILE,
    POLL_INTERVAL_ENV,
    POLL_INTERVAL_SECONDS,
    RunSpec,
    TrainOutcome,
    build_trainer,
    run_ssl,
    run_training,
    warm_cache,
)

__all__ = [
    "CHECKPOINT_FILE",
    "POLL_INTERVAL_ENV",
    "POLL_INTERVAL_SECONDS",
    "RunSpec",
    "TrainOutcome",
    "build_trainer",
    "run_ssl",
    "run_training",
    "warm_cache",
]
