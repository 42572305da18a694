"""ResultsStore: upserts keyed by trial_id, append-only row files compacted into typed Parquet
that pandas, pyarrow and DuckDB read as they are, atomic replacement, several writer processes,
and study.json."""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.results import EPOCHS_FILE, STUDY_FILE, TRIALS_FILE, ResultsStore, table_from_rows

CM = [[5, 1, 0], [0, 7, 2], [1, 0, 9]]


def _trial(trial_id: str, **values: Any) -> dict[str, Any]:
    return {"study": "quick", "cell": "WBC_10-scratch", "subset": "WBC_10",
            "strategy": "scratch", "phase": "search", "trial_id": trial_id, "seed": 0,
            "status": "ok", "lr": 0.05, "val_macro_f1": 0.5, "test_confusion_matrix": CM,
            "error": None, **values}


def _epochs(n: int, loss: float = 1.0) -> list[dict[str, Any]]:
    return [{"epoch": e, "train_loss": loss / e, "lr": 0.05, "val_macro_f1": 0.1 * e}
            for e in range(1, n + 1)]


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()
            if p.name.startswith(".") and p.name.endswith(".tmp")]


def _sql(query: str) -> tuple[Any, ...]:
    relation = duckdb.sql(query)
    assert relation is not None
    rows = relation.fetchall()
    assert len(rows) == 1
    return tuple(rows[0])


# --- upserts ---------------------------------------------------------------------------------


def test_rewriting_a_trial_replaces_its_row_and_epochs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a", val_macro_f1=0.4), _epochs(3))
    store.write_trial(_trial("b", val_macro_f1=0.6), _epochs(4, loss=2.0))
    store.write_trial(_trial("a", val_macro_f1=0.9, seed=7), _epochs(2, loss=5.0))

    trials = store.trials().set_index("trial_id")
    assert sorted(trials.index) == ["a", "b"]
    assert trials.loc["a", "val_macro_f1"] == 0.9 and trials.loc["a", "seed"] == 7
    assert trials.loc["b", "val_macro_f1"] == 0.6 and trials.loc["b", "seed"] == 0

    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    a = epochs[epochs.trial_id == "a"].sort_values("epoch")
    assert a.epoch.tolist() == [1, 2]
    assert a.train_loss.tolist() == [5.0, 2.5]  # the new curve, not the old one
    b = epochs[epochs.trial_id == "b"].sort_values("epoch")
    assert b.epoch.tolist() == [1, 2, 3, 4]
    assert b.train_loss.tolist() == pytest.approx([2.0, 1.0, 2 / 3, 0.5])

    assert set(store.trial_rows()) == {"a", "b"}
    assert store.trial_rows()["a"]["test_confusion_matrix"] == CM


def test_trial_ids_in_epoch_rows_come_from_the_trial(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), [{"epoch": 1, "trial_id": "other", "train_loss": 1.0}])
    assert store.epochs().trial_id.tolist() == ["a"]


def test_columns_come_in_the_documented_order(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a", zeta=1, alpha="x"), _epochs(1))
    assert store.compact() == 1
    names = pq.read_schema(store.trials_path).names
    assert names[:4] == ["study", "cell", "subset", "strategy"]
    assert names.index("trial_id") < names.index("lr") < names.index("alpha") < names.index("zeta")
    # Epoch rows carry their trial's identity: a curve needs no join to be placed.
    assert pq.read_schema(store.epochs_path).names[:8] == [
        "study", "cell", "phase", "subset", "strategy", "seed", "trial_id", "epoch"]


def test_empty_folder_reads_as_empty_frames(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "absent")
    assert store.trials().empty and "trial_id" in store.trials().columns
    assert store.epochs().empty and "epoch" in store.epochs().columns


def test_rewriting_the_only_trial_without_epochs_drops_its_old_epochs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(3))
    store.write_trial(_trial("a", status="error"), [])
    assert store.epochs().empty


def test_rewriting_one_of_two_trials_without_epochs_drops_its_old_epochs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(3))
    store.write_trial(_trial("b"), _epochs(2))
    store.write_trial(_trial("a", status="error"), [])
    assert store.epochs().trial_id.tolist() == ["b", "b"]


