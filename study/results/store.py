"""A study's results folder on disk: ``trials.parquet``, ``epochs.parquet`` and ``study.json``.

One row per trial (search trials and final re-runs) and one per (trial, epoch). Rows are keyed
by the trial's stable ``trial_id`` (``WBC_10-pretrain/search-02``): writing a trial again
replaces its row and its epoch rows, so a study resumed after a crash never holds a trial twice.
Every write rewrites the file next to it and renames it into place under a lock: a reader (or a
crash) sees the old file or the new one, never half of one. Columns are typed (floats, ints,
strings, bools; confusion matrices as nested integer lists), with no JSON strings for numbers, so
pandas, pyarrow and DuckDB read them as they are.

No Ray here: the report reads these files with nothing but pandas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.results.rows import EPOCH_COLUMNS, TRIAL_COLUMNS, epoch_rows
from wbc.fileio import atomic_write_bytes, atomic_write_text, file_lock

__all__ = [
    "EPOCHS_FILE",
    "STUDY_FILE",
    "TRIALS_FILE",
    "ResultsStore",
    "read_table",
    "table_from_rows",
]

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
STUDY_FILE = "study.json"

# Columns whose type must not depend on the values seen so far (an lr of 1 is still a float).
_FLOAT_PREFIXES = ("val_", "test_", "lr", "weight_decay", "train_loss", "train_accuracy")
_FLOAT_SUFFIXES = ("_seconds", "_per_second", "_accuracy", "_macro_f1", "_score")
_INT_SUFFIXES = ("_n", "_epoch", "_images", "epoch", "seed", "aug_factor", "_files")


def _column_type(name: str, values: Sequence[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if not present:
        return pa.float64() if name.startswith(_FLOAT_PREFIXES) else pa.string()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        floaty = (any(isinstance(v, float) for v in present)
                  or name.startswith(_FLOAT_PREFIXES) or name.endswith(_FLOAT_SUFFIXES))
        if floaty and not name.endswith(_INT_SUFFIXES):
            return pa.float64()
        if any(isinstance(v, float) for v in present):
            return pa.float64()
        return pa.int64()
    if all(isinstance(v, str) for v in present):
        return pa.string()
    if all(isinstance(v, list | tuple) for v in present):
        return pa.array([list(v) for v in present]).type
    raise TypeError(f"column {name!r} mixes value types "
                    f"({', '.join(sorted({type(v).__name__ for v in present}))})")


def table_from_rows(rows: Sequence[dict[str, Any]], first: Sequence[str] = ()) -> pa.Table:
    """A typed table: ``first`` columns in that order, then the others sorted by name."""
    names: dict[str, None] = dict.fromkeys(c for c in first if any(c in r for r in rows))
    names.update(dict.fromkeys(sorted({k for r in rows for k in r} - set(names))))
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        kind = _column_type(name, values)
        if pa.types.is_floating(kind):
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=kind))
        fields.append(pa.field(name, kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_table(path: Path) -> pa.Table:
    """Read through one open handle: a writer renaming a new file into place meanwhile cannot
    mix two versions (reading by path, pyarrow opens the file more than once)."""
    try:
        with path.open("rb") as handle:
            return pq.read_table(handle)
    except pa.ArrowInvalid as err:
        raise RuntimeError(f"{path}: not a readable Parquet file ({err}); move it aside to "
                           "start the results over, or restore it from a copy") from err


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        return list(read_table(path).to_pylist())
    except FileNotFoundError:
        return []


def _write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


class ResultsStore:
    """The results folder of one study; safe to use from several processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trials_path = self.root / TRIALS_FILE
        self.epochs_path = self.root / EPOCHS_FILE
        self.study_path = self.root / STUDY_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.root / ".results.lock"):
            yield

    def write_trial(self, row: dict[str, Any], epochs: Sequence[dict[str, Any]]) -> None:
        """Insert or replace one trial's row and all its epoch rows (epochs first: a trial row
        always has its curve)."""
        key = row["trial_id"]
        with self._locked():
            # Read both before writing either: a bad file stops the write before any change.
            kept = [r for r in _read_rows(self.epochs_path) if r.get("trial_id") != key]
            trials = [r for r in _read_rows(self.trials_path) if r.get("trial_id") != key]
            new = epoch_rows(row, list(epochs))
            if kept or new:
                _write_table(self.epochs_path, table_from_rows(kept + new, EPOCH_COLUMNS))
            else:
                self.epochs_path.unlink(missing_ok=True)  # its only trial has no epochs now
            _write_table(self.trials_path, table_from_rows([*trials, row], TRIAL_COLUMNS))

    def trials(self) -> pd.DataFrame:
        return self._frame(self.trials_path, TRIAL_COLUMNS)

    def epochs(self) -> pd.DataFrame:
        return self._frame(self.epochs_path, EPOCH_COLUMNS)

    @staticmethod
    def _frame(path: Path, columns: Sequence[str]) -> pd.DataFrame:
        try:
            return read_table(path).to_pandas()
        except FileNotFoundError:
            return pd.DataFrame(columns=list(columns))

    def trial_rows(self) -> dict[str, dict[str, Any]]:
        """Every stored trial row by ``trial_id``."""
        with self._locked():
            return {r["trial_id"]: r for r in _read_rows(self.trials_path)}

    def write_study(self, record: dict[str, Any]) -> None:
        with self._locked():
            text = json.dumps(record, indent=2, sort_keys=False, default=str)
            atomic_write_text(self.study_path, text + "\n")

    def read_study(self) -> dict[str, Any]:
        if not self.study_path.exists():
            raise FileNotFoundError(f"{self.study_path} does not exist: {self.root} is not a "
                                    "study's results folder")
        data: dict[str, Any] = json.loads(self.study_path.read_text())
        return data
