"""The row schema of a study's results, in one place: what a ``trials.parquet`` row and an
``epochs.parquet`` row hold, built from what a trial reported.

A trial reports its resolved configuration (``resolved_config``: every ``TrainConfig`` setting
it trained with, flat) and its epochs; the driver turns those into rows here and nowhere else:
the Tune callback as trials end, the reconciliation after a crash, and the report when it reads
a Ray Tune experiment folder alone.
"""

from __future__ import annotations

import time
from typing import Any

from wbc.metrics import scalars

__all__ = [
    "CONFIG_KEY",
    "EPOCH_COLUMNS",
    "EPOCH_KEYS",
    "EVAL_COLUMNS",
    "RECORD_FIELDS",
    "TRIAL_COLUMNS",
    "TRIAL_KEYS",
    "curve",
    "epoch_row",
    "epoch_rows",
    "resolved_config",
    "trial_row",
]

# Where a trial's report carries its resolved configuration (flat TrainConfig names).
CONFIG_KEY = "resolved_config"
# What a trial's Tune config carries besides the searched settings.
TRIAL_KEYS = ("cell", "subset", "strategy", "phase", "trial_key", "seed", "config_from")

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

# Final-record fields copied into a trial's row (hyperparameters come from the resolved config
# instead).
RECORD_FIELDS = ("best_epoch", "train_images", "selection_split", "reporting_split", "notes",
                 "excluded_files", "data_fingerprint", "pretrain_key", "device", "hostname",
                 "world_size", "setup_seconds", "resumed_from_epoch", "node_id")
# Report keys that are not learning-curve figures: the run's record, Tune's bookkeeping.
_EPOCH_DROP = ("notes", "data_fingerprint", "pretrain_key", "device", "hostname", "pid", "node_id",
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
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
    return row