# --- column types ----------------------------------------------------------------------------


def _typed_store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a", lr=1, seed=3, val_macro_f1=0.25, epochs_run=2), _epochs(2))
    store.write_trial(_trial("b", lr=0.1, seed=4, val_macro_f1=0.5, epochs_run=3,
                             test_confusion_matrix=None), _epochs(3))
    store.compact()
    return store


def test_column_types_in_the_parquet_schema(tmp_path: Path) -> None:
    schema = pq.read_schema(_typed_store(tmp_path).trials_path)
    assert schema.field("lr").type == pa.float64()
    assert schema.field("val_macro_f1").type == pa.float64()
    assert schema.field("seed").type == pa.int64()
    assert schema.field("epochs_run").type == pa.int64()
    assert schema.field("status").type == pa.string()
    assert schema.field("test_confusion_matrix").type == pa.list_(pa.list_(pa.int64()))
    assert "error" in schema.names  # None in every row, still a column


def test_read_back_with_pandas(tmp_path: Path) -> None:
    store = _typed_store(tmp_path)
    frame = pd.read_parquet(store.trials_path).set_index("trial_id")
    assert frame["lr"].dtype == "float64" and frame.loc["a", "lr"] == 1.0
    assert frame["seed"].dtype == "int64" and frame["seed"].tolist() == [3, 4]
    assert frame["status"].tolist() == ["ok", "ok"]
    assert frame["error"].isna().all()
    cm = frame.loc["a", "test_confusion_matrix"]
    assert [list(row) for row in cm] == CM
    assert frame.loc["b", "test_confusion_matrix"] is None
    epochs = pd.read_parquet(store.epochs_path)
    assert epochs["epoch"].dtype == "int64" and epochs["train_loss"].dtype == "float64"


def test_read_back_with_pyarrow(tmp_path: Path) -> None:
    table = pq.read_table(_typed_store(tmp_path).trials_path)
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert rows["a"]["lr"] == 1.0 and type(rows["a"]["lr"]) is float
    assert type(rows["a"]["seed"]) is int
    assert rows["a"]["test_confusion_matrix"] == CM
    assert rows["b"]["test_confusion_matrix"] is None
    assert rows["a"]["error"] is None and rows["b"]["error"] is None


def test_read_back_with_duckdb(tmp_path: Path) -> None:
    store = _typed_store(tmp_path)
    trials = f"read_parquet('{store.trials_path}')"
    assert _sql(f"select count(*), sum(lr), sum(seed), max(status) from {trials}") == \
        (2, pytest.approx(1.1), 7, "ok")
    assert _sql(f"select typeof(lr), typeof(seed), typeof(status), "
                f"typeof(test_confusion_matrix) from {trials} limit 1") == \
        ("DOUBLE", "BIGINT", "VARCHAR", "BIGINT[][]")
    assert _sql(f"select test_confusion_matrix[2][3] from {trials} where trial_id = 'a'") == (2,)
    epochs = f"read_parquet('{store.epochs_path}')"
    assert _sql(f"select count(*), count(distinct (trial_id, epoch)), sum(epoch) from {epochs}") \
        == (5, 5, 1 + 2 + 1 + 2 + 3)


def test_table_from_rows_types() -> None:
    table = table_from_rows([
        {"lr": 1, "seed": 1, "val_n": 10, "flag": True, "note": None, "test_accuracy": None},
        {"lr": 2, "seed": 2, "val_n": 12, "flag": False, "note": None, "test_accuracy": None},
    ])
    assert table.schema.field("lr").type == pa.float64()  # an lr of 1 is still a float
    assert table.schema.field("seed").type == pa.int64()
    assert table.schema.field("val_n").type == pa.int64()
    assert table.schema.field("flag").type == pa.bool_()
    assert table.schema.field("note").type == pa.string()
    assert table.schema.field("test_accuracy").type == pa.float64()
    assert table.column("lr").to_pylist() == [1.0, 2.0]


