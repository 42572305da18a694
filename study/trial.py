"""The Tune trainable: one trial of one cell, thin by design (house style 3).

It turns Tune's flat ``config`` into a ``TrainConfig`` and trains, in one of two ways:

- ``inline``: in the trial's own process, which Tune reuses from trial to trial (torch imported
  and the decode cache mapped once per process). About 1 s of overhead per trial on a 2-core
  CPU (the quick study's 72 trials): what a study of many small trials needs.
- ``train``: the trial drives a Ray Train ``TorchTrainer`` (DDP over ``workers_per_trial``
  workers) whose reports reach Tune through ``TuneReportCallback``. About 30 s per trial on the
  same CPU, mostly the trainer's and its worker group's start-up: for trials big enough to want
  several GPUs.

Either way every epoch is reported with ``epoch`` (ASHA's clock) and ``best_val_macro_f1`` (the
objective: macro-F1 of the best epoch so far on the selection split), and the last report
carries the final record (``test_*`` on the reporting split).

A trial whose row is already stored, complete and with the same hyperparameters (a restored
study re-running work it had finished before the crash) replays the stored figures instead of
training again.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from study.results import ResultsStore
from study.spec import Resources
from wbc.config import TrainConfig
from wbc.data import SplitPlan, load_plan, plan_wbc
from wbc.datasets import Tree
from wbc.pretrain import initial_model
from wbc.seeding import seed_everything
from wbc.strategies import get_strategy, uses_pastes
from wbc.train import fit, load_checkpoint, save_checkpoint

__all__ = ["METRIC", "MODE", "StudyContext", "run_trial", "scalars", "trial_config",
           "with_resources"]

METRIC = "best_val_macro_f1"  # macro-F1: accuracy would favour always saying "Neutrophil"
MODE = "max"
CHECKPOINT_FILE = "checkpoint.pt"
# What a trial's config carries besides TrainConfig settings.
TRIAL_KEYS = ("cell", "subset", "strategy", "phase", "trial_key", "seed")


@dataclass(frozen=True)
class StudyContext:
    """What every trial needs and nothing a trial chooses: put in the object store once."""

    study: str
    tree: Tree
    base: dict[str, Any]  # flat TrainConfig settings shared by every trial
    results: str  # the results folder (shared storage on a cluster)
    resources: Resources
    checkpoint_every: int  # 0: no trial checkpoints
    redraw_subsets: bool
    # Starting weights by source (wbc.strategies.Strategy.weights_source): cam16, prcc_ssl, ...
    pretrained: dict[str, str] = field(default_factory=dict)
    pretrain_keys: dict[str, str] = field(default_factory=dict)
    cache_dir: str | None = None


def starting_weights(context: StudyContext, strategy: str) -> tuple[Path | None, str | None]:
    """The stored weights a strategy's trial starts from, and their key (None, None: random)."""
    source = get_strategy(strategy).weights_source
    if source is None:
        return None, None
    if source not in context.pretrained:
        raise RuntimeError(f"strategy {strategy!r} starts from {source} weights, which this "
                           "study did not pretrain")
    return Path(context.pretrained[source]), context.pretrain_keys.get(source)


def trial_config(base: dict[str, Any], config: dict[str, Any], *, redraw_subsets: bool,
                 checkpoint_every: int) -> TrainConfig:
    """Tune's flat config -> the trial's ``TrainConfig`` (the only place the two meet)."""
    searched = {k: v for k, v in config.items() if k not in TRIAL_KEYS}
    settings = {**base, **searched, "subset": config["subset"],
                "strategy": config["strategy"], "seed": int(config["seed"])}
    strategy = get_strategy(config["strategy"])
    if not uses_pastes(strategy, settings.get("mask_augment")):
        settings["aug_factor"] = 0
    if redraw_subsets and config["phase"] == "final":
        settings["subset_seed"] = int(config["seed"])
    epochs = int(settings.get("epochs", 1))
    every = checkpoint_every
    settings["checkpoint_every"] = every if 0 < every < epochs else epochs
    return TrainConfig.from_flat(settings)


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch numbers and strings of a report (no matrices or histories)."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, bool | int | float | str) or v is None}


