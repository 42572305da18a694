"""A study's results: the row schema (``rows``) and the folder that holds them (``store``)."""

from __future__ import annotations

from study.results.rows import (
    CONFIG_KEY,
    EPOCH_COLUMNS,
    RECORD_FIELDS,
    TRIAL_COLUMNS,
    TRIAL_KEYS,
    epoch_row,
    resolved_config,
    trial_row,
)
from study.results.store import (
    EPOCHS_FILE,
    STUDY_FILE,
    TRIALS_FILE,
    ResultsStore,
    read_table,
    table_from_rows,
)

__all__ = [
    "CONFIG_KEY",
    "EPOCHS_FILE",
    "EPOCH_COLUMNS",
    "RECORD_FIELDS",
    "STUDY_FILE",
    "TRIALS_FILE",
    "TRIAL_COLUMNS",
    "TRIAL_KEYS",
    "ResultsStore",
    "epoch_row",
    "read_table",
    "resolved_config",
    "table_from_rows",
    "trial_row",
]
