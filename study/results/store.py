"""A study's results folder on disk: ``trials.parquet``, ``epochs.parquet`` and ``study.json``.

One row per trial (search trials and final re-runs) and one per (trial, epoch). Rows are keyed
by the trial's stable ``trial_id`` (``WBC_10-pretrain/search-02``): writing a trial again
replaces its row and its epoch rows, so a study resumed after a crash never holds a trial twice.

Writing a trial costs the same with ten rows stored or ten thousand: it adds two small files,
``rows/<trial>.<version>.epochs.parquet`` and then ``rows/<trial>.<version>.trial.parquet``
(the trial file, written last, marks the pair complete), and rewrites nothing. ``compact()``
merges the row files into ``trials.parquet`` and ``epochs.parquet`` (the latest version of a
trial wins) and removes exactly the files it merged, so a write landing meanwhile is kept for the
next one; a study compacts when its Tune run ends and ``study report`` before it reads.
``trials()``, ``epochs()`` and ``trial_rows()`` read both, so they are up to date at any moment.
Every file is written beside its target and renamed into place: a reader (or a crash) sees the
old file or the new one, never half of one. Every column has a declared type
(``study.results.rows.column_type``: floats, ints, strings, bools, a UTC timestamp for
``finished_at``, confusion matrices as nested integer lists), whatever values it holds so far;
a setting a run never read is null. So pandas, pyarrow and DuckDB read them as they are.

No Ray here: the report reads these files with nothing but pandas.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.results.rows import (
    EPOCH_COLUMNS,
    EVAL_COLUMNS,
    TRIAL_COLUMNS,
    column_type,
    epoch_rows,
)
from wbc.fileio import atomic_write_bytes, atomic_write_text, file_lock

__all__ = [
    "EPOCHS_FILE",
    "EVAL_FILE",
    "ROWS_DIR",
    "STUDY_FILE",
    "TRIALS_FILE",
    "ResultsStore",
    "failed_trials",
    "read_table",
    "table_from_rows",
]

TRIALS_FILE = "trials.parquet"
EVAL_FILE = "eval.parquet"  # the kept models scored on other trees (study.evaluation)
EPOCHS_FILE = "epochs.parquet"
STUDY_FILE = "study.json"
ROWS_DIR = "rows"  # row files not compacted yet
_TRIAL_SUFFIX = ".trial.parquet"
_EPOCHS_SUFFIX = ".epochs.parquet"
_ORPHAN_SECONDS = 3600.0  # an epochs file this old without its trial file: a write that died

def _inferred_type(name: str, values: Sequence[Any]) -> pa.DataType:
    """The type of a column the schema does not declare (``rows.column_type``), from its
    values."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.string()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if all(isinstance(v, str) for v in present):
        return pa.string()
    if all(isinstance(v, list | tuple) for v in present):
        return pa.array([list(v) for v in present]).type
    raise TypeError(f"column {name!r} mixes value types "
                    f"({', '.join(sorted({type(v).__name__ for v in present}))})")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _coerce(name: str, kind: pa.DataType, value: Any) -> Any:
    """A value as its column's declared type: rows written by earlier versions (an ISO string
    for ``finished_at``, a float count, a placeholder string), and Tune's CSV, which reads
    booleans back as strings."""
    if _missing(value):
        return None
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_integer(kind):
        if isinstance(value, float) and not value.is_integer():
            raise TypeError(f"column {name!r} holds integers; got {value!r}")
        return int(value)
    if pa.types.is_boolean(kind):
        if isinstance(value, str):
            if value not in ("True", "False", "true", "false"):
                raise TypeError(f"column {name!r} holds booleans; got {value!r}")
            return value in ("True", "true")
        return bool(value)
    if pa.types.is_timestamp(kind):
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if pa.types.is_string(kind):
        if not isinstance(value, str):
            raise TypeError(f"column {name!r} mixes value types ({type(value).__name__}, str): "
                            f"its values are strings, not {value!r}")
        return value
    return list(value) if isinstance(value, tuple) else value


def table_from_rows(rows: Sequence[dict[str, Any]], first: Sequence[str] = ()) -> pa.Table:
    """A typed table: ``first`` columns in that order, then the others sorted by name."""
    names: dict[str, None] = dict.fromkeys(c for c in first if any(c in r for r in rows))
    names.update(dict.fromkeys(sorted({k for r in rows for k in r} - set(names))))
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        kind = column_type(name)
        if kind is None:
            kind = _inferred_type(name, values)
        else:
            values = [_coerce(name, kind, v) for v in values]
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


def failed_trials(trials: pd.DataFrame) -> dict[str, tuple[int, str | None]]:
    """Cells with failed trials: cell -> (how many failed, the last line of the first error
    text recorded, the exception's own message; None when none was)."""
    if not len(trials) or "status" not in trials:
        return {}
    found: dict[str, tuple[int, str | None]] = {}
    for cell, rows in trials[trials["status"] == "error"].groupby("cell"):
        texts = [str(e).strip() for e in rows.get("error", pd.Series([], dtype=object)).dropna()]
        first = next((t.splitlines()[-1] for t in texts if t), None)
        found[str(cell)] = (len(rows), first)
    return found


