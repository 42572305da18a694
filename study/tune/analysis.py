"""A finished (or running) study through Tune's own analysis: ``ExperimentAnalysis`` with the
study's metric and mode, and the best configuration of each cell.

A Tune experiment folder does not record a default metric: ``ExperimentAnalysis(path)
.best_config`` raises ValueError until it is given one (Ray keeps the metric in the Tuner's
``TuneConfig``, which ``Tuner.restore(path, trainable).get_results()`` reads back). The study
writes its metric and mode into ``study.json`` (``tune``), and ``experiment_analysis`` passes
them on. The experiment mixes every cell and both phases, so its ``best_config`` is the best
trial of any cell (often a final re-run); ``best_configs`` gives each cell's choice, the search
trial the study re-ran over its seeds, by the same rule as ``CellSearcher`` (the best
objective, ties to the first trial asked). With Ray alone, no project code::

    from ray.tune import ExperimentAnalysis
    ea = ExperimentAnalysis("/abs/R/tune", default_metric="best_val_macro_f1",
                            default_mode="max")     # Ray wants an absolute path
    ea.best_config                                   # the best trial of any cell
    df = ea.dataframe()                              # each trial's last report
    search = df[df["config/phase"] == "search"].sort_values("config/trial_key")
    best = search.loc[search.groupby("config/cell")["best_val_macro_f1"].idxmax()]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from study.results import STUDY_FILE
from study.tune.experiment import TUNE_DIR
from study.tune.trial import METRIC, MODE, MODEL_METRIC

__all__ = ["best_configs", "experiment_analysis", "tune_record"]


def tune_record() -> dict[str, str]:
    """What ``study.json`` records of the Tune experiment (``tune``)."""
    return {"experiment": TUNE_DIR, "metric": METRIC, "mode": MODE, "model_metric": MODEL_METRIC}


def _experiment(results: Path) -> tuple[Path, dict[str, Any]]:
    """(the Tune experiment folder, the study's ``tune`` record) of a results folder, or of
    its ``tune/`` folder given directly."""
    results = Path(results).absolute()  # Ray reads a relative path as a URI without a scheme
    root = results.parent if results.name == TUNE_DIR and not (results / TUNE_DIR).is_dir() \
        else results
    record: dict[str, Any] = {}
    if (root / STUDY_FILE).is_file():
        record = json.loads((root / STUDY_FILE).read_text()).get("tune", {})
    folder = root / record.get("experiment", TUNE_DIR)
    if not any(folder.glob("experiment_state-*.json")):
        raise FileNotFoundError(f"{folder}: no Ray Tune experiment here (no "
                                "experiment_state-*.json); give a study's results folder")
    return folder, record


def experiment_analysis(results: Path | str) -> Any:
    """``ExperimentAnalysis`` of a study's Tune experiment with the study's metric and mode as
    its defaults: ``.best_config``, ``.best_result``, ``.dataframe()`` work without them."""
    from ray.tune import ExperimentAnalysis

    folder, record = _experiment(Path(results))
    return ExperimentAnalysis(str(folder), default_metric=record.get("metric", METRIC),
                              default_mode=record.get("mode", MODE))


def best_configs(results: Path | str) -> pd.DataFrame:
    """One row per cell that finished its search: ``cell``, ``trial_key`` of the chosen search
    trial, its objective (``best_val_macro_f1``) and the hyperparameters it searched (the
    ``config/`` columns of the trial, without the prefix)."""
    analysis = experiment_analysis(results)
    metric = analysis.default_metric
    frame = analysis.dataframe()
    if not len(frame) or "config/phase" not in frame or metric not in frame:
        return pd.DataFrame(columns=["cell", "trial_key", metric])
    search = frame[(frame["config/phase"] == "search") & frame[metric].notna()]
    search = search.sort_values("config/trial_key")
    pick = (search.groupby("config/cell", sort=False)[metric].idxmax() if
            analysis.default_mode == "max" else
            search.groupby("config/cell", sort=False)[metric].idxmin())
    best = search.loc[pick.to_numpy()]
    fixed = {"config/cell", "config/subset", "config/strategy", "config/phase",
             "config/trial_key", "config/seed", "config/study", "config/config_from"}
    params = [c for c in best.columns if c.startswith("config/") and c not in fixed]
    out = best[["config/cell", "config/subset", "config/strategy", "config/trial_key", metric,
                *params]]
    out.columns = [c.removeprefix("config/") for c in out.columns]
    return out.sort_values("cell").reset_index(drop=True)
