"""The study on Ray Tune: per-cell search and scheduling, the trainable, the driver's callback
and progress, and the experiment that ties them together."""

from __future__ import annotations

from study.tune.analysis import best_configs, experiment_analysis
from study.tune.callback import StudyCallback
from study.tune.experiment import TUNE_DIR, ended, reconcile, run_experiment
from study.tune.search import CellScheduler, CellSearcher, cell_name, final_seeds
from study.tune.trial import METRIC, MODE, MODEL_METRIC, StudyContext, run_trial, trial_config

__all__ = [
    "METRIC",
    "MODE",
    "MODEL_METRIC",
    "TUNE_DIR",
    "CellScheduler",
    "CellSearcher",
    "StudyCallback",
    "StudyContext",
    "best_configs",
    "cell_name",
    "ended",
    "experiment_analysis",
    "final_seeds",
    "reconcile",
    "run_experiment",
    "run_trial",
    "trial_config",
]
