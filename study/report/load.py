"""Reading a study's results: its results folder, or a Ray Tune experiment folder alone."""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from study.results import (
    EPOCH_KEYS,
    ROWS_DIR,
    STUDY_FILE,
    TRIAL_COLUMNS,
    TRIALS_FILE,
    ResultsStore,
    curve,
    epoch_rows,
    resolved_config,
    trial_row,
)

__all__ = ["Results", "load_results"]


@dataclass
class Results:
    trials: pd.DataFrame
    epochs: pd.DataFrame
    study: dict[str, Any]
    source: str  # "results folder" or "Tune experiment folder"
    # Trials left out because they ran on other data than the study's current data (a resume
    # with --allow-data-change): data fingerprint -> trials.
    set_aside: dict[str, int] = field(default_factory=dict)
    # The kept models (cell, seed, folder relative to the results, best_epoch, figures) and
    # their scores on other trees (eval.parquet; None without).
    models: list[dict[str, Any]] = field(default_factory=list)
    evaluations: pd.DataFrame | None = None
    # The results folder (its Optuna journal: study.results.journal), when there is one.
    root: Path | None = None


def _models(path: Path) -> list[dict[str, Any]]:
    from study.results.kept import kept_models
    from wbc.classifier.model_file import ClassifierError

    found = []
    for kept in kept_models(path):
        try:
            card = kept.card()
        except ClassifierError:
            continue  # a damaged file: not a model to offer
        found.append({"cell": kept.cell, "seed": kept.seed,
                      "folder": str(kept.folder.relative_to(path)),
                      "best_epoch": card.best_epoch, "figures": card.figures})
    return found


def _with_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial column present (empty where no row has it: trials that all failed before
    reporting have no metrics), so that the report can say what is missing."""
    for column in TRIAL_COLUMNS:
        if column not in trials:
            trials[column] = pd.Series([None] * len(trials), index=trials.index, dtype=object)
    return trials


def _current_data(trials: pd.DataFrame, epochs: pd.DataFrame, study: dict[str, Any]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Only the trials on the study's current data: rows of two datasets are never pooled. A
    resume with --allow-data-change records when the data changed; trials that ended before the
    last change ran on the data before it."""
    changes = (study.get("data") or {}).get("changes") or []
    if not changes or not len(trials) or "finished_at" not in trials:
        return trials, epochs, {}
    last = changes[-1]
    ended = pd.to_datetime(trials["finished_at"], utc=True, format="mixed", errors="coerce")
    before = ended.notna() & (ended < pd.Timestamp(last["at"]))
    if not before.any():
        return trials, epochs, {}
    kept = trials[~before]
    if len(epochs) and "trial_id" in epochs:
        epochs = epochs[epochs["trial_id"].isin(set(kept["trial_id"]))]
    return (kept.reset_index(drop=True), epochs.reset_index(drop=True),
            {str(last["from"]): int(before.sum())})


def _placed(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Epoch rows with their trial's cell, phase, subset, strategy and seed (a results folder
    written before epoch rows carried them gets them from its trials)."""
    missing = [k for k in EPOCH_KEYS if k != "trial_id" and k not in epochs and k in trials]
    if not len(epochs) or not missing or "trial_id" not in epochs:
        return epochs
    keys = trials[["trial_id", *missing]].drop_duplicates("trial_id")
    return epochs.merge(keys, on="trial_id", how="left")


def load_results(path: Path) -> Results:
    """A results folder, or a Tune experiment folder (the results folder's ``tune/`` or any)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder: give a study's results folder (it "
                                "holds trials.parquet) or a Ray Tune experiment folder")
    if (path / TRIALS_FILE).exists() or (path / ROWS_DIR).is_dir():
        study = json.loads((path / STUDY_FILE).read_text()) if (path / STUDY_FILE).exists() \
            else {}
        store = ResultsStore(path)
        with suppress(OSError):  # a read-only folder is read as it is, row files included
            store.compact()
        trials, epochs, set_aside = _current_data(_with_columns(store.trials()),
                                                  store.epochs(), study)
        evaluations = store.evaluations()
        return Results(trials, _placed(epochs, trials), study, "results folder", set_aside,
                       _models(path), evaluations if len(evaluations) else None, root=path)
    tune_dir = path / "tune" if (path / "tune").is_dir() else path
    if not any(tune_dir.glob("experiment_state-*.json")):
        raise FileNotFoundError(f"{path} holds neither trials.parquet nor a Ray Tune experiment "
                                "(experiment_state-*.json); is this a study's results folder?")
    return _from_tune(tune_dir, path)


def _from_tune(tune_dir: Path, root: Path) -> Results:
    """Rows rebuilt from Tune's own record of each trial (its config and reported results)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(tune_dir))
    frames = analysis.trial_dataframes
    trials, epochs = [], []
    found = [p / STUDY_FILE for p in (root, tune_dir.parent) if (p / STUDY_FILE).exists()]
    study = json.loads(found[0].read_text()) if found else {}
    # Without study.json: the name each trial's config records (a study from before it did:
    # the results folder that holds tune/, or the folder).
    named = {str(t.config["study"]) for t in analysis.trials if "study" in (t.config or {})}
    name = study.get("study") or (named.pop() if len(named) == 1 else None) or (
        tune_dir.parent.name if tune_dir.name == "tune" else tune_dir.name)
    study.setdefault("study", name)
    for trial in analysis.trials:
        config = dict(trial.config)
        if "trial_key" not in config:
            continue  # not a study trial
        epochs_of = curve(frames.get(trial.trial_id))
        last = dict(trial.last_result or {})
        if last.get("replayed"):
            last = {**last, "time_total_s": last.get("wall_seconds")}
        final = last if "test_accuracy" in last else None
        status = ("error" if trial.status == "ERROR" else "completed" if final
                  else "stopped" if trial.status == "TERMINATED" else "running")
        row = trial_row(name, config, resolved_config(last), epochs_of, final, status=status,
                        tune_trial_id=trial.trial_id)
        trials.append(row)
        epochs += epoch_rows(row, epochs_of)
    return Results(pd.DataFrame(trials), pd.DataFrame(epochs), study,
                   "Tune experiment folder",
                   root=tune_dir.parent if tune_dir.name == "tune" else None)