def test_declared_columns_keep_their_type_whatever_the_rows_hold() -> None:
    """Rows from earlier versions and from Tune's CSV: an ISO string for finished_at, a float
    count, booleans as strings, NaN for a null; a column of nulls keeps its declared type."""
    from datetime import UTC, datetime

    table = table_from_rows([
        {"finished_at": "2026-12-01T14:10:12+0000", "test_n": 345.0, "mask_augment": "True",
         "aug_factor": float("nan"), "val_n": None},
        {"finished_at": datetime(2026, 12, 1, 15, 0, tzinfo=UTC), "test_n": 12,
         "mask_augment": False, "aug_factor": 3, "val_n": None},
    ])
    schema = table.schema
    assert schema.field("finished_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("test_n").type == schema.field("val_n").type == pa.int64()
    assert schema.field("mask_augment").type == pa.bool_()
    assert table.column("mask_augment").to_pylist() == [True, False]
    assert table.column("aug_factor").to_pylist() == [None, 3]
    assert table.column("finished_at").to_pylist()[0] == datetime(2026, 12, 1, 14, 10, 12,
                                                                  tzinfo=UTC)
    with pytest.raises(TypeError, match=r"'test_n' holds integers"):
        table_from_rows([{"test_n": 2.5}])


def test_table_from_rows_rejects_mixed_types() -> None:
    with pytest.raises(TypeError, match=r"'status'.*int.*str"):
        table_from_rows([{"status": "ok"}, {"status": 3}])


# --- append-only row files and compaction ---------------------------------------------------


def test_a_write_adds_files_and_rewrites_none(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(2))
    store.compact()
    compacted = store.trials_path.stat().st_mtime_ns, store.epochs_path.stat().st_mtime_ns
    store.write_trial(_trial("b"), _epochs(3))
    assert (store.trials_path.stat().st_mtime_ns, store.epochs_path.stat().st_mtime_ns) == \
        compacted
    assert len(list(store.rows_dir.glob("*.parquet"))) == 2  # the trial and its epochs
    # Readers see the new trial before compaction...
    assert sorted(store.trials().trial_id) == ["a", "b"]
    assert len(store.epochs()) == 5
    assert store.trial_row("b")["seed"] == 0 and store.trial_row("a")["trial_id"] == "a"
    assert store.trial_row("absent") is None
    # ... and compaction brings the files up to date and removes what it merged.
    assert store.compact() == 1
    assert sorted(pq.read_table(store.trials_path).column("trial_id").to_pylist()) == ["a", "b"]
    assert list(store.rows_dir.iterdir()) == []
    assert store.compact() == 0


def test_the_latest_version_of_a_trial_wins_over_the_compacted_one(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("WBC_10-scratch/search-00", val_macro_f1=0.1), _epochs(3))
    store.compact()
    store.write_trial(_trial("WBC_10-scratch/search-00", val_macro_f1=0.2), _epochs(1))
    store.write_trial(_trial("WBC_10-scratch/search-00", val_macro_f1=0.3), _epochs(2))
    assert store.trial_row("WBC_10-scratch/search-00")["val_macro_f1"] == 0.3
    assert store.trials().val_macro_f1.tolist() == [0.3]
    assert store.epochs().epoch.tolist() == [1, 2]
    store.compact()
    assert store.trials().val_macro_f1.tolist() == [0.3]
    assert store.epochs().epoch.tolist() == [1, 2]


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    for i in range(3):
        store.write_trial(_trial(f"t{i}"), _epochs(2))
    store.write_study({"name": "quick"})
    store.compact()
    assert _temp_files(tmp_path) == [] and _temp_files(store.rows_dir) == []
    assert {TRIALS_FILE, EPOCHS_FILE, STUDY_FILE} <= {p.name for p in tmp_path.iterdir()}


def test_a_write_that_dies_between_its_files_leaves_no_trial_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(2))
    real = pq.write_table
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) > 1:  # the epochs file is written, the trial file dies
            raise OSError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        store.write_trial(_trial("b"), _epochs(1))
    monkeypatch.undo()
    assert len(calls) == 2
    # The orphan epochs file is not a trial: readers and compaction leave it out.
    assert sorted(store.trial_rows()) == ["a"]
    assert store.epochs().trial_id.tolist() == ["a", "a"]
    store.compact()
    assert pq.read_table(store.trials_path).column("trial_id").to_pylist() == ["a"]
    assert _temp_files(tmp_path) == []
    # A young orphan may be a write in flight: kept, and still not read as a trial.
    orphan, = store.rows_dir.iterdir()
    assert orphan.name.endswith(".epochs.parquet") and sorted(store.trial_rows()) == ["a"]
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))  # an hour later: swept
    store.compact()
    assert list(store.rows_dir.iterdir()) == []


