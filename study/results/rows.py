"""The row schema of a study's results, in one place: what a ``trials.parquet`` row and an
``epochs.parquet`` row hold, built from what a trial reported.

A trial reports its resolved configuration (``resolved_config``: every ``TrainConfig`` setting
it trained with, flat) and its epochs; the driver turns those into rows here and nowhere else:
the Tune callback as trials end, the reconciliation after a crash, and the report when it reads
a Ray Tune experiment folder alone.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from wbc.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from wbc.metrics import scalars
from wbc.strategies import inapplicable_settings

__all__ = [
    "CONFIG_KEY",
    "EPOCH_COLUMNS",
    "EPOCH_KEYS",
    "EVAL_COLUMNS",
    "RECORD_FIELDS",
    "TRIAL_COLUMNS",
    "TRIAL_KEYS",
    "column_type",
    "curve",
    "epoch_row",
    "epoch_rows",
    "resolved_config",
    "trial_row",
]

# Where a trial's report carries its resolved configuration (flat TrainConfig names).
CONFIG_KEY = "resolved_config"
# What a trial's Tune config carries besides the searched settings.
TRIAL_KEYS = ("cell", "subset", "strategy", "phase", "trial_key", "seed", "config_from",
              "study")

TRIAL_COLUMNS = ("study", "cell", "subset", "strategy", "phase", "trial_id", "seed", "status",
                 "lr", "weight_decay", "imbalance", "aug_factor", "background", "best_epoch",
                 "epochs_run", "val_accuracy", "val_macro_f1", "val_balanced_accuracy",
                 "test_accuracy", "test_macro_f1", "test_balanced_accuracy", "train_images",
                 "wall_seconds", "train_loop_seconds", "error")
EPOCH_COLUMNS = ("study", "cell", "phase", "subset", "strategy", "seed", "trial_id", "epoch",
                 "train_loss", "train_accuracy", "scheduled_lr", "val_accuracy", "val_macro_f1",
                 "val_balanced_accuracy", "best_epoch", "epoch_seconds")
EVAL_COLUMNS = ("study", "cell", "subset", "strategy", "seed", "trial_id", "eval_data",
                "eval_split", "n", "accuracy", "accuracy_low", "accuracy_high", "macro_f1",
                "balanced_accuracy", "in_domain_accuracy", "in_domain_macro_f1", "model",
                "error")
# What an epoch row repeats of its trial's row, so that a curve needs no join to be placed.
EPOCH_KEYS = ("study", "cell", "phase", "subset", "strategy", "seed", "trial_id")

# The type of every column of the three files, so that a column's type never depends on the
# values seen so far (an lr of 1 is still a float, a column of nulls still a bool): the fixed
# columns here, each TrainConfig setting from its annotation, the figures by their names below.
_STRING, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()
_INTS = pa.list_(pa.int64())
_FIXED: dict[str, pa.DataType] = {
    **dict.fromkeys(("study", "cell", "subset", "strategy", "phase", "trial_id", "tune_trial_id",
                     "status", "error", "config_from", "selection_split", "reporting_split",
                     "notes", "data_fingerprint", "pretrain_key", "device", "hostname",
                     "precision_used", "node_id", "eval_data", "eval_split", "model",
                     "eval_fingerprint", "classes"), _STRING),
    **dict.fromkeys(("seed", "epoch", "epochs_run", "best_epoch", "train_images",
                     "excluded_files", "world_size", "resumed_from_epoch", "n", "pid"), _INT),
    **dict.fromkeys(("wall_seconds", "fit_seconds", "train_loop_seconds", "setup_seconds",
                     "accuracy", "accuracy_low", "accuracy_high", "macro_f1",
                     "balanced_accuracy", "in_domain_accuracy", "in_domain_macro_f1",
                     "train_loss", "train_accuracy", "scheduled_lr", "best_val_macro_f1",
                     "images_per_second", "loss", "training_accuracy", "rss_mib"), _FLOAT),
    "same_data": pa.bool_(),  # an eval tree that is the model's own training data
    "finished_at": pa.timestamp("us", tz="UTC"),
    **dict.fromkeys(("test_predictions", "test_targets", "predictions", "targets"), _INTS),
    **dict.fromkeys(("test_confusion_matrix", "val_confusion_matrix", "confusion_matrix"),
                    pa.list_(_INTS)),
}
# Figures by name: counts are integers, everything else measured a float.
_PATTERNS: tuple[tuple[re.Pattern[str], pa.DataType], ...] = (
    (re.compile(r"(train_n|val_n|test_n|n)(_\w+)?"), _INT),
    (re.compile(r"(val|test)_\w+|(\w+_)?(seconds|recall_\w+)"), _FLOAT),
)


def _arrow_type(annotation: Any) -> pa.DataType:
    """A TrainConfig field's annotation as an Arrow type (``X | None`` is X, nullable)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _arrow_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return _arrow_type(type(args[0]))
    kinds = {bool: pa.bool_(), int: _INT, float: _FLOAT, str: _STRING}
    if annotation not in kinds:
        raise TypeError(f"no Parquet type for a setting annotated {annotation!r}")
    return kinds[annotation]


