"""The Tune trainable: one trial of one cell, thin by design.

It turns Tune's flat ``config`` into a ``TrainConfig`` (here, and only here: ``trial_config``)
and trains through ``wbc.training.run`` in one of two ways:

- ``inline``: in the trial's own process, which Tune reuses from trial to trial (torch imported
  and the decode cache mapped once per process). About 1 s of overhead per trial on a 2-core
  CPU (the quick study's trials): what a study of many small trials needs.
- ``train``: the trial drives a Ray Train ``TorchTrainer`` (DDP over ``workers_per_trial``
  workers) whose reports reach Tune through ``TuneReportCallback``. About 30 s per trial on the
  same CPU, mostly the trainer's and its worker group's start-up: for trials big enough to want
  several GPUs.

Either way every epoch is reported with ``epoch`` (ASHA's clock), ``best_val_macro_f1`` (the
objective: macro-F1 of the best epoch so far on the selection split) and the resolved
configuration (``resolved_config``, which the driver stores as the row's settings), and the last
report carries the final record (``test_*`` on the reporting split).

A final trial keeps its best epoch's weights unless the spec's ``keep_models`` is "none"
(``study.results.kept``): inline, as the Tune checkpoint of its last report (with
``MODEL_METRIC``); under Ray Train, written to the study's ``models/`` folder by the trial.

A trial whose row is already stored, complete and with the same hyperparameters (a restored
study re-running work it had finished before the crash) replays the stored figures instead of
training again.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from study.results import CONFIG_KEY, TRIAL_KEYS, ResultsStore
from study.results.kept import place_model, trial_dir_name
from study.spec import StudySpec
from study.train.trainer import CHECKPOINT_FILE, RunSpec, build_trainer
from wbc.augment import pastes_enabled
from wbc.classifier.model_file import run_card, save_classifier
from wbc.config import TrainConfig
from wbc.datasets import Tree
from wbc.datasets.layout import WBC_CLASSES
from wbc.metrics import scalars
from wbc.strategies import get_strategy, inapplicable_settings
from wbc.training.hardware import release_memory, require_cuda
from wbc.training.inputs import SplitPlan, plan_wbc
from wbc.training.loop import best_weights, load_checkpoint, save_checkpoint
from wbc.training.run import train_run

__all__ = [
    "METRIC",
    "MODE",
    "MODEL_METRIC",
    "StudyContext",
    "keeps_model",
    "run_trial",
    "save_model",
    "train_run_folder",
    "trial_config",
    "with_resources",
]

HEAD_RESOURCE = "node:__internal_head__"  # Ray gives the head node this resource
METRIC = "best_val_macro_f1"  # macro-F1: accuracy would favour always saying "Neutrophil"
MODE = "max"
# Reported (with the same value as METRIC) only by the trials whose model the study keeps, so
# that ``ResultGrid.get_best_result(MODEL_METRIC, MODE).checkpoint`` is a model: the best trial
# by METRIC is often a search trial, which keeps none.
MODEL_METRIC = "kept_model_val_macro_f1"


@dataclass(frozen=True)
class StudyContext:
    """What every trial needs and nothing a trial chooses: put in the object store once."""

    spec: StudySpec
    tree: Tree
    results: str  # the results folder (shared storage on a cluster)
    # Starting weights by source (wbc.strategies.Strategy.weights_source): (file, key).
    pretrained: dict[str, tuple[str, str]] = field(default_factory=dict)
    cache_dir: str | None = None
    # The WBC decode set's fingerprint, as the driver (and every node's check) computed it:
    # a trial maps the cache without a stat of every file.
    wbc_fingerprint: str | None = None
    # The tree with predicted masks filled in (study.segmentation) and its decode set's
    # fingerprint: what the strategies with mask_source "predicted" train on.
    masked_tree: Tree | None = None
    masked_fingerprint: str | None = None

    def tree_for(self, strategy: str) -> tuple[Tree, str | None]:
        """The tree a strategy's trial trains on, and its decode fingerprint."""
        if get_strategy(strategy).mask_source != "predicted":
            return self.tree, self.wbc_fingerprint
        if self.masked_tree is None:
            raise RuntimeError(f"strategy {strategy!r} pastes predicted masks, which this study "
                               "did not make")
        return self.masked_tree, self.masked_fingerprint

    def starting_weights(self, strategy: str) -> tuple[Path | None, str | None]:
        """The stored weights a strategy's trial starts from, and their key (None: random)."""
        source = get_strategy(strategy).weights_source
        if source is None:
            return None, None
        if source not in self.pretrained:
            raise RuntimeError(f"strategy {strategy!r} starts from {source} weights, which "
                               "this study did not pretrain")
        weights, key = self.pretrained[source]
        return Path(weights), key


