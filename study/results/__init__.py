"""A study's results: the row schema (``rows``) and the folder that holds them (``store``)."""

from __future__ import annotations

from study.results.rows import (
    CONFIG_KEY,
    EPOCH_COLUMNS,
    EPOCH_KEYS,
    EVAL_COLUMNS,
    RECORD_FIELDS,
    TRIAL_COLUMNS,
    TRIAL_KEYS,
    curve,
    epoch_row,
    epoch_rows,
    resolved_config,
    trial_row,
)
from study.results.store import (
    EPOCHS_FILE,
    EVAL_FILE,
    ROWS_DIR,
    STUDY_FILE,
    TRIALS_FILE,
    ResultsStore,
    failed_trials,
    read_table,
    table_from_rows,
)

__all__ = [
    "CONFIG_KEY",
    "EPOCHS_FILE",
    "EPOCH_COLUMNS",
    "EPOCH_KEYS",
    "EVAL_COLUMNS",
    "EVAL_FILE",
    "RECORD_FIELDS",
    "ROWS_DIR",
    "STUDY_FILE",
    "TRIALS_FILE",
    "TRIAL_COLUMNS",
    "TRIAL_KEYS",
    "ResultsStore",
    "curve",
    "epoch_row",
    "epoch_rows",
    "failed_trials",
    "read_table",
    "resolved_config",
    "table_from_rows",
    "trial_row",
]
