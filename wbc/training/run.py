"""One training run, without Ray: the single way into the training loops.

Every caller trains through these two functions: a study's inline trial, a Ray Train worker
(which passes its device and ``prepare_model`` as ``wrap``), CAM16 pretraining (in a study and
in ``wbc train``) and the benchmarks. Change the way a run is set up here, and it changes for
all of them.

``train_run``: threads, seeds, the plan's images from the decode cache onto the device, the
strategy's starting model (random, or pretrained weights with a fresh head), the resume state,
then ``wbc.training.loop.fit``. Each epoch's report carries the run's record fields (data
fingerprint, notes, device, world size, set-up time, where it resumed from, host and process)
besides the loop's figures; after a resume, the last report also carries the epochs before it.

``ssl_run``: the same for self-supervised pretraining on unlabelled images (``wbc.training.ssl``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wbc.config import SSLConfig, TrainConfig
from wbc.datasets import Sample
from wbc.datasets.cache import decode_samples
from wbc.metrics import scalars
from wbc.training.distributed import world
from wbc.training.hardware import resolve_precision, rss_mib
from wbc.training.inputs import SplitPlan, load_plan
from wbc.training.loop import EpochCallback, FitResult, fit
from wbc.training.pretrain import initial_model
from wbc.training.seeding import seed_everything
from wbc.training.ssl import SSLResult, ssl_pretrain

__all__ = ["RunResult", "ssl_run", "train_run", "unlabelled_images"]


@dataclass(frozen=True)
class RunResult:
    fit: FitResult
    record: dict[str, Any] = field(default_factory=dict)  # the run's record fields

    @property
    def metrics(self) -> dict[str, Any]:
        """The final record with the run's record fields."""
        return {**self.fit.metrics, **self.record}


def _threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))


def train_run(plan: SplitPlan, config: TrainConfig, *, device: torch.device | str = "cpu",
              weights: Path | None = None, resume: dict[str, Any] | None = None,
              on_epoch: EpochCallback | None = None, cache_dir: Path | str | None = None,
              threads: int | None = None, rank: int = 0,
              wrap: Callable[[nn.Module], nn.Module] | None = None,
              extra: dict[str, Any] | None = None) -> RunResult:
    """Train one run of ``config`` on ``plan`` and return its result.

    ``weights``: the stored starting weights a pretrained strategy needs
    (``wbc.training.pretrain``). ``resume``: a checkpoint from an earlier ``on_epoch`` of the same
    run. ``threads``: torch threads (default: leave as set). ``rank`` offsets the seeds of a
    data-parallel worker; ``wrap`` wraps the model on the device (Ray Train's ``prepare_model``:
    DDP). ``extra`` is added to every report and to ``RunResult.record``.
    """
    started = time.perf_counter()
    _threads(threads)
    seed_everything(config.seed, rank=rank, deterministic=config.deterministic)
    device = torch.device(device)
    data = load_plan(plan, cache_dir=cache_dir).to(device)
    model = initial_model(config, num_classes=len(plan.classes), pretrained=weights).to(device)
    if config.model.channels_last:
        # Before DDP wraps it: DDP's gradient buckets take the parameters' strides as they are.
        model = model.to(memory_format=torch.channels_last)
    if wrap is not None:
        model = wrap(model)
    record = {**(extra or {}), "notes": "; ".join(plan.notes),
              "excluded_files": plan.excluded_files, "data_fingerprint": data.fingerprint,
              "device": str(device),
              "precision_used": resolve_precision(device, config.precision),
              "world_size": world()[1], "hostname": socket.gethostname(),
              "pid": os.getpid(), "setup_seconds": time.perf_counter() - started,
              "resumed_from_epoch": int(resume["epoch"]) if resume is not None else 0}

    def report(metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        assert on_epoch is not None
        metrics = {**metrics, **record, "rss_mib": rss_mib()}
        if resume is not None and metrics["epoch"] == config.optim.epochs:
            # Epochs before the resume: the caller's record of them may be gone.
            metrics["epoch_history"] = [scalars(row) for row in resume["history"]]
        on_epoch(metrics, checkpoint)

    result = fit(model, config, data.train, data.selection, data.reporting,
                 on_epoch=report if on_epoch is not None else None, resume=resume)
    return RunResult(result, record)


def unlabelled_images(samples: Sequence[Sample], image_size: int, *,
                      cache_dir: Path | str | None = None, min_images: int = 0) -> torch.Tensor:
    """Decoded images as uint8 ``(N, S, S, 3)``, tiled to at least ``min_images`` (a tiny pRCC
    would give an epoch of one step; each copy gets its own random views)."""
    decoded = decode_samples(list(samples), image_size, name="pRCC", cache_dir=cache_dir)
    images = torch.from_numpy(np.array(decoded.images))  # a copy: the cache is read-only
    n = images.shape[0]
    if n < min_images:
        images = images[torch.arange(min_images) % n]
    return images


def ssl_run(samples: Sequence[Sample], config: SSLConfig, *, probe_plan: SplitPlan | None = None,
            min_epoch_images: int = 0, device: torch.device | str = "cpu",
            resume: dict[str, Any] | None = None,
            on_epoch: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None,
            cache_dir: Path | str | None = None, threads: int | None = None) -> SSLResult:
    """SimCLR on the unlabelled ``samples``; ``probe_plan`` (CAM16) gives the k-NN and linear
    probes of the frozen backbone (train split against the selection split)."""
    _threads(threads)
    device = torch.device(device)
    images = unlabelled_images(samples, config.image_size, cache_dir=cache_dir,
                               min_images=min_epoch_images).to(device)
    probe = None
    if probe_plan is not None:
        data = load_plan(probe_plan, cache_dir=cache_dir).to(device)
        probe = (data.train.images, data.train.labels, data.selection.images,
                 data.selection.labels)
    return ssl_pretrain(images, config, probe=probe, on_epoch=on_epoch, resume=resume)