def trial_config(spec: StudySpec, config: dict[str, Any]) -> TrainConfig:
    """Tune's flat config -> the trial's ``TrainConfig`` (the only place the two meet): the
    study's shared settings, the searched ones, the cell and the seed. A strategy that does not
    paste (``wbc.augment.pastes_enabled``) reports ``aug_factor`` 0 (its row stores a null:
    ``study.results.rows``)."""
    searched = {k: v for k, v in config.items() if k not in TRIAL_KEYS}
    resolved = spec.base_config().replace(
        **searched, subset=config["subset"], strategy=config["strategy"],
        seed=int(config["seed"]))
    if not pastes_enabled(resolved):
        resolved = resolved.replace(aug_factor=0)
    if spec.redraw_subsets and config["phase"] == "final":
        resolved = resolved.replace(subset_seed=int(config["seed"]))
    return resolved


def _replay(context: StudyContext, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored final record of this trial, if it finished with these same settings."""
    row = ResultsStore(Path(context.results)).trial_row(config["trial_key"])
    if row is None or row.get("status") != "completed":
        return None
    unread = inapplicable_settings(config)  # stored as nulls (study.results.rows)
    for key, value in config.items():
        if key in unread and row.get(key) is None:
            continue
        stored = row.get(key)
        if isinstance(value, float) and isinstance(stored, float):
            if not math.isclose(value, stored, rel_tol=1e-9):
                return None
        elif key in row and stored != value:
            return None
    return row


THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
THREAD_TIMEOUT_SECONDS = "300"


def _node() -> tuple[str, str]:
    """(Ray node id, host name) of the process this runs in."""
    import ray

    return ray.get_runtime_context().get_node_id(), socket.gethostname()


def run_trial(config: dict[str, Any], context: StudyContext) -> None:
    """The trainable handed to ``tune.with_parameters``. An error names the node it ran on
    (the row keeps the node of every trial that reported)."""
    node_id, host = _node()
    # Tune reuses this process for the next trial only once this trial's thread has ended, and
    # waits 2 s by default: on a loaded machine (a stopped trial finishing its epoch, the
    # garbage collection below) that is too short, and the next trial then fails to start
    # ("Could not re-use actor"). Read by Tune in this process when it reuses it.
    os.environ.setdefault(THREAD_TIMEOUT_ENV, THREAD_TIMEOUT_SECONDS)
    try:
        _trial(config, context, node_id)
    except Exception as err:
        raise RuntimeError(f"trial {config.get('trial_key')} on node {node_id} ({host}): "
                           f"{type(err).__name__}: {err}") from err
    finally:
        release_memory()  # the process is reused for the next trial: it must not grow


def _trial(config: dict[str, Any], context: StudyContext, node_id: str) -> None:
    stored = _replay(context, config)
    if stored is not None:
        tune.report({**scalars(stored), "epoch": int(stored.get("epochs_run") or 1),
                     METRIC: stored.get("val_macro_f1"), "replayed": True})
        return
    train_config = trial_config(context.spec, config)
    tree, fingerprint = context.tree_for(train_config.model.strategy)
    plan = dataclasses.replace(plan_wbc(tree, train_config), decode_fingerprint=fingerprint)
    weights, key = context.starting_weights(train_config.model.strategy)
    extra = {"pretrain_key": key, CONFIG_KEY: train_config.to_flat(), "node_id": node_id}
    if context.spec.resources.mode == "train":
        _run_on_ray_train(context, config, train_config, plan, weights, extra)
    else:
        _run_inline(context, train_config, plan, weights, extra, trial=config)


def keeps_model(context: StudyContext, phase: str) -> bool:
    """Whether a trial of ``phase`` keeps its model (final trials, unless ``keep_models`` is
    "none"; study.results.kept)."""
    return phase == "final" and context.spec.keep_models != "none"


def save_model(context: StudyContext, trial: dict[str, Any], config: TrainConfig,
               weights: dict[str, Any], metrics: dict[str, Any], folder: Path) -> Path:
    """Write a trial's best-epoch weights with their card into ``folder`` (``trial``: its
    Tune config, which names its cell and key)."""
    card = run_card(config, WBC_CLASSES, metrics, cell=trial["cell"],
                    study=context.spec.name, trial_key=trial["trial_key"])
    return save_classifier(weights, card, folder)


def _run_inline(context: StudyContext, config: TrainConfig, plan: SplitPlan,
                weights: Path | None, extra: dict[str, Any], *, trial: dict[str, Any]
                ) -> None:
    resources = context.spec.resources
    device = require_cuda("this trial") if resources.gpus_per_trial > 0 else "cpu"
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # Emptied when the trial ended (study.tune.callback): nothing to resume from.
            if (Path(folder) / CHECKPOINT_FILE).exists():
                resume = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    epochs, keep = config.optim.epochs, keeps_model(context, trial["phase"])

    def on_epoch(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if metrics["epoch"] == epochs and state is not None and keep:
            # The last report: the best epoch's weights as the trial's Tune checkpoint (the
            # training state is not kept: the row has the figures).
            with tempfile.TemporaryDirectory() as folder:
                save_model(context, trial, config, best_weights(state), metrics,
                           Path(folder))
                tune.report({**metrics, MODEL_METRIC: metrics.get("val_macro_f1")},
                            checkpoint=tune.Checkpoint.from_directory(folder))
            return
        if state is None or context.spec.checkpoint_every <= 0 or metrics["epoch"] == epochs:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train_run(plan, config, device=device, weights=weights,
              resume=resume, on_epoch=on_epoch, cache_dir=context.cache_dir,
              threads=int(resources.cpus_per_trial), extra=extra)


def run_spec(context: StudyContext, name: str) -> RunSpec:
    """The Ray Train run of a trial (or of pretraining in train mode): the study's per-trial
    resources, stored under the results folder."""
    resources = context.spec.resources
    return RunSpec(storage_path=str(Path(context.results) / "train"), name=name,
                   workers=resources.workers_per_trial, use_gpu=resources.gpus_per_trial > 0,
                   gpus_per_worker=resources.gpus_per_trial or 1.0,
                   cpus_per_worker=resources.cpus_per_trial, cache_dir=context.cache_dir)


def train_run_folder(spec: StudySpec, results: str, trial_key: str) -> Path:
    """Where a train-mode trial's Ray Train run keeps its state: stable per trial, so a
    restored study resumes the run from its own checkpoints."""
    return Path(results) / "train" / f"{spec.name}-{trial_dir_name(trial_key)}"


def _run_on_ray_train(context: StudyContext, config: dict[str, Any], train_config: TrainConfig,
                      plan: SplitPlan, weights: Path | None, extra: dict[str, Any]) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    # Stable per trial: a restored study resumes the run from its own checkpoints.
    name = train_run_folder(context.spec, context.results, config["trial_key"]).name
    trainer = build_trainer(plan, train_config, run_spec(context, name),
                            callbacks=[TuneReportCallback()], pretrained=weights,
                            extra_metrics=extra)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if keeps_model(context, config["phase"]) and result.checkpoint is not None:
        # Tune's report callback passes no checkpoint on: the model goes to the study's
        # models/ folder from here (study.results.kept).
        with result.checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
        with tempfile.TemporaryDirectory() as staged:
            save_model(context, config, train_config, best_weights(state),
                       dict(result.metrics or {}), Path(staged))
            place_model(context.results, config["cell"], train_config.seed, Path(staged))


def with_resources(context: StudyContext) -> Any:
    """The trainable with the context bound and the resources a trial holds."""
    resources = context.spec.resources
    bound = tune.with_parameters(run_trial, context=context)
    if resources.mode == "train":
        # The driver function only waits on its TorchTrainer; the workers hold the CPUs and
        # GPUs. It goes to the head node (Ray's own resource there), never to a GPU node's
        # memory.
        return tune.with_resources(bound, {"cpu": 0, "memory": 1 << 20, HEAD_RESOURCE: 0.001})
    request: dict[str, float] = {"cpu": resources.cpus_per_trial}
    if resources.gpus_per_trial > 0:
        request["gpu"] = resources.gpus_per_trial
    return tune.with_resources(bound, request)