def _replay(context: StudyContext, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored final record of this trial, if it finished with these same settings."""
    row = ResultsStore(Path(context.results)).trial_rows().get(config["trial_key"])
    if row is None or row.get("status") != "completed":
        return None
    for key, value in config.items():
        stored = row.get(key)
        if isinstance(value, float) and isinstance(stored, float):
            if not math.isclose(value, stored, rel_tol=1e-9):
                return None
        elif key in row and stored != value:
            return None
    return row


def run_trial(config: dict[str, Any], context: StudyContext) -> None:
    """The trainable handed to ``tune.with_parameters``."""
    started = time.perf_counter()
    stored = _replay(context, config)
    if stored is not None:
        tune.report({**scalars(stored), "epoch": int(stored.get("epochs_run") or 1),
                     METRIC: stored.get("val_macro_f1"), "replayed": True})
        return
    train_config = trial_config(context.base, config, redraw_subsets=context.redraw_subsets,
                                checkpoint_every=context.checkpoint_every)
    plan = plan_wbc(context.tree, train_config)
    if context.resources.mode == "train":
        _run_on_ray_train(context, config, train_config, plan)
    else:
        _run_inline(context, train_config, plan, started)


def _device(resources: Resources) -> torch.device:
    if resources.gpus_per_trial > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _run_inline(context: StudyContext, config: TrainConfig, plan: SplitPlan,
                started: float) -> None:
    torch.set_num_threads(max(1, int(context.resources.cpus_per_trial)))
    seed_everything(config.seed, deterministic=config.deterministic)
    device = _device(context.resources)
    data = load_plan(plan, cache_dir=context.cache_dir).to(device)
    weights, weights_key = starting_weights(context, config.model.strategy)
    model = initial_model(config, num_classes=len(plan.classes), pretrained=weights)
    model = model.to(device)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    base = {"notes": "; ".join(plan.notes), "excluded_files": plan.excluded_files,
            "data_fingerprint": data.fingerprint, "pretrain_key": weights_key,
            "device": str(device), "hostname": socket.gethostname(), "pid": os.getpid(),
            "world_size": 1, "setup_seconds": time.perf_counter() - started,
            "resumed_from_epoch": int(resume["epoch"]) if resume is not None else 0}
    epochs = config.optim.epochs

    def on_epoch(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        report = {**metrics, **base}
        if resume is not None and metrics["epoch"] == epochs:
            report["epoch_history"] = [scalars(row) for row in resume["history"]]
        if state is None or context.checkpoint_every <= 0 or metrics["epoch"] == epochs:
            tune.report(report)  # the last state is not kept: the row has the figures
            return
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(model, config, data.train, data.selection, data.reporting, on_epoch=on_epoch,
        resume=resume)


def _run_on_ray_train(context: StudyContext, config: dict[str, Any], train_config: TrainConfig,
                      plan: SplitPlan) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.train import RunSpec, build_trainer

    resources = context.resources
    spec = RunSpec(
        storage_path=str(Path(context.results) / "train"),
        # Stable per trial: a restored study resumes the run from its own checkpoints.
        name=f"{context.study}-{config['trial_key'].replace('/', '-')}",
        workers=resources.workers_per_trial, use_gpu=resources.gpus_per_trial > 0,
        gpus_per_worker=resources.gpus_per_trial or 1.0,
        cpus_per_worker=resources.cpus_per_trial, cache_dir=context.cache_dir)
    weights, weights_key = starting_weights(context, train_config.model.strategy)
    extra = {"pretrain_key": weights_key}
    trainer = build_trainer(plan, train_config, spec, callbacks=[TuneReportCallback()],
                            pretrained=weights,
                            extra_metrics=extra)
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def with_resources(context: StudyContext) -> Any:
    """The trainable with the context bound and the resources a trial holds."""
    resources = context.resources
    bound = tune.with_parameters(run_trial, context=context)
    if resources.mode == "train":
        # The driver function only waits on its TorchTrainer; the workers hold the CPUs and
        # GPUs. A trial must request something, hence a token of memory.
        return tune.with_resources(bound, {"cpu": 0, "memory": 1 << 20})
    request: dict[str, float] = {"cpu": resources.cpus_per_trial}
    if resources.gpus_per_trial > 0:
        request["gpu"] = resources.gpus_per_trial
    return tune.with_resources(bound, request)