def test_crash_before_rename_leaves_the_compacted_files(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(2))
    store.compact()
    before = store.trials_path.read_bytes()
    store.write_trial(_trial("b", val_macro_f1=0.99), _epochs(1))
    real = __import__("os").fsync
    calls: list[int] = []

    def crash_on_second(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1:  # the new trials bytes are in the temp file, not yet renamed
            raise OSError("power cut")
        real(fd)

    monkeypatch.setattr("wbc.fileio.os.fsync", crash_on_second)
    with pytest.raises(OSError, match="power cut"):
        store.compact()
    assert store.trials_path.read_bytes() == before
    assert _temp_files(tmp_path) == []  # the failed write cleaned up after itself
    # Nothing lost: the row files are still there and the next compaction merges them.
    assert sorted(store.trial_rows()) == ["a", "b"]
    monkeypatch.undo()
    store.compact()
    assert sorted(pq.read_table(store.trials_path).column("trial_id").to_pylist()) == ["a", "b"]


# --- several processes -----------------------------------------------------------------------


def _write_many(root: str, prefix: str) -> None:
    store = ResultsStore(Path(root))
    for i in range(10):
        store.write_trial(_trial(f"{prefix}-{i:02d}", seed=i), _epochs(2))


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), name))
               for name in ("p", "q")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]

    ResultsStore(tmp_path).compact()
    ids = pd.read_parquet(tmp_path / TRIALS_FILE)["trial_id"].tolist()
    assert len(ids) == 20
    assert sorted(ids) == sorted(f"{p}-{i:02d}" for p in ("p", "q") for i in range(10))
    epochs = pd.read_parquet(tmp_path / EPOCHS_FILE)
    assert len(epochs) == 40 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert _temp_files(tmp_path) == []


# --- a corrupt file --------------------------------------------------------------------------


def test_corrupt_trials_file_raises_and_is_kept(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(1))
    store.compact()
    garbage = b"this is not parquet at all, just garbage bytes\x00\x01"
    store.trials_path.write_bytes(garbage)
    store.write_trial(_trial("b"), _epochs(1))  # a write reads nothing earlier
    with pytest.raises(RuntimeError,
                       match=re.escape(str(store.trials_path)) + ".*move it aside"):
        store.compact()
    assert store.trials_path.read_bytes() == garbage
    assert len(list(store.rows_dir.iterdir())) == 2  # the new trial is kept for later
    with pytest.raises(RuntimeError, match=re.escape(str(store.trials_path))):
        store.trial_rows()
    with pytest.raises(RuntimeError, match=re.escape(str(store.trials_path))):
        store.trial_row("a")


def test_corrupt_epochs_file_raises_and_is_kept(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_trial(_trial("a"), _epochs(1))
    store.compact()
    before = store.trials_path.read_bytes()
    store.epochs_path.write_bytes(b"PAR1 garbage")
    store.write_trial(_trial("b"), _epochs(1))
    with pytest.raises(RuntimeError, match=re.escape(str(store.epochs_path))):
        store.compact()
    assert store.epochs_path.read_bytes() == b"PAR1 garbage"
    assert store.trials_path.read_bytes() == before


# --- study.json ------------------------------------------------------------------------------


def test_study_record_round_trip(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results" / "quick")
    record = {"name": "quick", "spec": {"subsets": ["WBC_10"], "space": {"lr_max": 0.2}},
              "started": "2024-01-01T00:00:00", "cells": 12, "done": False}
    store.write_study(record)
    assert store.read_study() == record
    store.write_study({**record, "done": True})
    assert store.read_study()["done"] is True
    assert ResultsStore(store.root).read_study()["cells"] == 12


def test_study_record_stores_paths_as_text(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_study({"data": tmp_path / "tree"})
    assert store.read_study() == {"data": str(tmp_path / "tree")}


def test_read_study_on_empty_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / STUDY_FILE))):
        ResultsStore(tmp_path).read_study()