@functools.cache
def _setting_types() -> dict[str, pa.DataType]:
    found: dict[str, pa.DataType] = {}
    for cls in (DataConfig, ModelConfig, OptimConfig, AugmentConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                found[f.name] = _arrow_type(hints[f.name])
    return found


def column_type(name: str) -> pa.DataType | None:
    """The declared type of a results column, or None for a column this schema does not know
    (the store then infers it from the values)."""
    if name in _FIXED:
        return _FIXED[name]
    settings = _setting_types()
    if name in settings:
        return settings[name]
    for pattern, kind in _PATTERNS:
        if pattern.fullmatch(name):
            return kind
    return None


# Final-record fields copied into a trial's row (hyperparameters come from the resolved config
# instead).
RECORD_FIELDS = ("best_epoch", "train_images", "selection_split", "reporting_split", "notes",
                 "excluded_files", "data_fingerprint", "pretrain_key", "device", "hostname",
                 "precision_used", "world_size", "setup_seconds", "resumed_from_epoch", "node_id",
                 "pid", "rss_mib")
# Report keys that are not learning-curve figures: the run's record, Tune's bookkeeping.
_EPOCH_DROP = ("notes", "data_fingerprint", "pretrain_key", "device", "hostname", "pid", "node_id",
               "precision_used",
               "selection_split", "reporting_split", "excluded_files", "world_size",
               "setup_seconds", "resumed_from_epoch", "replayed", "node_ip", "date",
               "timestamp", "trial_id", "experiment_tag", "done", "training_iteration",
               "time_this_iter_s", "time_total_s", "time_since_restore",
               "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint")


def epoch_row(result: dict[str, Any]) -> dict[str, Any]:
    """An ``epochs.parquet`` row from one report (the last one's own epoch figures are under
    ``epoch_metrics``, nested, or flattened to ``epoch_metrics/...`` in Tune's CSV)."""
    own = result.get("epoch_metrics")
    if not isinstance(own, dict):
        own = {k.split("/", 1)[1]: v for k, v in result.items()
               if k.startswith("epoch_metrics/")}
    source = own or result
    row = {k: v for k, v in scalars(source).items()
           if k not in _EPOCH_DROP and not k.startswith(("test_", f"{CONFIG_KEY}/"))}
    row["epoch"] = int(result["epoch"])
    if "time_total_s" in result:
        row["trial_seconds"] = float(result["time_total_s"])
    return row


def epoch_rows(row: dict[str, Any], epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's ``epochs.parquet`` rows: each epoch with its trial's identifying fields."""
    keys = {k: row[k] for k in EPOCH_KEYS if k in row}
    return [{**epoch, **keys} for epoch in epochs]


def curve(frame: Any) -> list[dict[str, Any]]:
    """Epoch rows from a trial's Tune dataframe (``progress.csv``), one per epoch, the last
    report of an epoch winning; replayed reports are not epochs."""
    if frame is None or "epoch" not in frame:
        return []
    seen: dict[int, dict[str, Any]] = {}
    for record in frame.to_dict("records"):
        if record.get("epoch") == record.get("epoch") and not record.get("replayed"):
            seen[int(record["epoch"])] = epoch_row(record)
    return [seen[k] for k in sorted(seen)]


def resolved_config(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The resolved configuration a trial's report carries (nested, or flattened by Tune's
    CSV to ``resolved_config/<name>``), or None."""
    if not report:
        return None
    nested = report.get(CONFIG_KEY)
    if isinstance(nested, dict):
        return dict(nested)
    prefix = f"{CONFIG_KEY}/"
    flat = {k[len(prefix):]: v for k, v in report.items() if k.startswith(prefix)}
    return flat or None


def trial_row(study: str, config: dict[str, Any], settings: dict[str, Any] | None,
              epochs: list[dict[str, Any]], final: dict[str, Any] | None, *, status: str,
              tune_trial_id: str, error: str | None = None,
              last_report: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``trials.parquet`` row from a trial's Tune config, its resolved settings, its epoch
    rows and its final report.

    ``settings``: the trial's resolved configuration as it reported it; None for a trial that
    failed before reporting (the row then has its searched values only). ``last_report``: the
    trial's last report as Tune holds it, for a trial stopped early (its record fields, such as
    ``pretrain_key``, are not kept in the epoch rows)."""
    if settings is None:
        settings = {k: v for k, v in config.items() if k not in TRIAL_KEYS}
    row: dict[str, Any] = {
        "study": study, "cell": config["cell"], "subset": config["subset"],
        "strategy": config["strategy"], "phase": config["phase"],
        "trial_id": config["trial_key"], "tune_trial_id": tune_trial_id,
        "seed": int(config["seed"]), "status": status, "error": error,
        "config_from": config.get("config_from"),
        **{k: v for k, v in settings.items() if k not in ("subset", "strategy", "seed")},
        "epochs_run": max((e["epoch"] for e in epochs), default=0),
        "train_loop_seconds": float(sum(e.get("loop_seconds", 0.0) for e in epochs)),
        "finished_at": datetime.now(UTC),
        "wall_seconds": None,
    }
    # A trial stopped early or failed: its record fields (node, data) from its last report.
    kept = {k: v for k, v in (last_report or {}).items() if k in RECORD_FIELDS}
    source = final or kept
    if final is None and epochs:  # stopped early: the best epoch's selection figures
        last = epochs[-1]
        best = next((e for e in epochs if e["epoch"] == last.get("best_epoch")), last)
        source = {**kept, **last, **{k: v for k, v in best.items() if k.startswith("val_")},
                  "train_images": last.get("train_images")}
    for key, value in source.items():
        wanted = key.startswith(("val_", "test_", "train_n_")) or key in RECORD_FIELDS
        if wanted and (isinstance(value, bool | int | float | str | list) or value is None):
            row[key] = value
    if final is not None:
        row["fit_seconds"] = final.get("wall_seconds")
        row["wall_seconds"] = final.get("time_total_s", final.get("wall_seconds"))
    elif epochs:
        row["wall_seconds"] = epochs[-1].get("trial_seconds")
    # What this run never read is null, not a placeholder (a scratch run has no aug_factor).
    for name in inapplicable_settings({**settings, "strategy": config["strategy"]}):
        if name in row:
            row[name] = None
    return row