def _row_file_key(trial_id: str) -> str:
    """A trial id as a file name with no dot (the dots separate key, version and kind)."""
    return urllib.parse.quote(trial_id, safe="").replace(".", "%2E")


class ResultsStore:
    """The results folder of one study; safe to use from several processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trials_path = self.root / TRIALS_FILE
        self.epochs_path = self.root / EPOCHS_FILE
        self.study_path = self.root / STUDY_FILE
        self.rows_dir = self.root / ROWS_DIR

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.root / ".results.lock"):
            yield

    def write_trial(self, row: dict[str, Any], epochs: Sequence[dict[str, Any]]) -> None:
        """Insert or replace one trial's row and all its epoch rows: two new row files (epochs
        first: a trial row always has its curve), nothing earlier rewritten."""
        stem = (f"{_row_file_key(row['trial_id'])}.{time.time_ns():020d}-{os.getpid()}-"
                f"{threading.get_ident()}")
        new = epoch_rows(row, list(epochs))
        epochs_table = (table_from_rows(new, EPOCH_COLUMNS) if new
                        else pa.table({"trial_id": pa.array([], pa.string())}))
        _write_table(self.rows_dir / f"{stem}{_EPOCHS_SUFFIX}", epochs_table)
        _write_table(self.rows_dir / f"{stem}{_TRIAL_SUFFIX}",
                     table_from_rows([row], TRIAL_COLUMNS))

    def _pending(self) -> tuple[dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
                                list[Path]]:
        """Row files not compacted yet: (the latest complete version of each trial as (row,
        epoch rows), the files a compaction may remove). Those are every version up to the
        latest complete one, and epoch files left alone by a write that died before its trial
        file (older than ``_ORPHAN_SECONDS``); a write in flight is never among them."""
        try:
            entries = sorted((p for p in self.rows_dir.iterdir()
                              if p.name.endswith(".parquet") and not p.name.startswith(".")),
                             key=lambda p: p.name)
        except FileNotFoundError:
            return {}, []
        latest: dict[str, str] = {}  # file key -> stem of its newest complete version
        for path in entries:
            if path.name.endswith(_TRIAL_SUFFIX):
                stem = path.name[:-len(_TRIAL_SUFFIX)]
                latest[stem.split(".", 1)[0]] = stem  # names sort by version within a key
        found: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for stem in latest.values():
            trial = _read_rows(self.rows_dir / f"{stem}{_TRIAL_SUFFIX}")
            epochs = _read_rows(self.rows_dir / f"{stem}{_EPOCHS_SUFFIX}")
            if trial:
                found[trial[0]["trial_id"]] = (trial[0], [e for e in epochs if "epoch" in e])
        removable = []
        old = time.time() - _ORPHAN_SECONDS
        for path in entries:
            stem = path.name.rsplit(".", 2)[0]
            newest = latest.get(stem.split(".", 1)[0])
            if newest is not None and stem <= newest:
                removable.append(path)
            else:
                with suppress(FileNotFoundError):
                    if path.stat().st_mtime < old:
                        removable.append(path)
        return found, removable

    def compact(self) -> int:
        """Merge the row files into ``trials.parquet`` and ``epochs.parquet``; the number of
        trials merged. A bad file stops the merge before any change."""
        if not self.rows_dir.is_dir():
            return 0
        with self._locked():
            pending, files = self._pending()
            if not files:
                return 0
            if pending:
                epochs = [r for r in _read_rows(self.epochs_path)
                          if r.get("trial_id") not in pending]
                trials = [r for r in _read_rows(self.trials_path)
                          if r.get("trial_id") not in pending]
                for row, curve_rows in pending.values():
                    trials.append(row)
                    epochs.extend(curve_rows)
                if epochs:
                    _write_table(self.epochs_path, table_from_rows(epochs, EPOCH_COLUMNS))
                else:
                    self.epochs_path.unlink(missing_ok=True)  # no trial has epochs now
                _write_table(self.trials_path, table_from_rows(trials, TRIAL_COLUMNS))
            for path in files:
                path.unlink(missing_ok=True)
            return len(pending)

    def trials(self) -> pd.DataFrame:
        """Every trial row (compacted and not yet), one per ``trial_id``."""
        pending, _ = self._pending()
        if not pending:
            return self._frame(self.trials_path, TRIAL_COLUMNS)
        rows = [r for r in _read_rows(self.trials_path) if r.get("trial_id") not in pending]
        rows += [row for row, _ in pending.values()]
        return table_from_rows(rows, TRIAL_COLUMNS).to_pandas()

    def epochs(self) -> pd.DataFrame:
        """Every epoch row of the trials ``trials()`` gives."""
        pending, _ = self._pending()
        if not pending:
            return self._frame(self.epochs_path, EPOCH_COLUMNS)
        rows = [r for r in _read_rows(self.epochs_path) if r.get("trial_id") not in pending]
        rows += [e for _, curve_rows in pending.values() for e in curve_rows]
        if not rows:
            return pd.DataFrame(columns=list(EPOCH_COLUMNS))
        return table_from_rows(rows, EPOCH_COLUMNS).to_pandas()

    @staticmethod
    def _frame(path: Path, columns: Sequence[str]) -> pd.DataFrame:
        try:
            return read_table(path).to_pandas()
        except FileNotFoundError:
            return pd.DataFrame(columns=list(columns))

    def trial_rows(self) -> dict[str, dict[str, Any]]:
        """Every stored trial row by ``trial_id``."""
        rows = {r["trial_id"]: r for r in _read_rows(self.trials_path)}
        pending, _ = self._pending()
        rows.update({key: row for key, (row, _) in pending.items()})
        return rows

    def trial_row(self, trial_id: str) -> dict[str, Any] | None:
        """One trial's stored row, or None; reads only that trial's row files."""
        prefix = _row_file_key(trial_id) + "."
        try:
            versions = sorted(p.name for p in self.rows_dir.iterdir()
                              if p.name.startswith(prefix) and p.name.endswith(_TRIAL_SUFFIX))
        except FileNotFoundError:
            versions = []
        if versions:
            rows = _read_rows(self.rows_dir / versions[-1])
            return rows[0] if rows else None
        try:
            with self.trials_path.open("rb") as handle:
                table = pq.read_table(handle, filters=[("trial_id", "=", trial_id)])
        except FileNotFoundError:
            return None
        except pa.ArrowInvalid as err:
            raise RuntimeError(f"{self.trials_path}: not a readable Parquet file ({err}); move "
                               "it aside to start the results over, or restore it from a copy"
                               ) from err
        found = table.to_pylist()
        return found[0] if found else None

    def evaluations(self) -> pd.DataFrame:
        """The ``eval.parquet`` rows: kept models scored on other trees (empty: none)."""
        return self._frame(self.root / EVAL_FILE, EVAL_COLUMNS)

    def write_evaluations(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace evaluation rows, keyed by (``trial_id``, ``eval_data``)."""
        with self._locked():
            new = {(r["trial_id"], r["eval_data"]): r for r in rows}
            kept = [r for r in _read_rows(self.root / EVAL_FILE)
                    if (r.get("trial_id"), r.get("eval_data")) not in new]
            _write_table(self.root / EVAL_FILE, table_from_rows([*kept, *new.values()],
                                                                EVAL_COLUMNS))

    def write_study(self, record: dict[str, Any]) -> None:
        with self._locked():
            text = json.dumps(record, indent=2, sort_keys=False, default=str)
            atomic_write_text(self.study_path, text + "\n")

    def create_study(self, record: dict[str, Any]) -> None:
        """Write ``study.json`` only if there is none: ``FileExistsError`` otherwise (the file
        appears whole, through a hard link of a complete temporary file)."""
        tmp = self.study_path.with_name(f".{STUDY_FILE}.{os.getpid()}.new")
        atomic_write_text(tmp, json.dumps(record, indent=2, default=str) + "\n")
        try:
            os.link(tmp, self.study_path)
        finally:
            tmp.unlink(missing_ok=True)

    def read_study(self) -> dict[str, Any]:
        """``study.json``; ``FileNotFoundError`` when absent, ``ValueError`` naming the file when
        it is not a study record."""
        if not self.study_path.exists():
            raise FileNotFoundError(f"{self.study_path} does not exist: {self.root} is not a "
                                    "study's results folder")
        try:
            data = json.loads(self.study_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.study_path}: not valid JSON ({err}); restore it from a copy, "
                             "or start a new study in another folder") from err
        if not isinstance(data, dict):
            raise ValueError(f"{self.study_path}: not a study record (a JSON object); restore "
                             "it from a copy, or start a new study in another folder")
        return data

    def verify(self) -> None:
        """Read every Parquet file's footer: ``RuntimeError`` naming the first that is not a
        readable Parquet file (a truncated ``trials.parquet``), before a resume starts work."""
        paths = [self.trials_path, self.epochs_path]
        if self.rows_dir.is_dir():
            paths += sorted(p for p in self.rows_dir.iterdir() if p.name.endswith(".parquet")
                            and not p.name.startswith("."))
        for path in paths:
            try:
                with path.open("rb") as handle:
                    pq.read_metadata(handle)
            except FileNotFoundError:
                continue
            except (pa.ArrowInvalid, OSError) as err:
                raise RuntimeError(f"{path}: not a readable Parquet file ({err}); restore it "
                                   "from a copy, or move it aside to go on without its rows"
                                   ) from err
