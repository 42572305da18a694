"""The driver's side of a study: every finished trial becomes Parquet rows, and a person can
follow along.

``StudyCallback`` runs in the Tune driver. It keeps each running trial's epoch reports and its
resolved configuration; when a trial ends (completed, stopped by ASHA, or failed after its
retries) it writes the trial's row and its epoch rows at once (``ResultsStore.write_trial``,
rows built by ``study.results.rows``), so results land as trials finish, then removes the
checkpoints of a trial that completed or was stopped (an errored one keeps them, for
``--resume``) but for a final trial's kept model, which it links into ``models/`` first
(``study.results.kept``; ``keep_models`` is applied to a cell when its last seed is in). The writes
run on a thread of their own, so Tune's event loop never waits on the disk, and cost the same with
10 rows stored or 10,000 (``benchmarks/driver_scaling.py``); what the callback asks of its rows on
every step is kept counted (``_RowIndex``), never recounted. ``Progress`` prints a status line and
one line per cell when the cell's final seeds are all in.
"""

from __future__ import annotations

import functools
import shutil
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.results import ResultsStore, epoch_row, resolved_config, trial_row
from study.results.kept import place_model, settle_models, tune_model_files
from study.sequential import Plan
from study.space import cell_space
from study.spec import StudySpec
from study.tune.progress import Progress, cell_summary, format_params
from study.tune.search import cell_name
from study.tune.trial import train_run_folder
from wbc.classifier.model_file import CARD_FILE, MODEL_FILE
from wbc.strategies import inapplicable_settings

__all__ = ["StudyCallback"]


def _error_text(trial: Any) -> str:
    """The trial's error trace: Tune writes it locally first, to storage later."""
    local = trial.error_file
    if local and Path(local).exists():
        return Path(local).read_text(errors="replace")
    error = trial.get_error()
    return str(error) if error is not None else "failed (Tune recorded no error text)"


class _RowIndex:
    """The stored rows, counted by phase and status and grouped by cell as they arrive."""

    def __init__(self, rows: dict[str, dict[str, Any]] | None = None) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self._by_cell: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        self.phases: Counter[str] = Counter()
        self.failed = 0
        for row in (rows or {}).values():
            self.add(row)

    def add(self, row: dict[str, Any]) -> None:
        old = self.by_id.get(row["trial_id"])
        if old is not None:
            self.phases[old["phase"]] -= 1
            self.failed -= old["status"] == "error"
            self._by_cell[(old["cell"], old["phase"])].pop(old["trial_id"], None)
        self.by_id[row["trial_id"]] = row
        self.phases[row["phase"]] += 1
        self.failed += row["status"] == "error"
        self._by_cell[(row["cell"], row["phase"])][row["trial_id"]] = row

    def cell(self, cell: str, phase: str) -> list[dict[str, Any]]:
        return list(self._by_cell.get((cell, phase), {}).values())

    def count(self, cell: str, phase: str) -> int:
        return len(self._by_cell.get((cell, phase), ()))


class _Writer:
    """Row writes on one thread of their own, in order; a failed write is raised at the next
    call (or at ``flush``), so no error passes unseen."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-rows")
        self._pending: list[Future[None]] = []

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def submit(self, job: Any, *args: Any) -> None:
        self._raise_failed()
        self._pending.append(self._pool.submit(job, *args))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


DROPPED_NOTE = "dropped.txt"


def _drop_checkpoints(trial_path: str | None, train_folder: Path | None) -> None:
    """A finished trial's checkpoints: Tune's in the trial folder (emptied, not removed: a
    driver killed before Tune saved its state restores the trial from its last checkpoint, and
    Tune fails a trial whose checkpoint folder is gone; an empty one makes the trial replay its
    row, or start over), and its Ray Train run's."""
    if trial_path and "://" not in trial_path:
        for folder in Path(trial_path).glob("checkpoint_*"):
            for item in folder.iterdir():
                if item.name in (DROPPED_NOTE, MODEL_FILE, CARD_FILE):  # a kept model stays
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)
            if not (folder / MODEL_FILE).exists():
                (folder / DROPPED_NOTE).write_text("the trial ended and its row was written; "
                                                   "its state was removed to save space\n")
    if train_folder is not None:
        shutil.rmtree(train_folder, ignore_errors=True)


class StudyCallback(Callback):
    """Rows for every finished trial, a status line, and a line per finished cell."""

    def __init__(self, spec: StudySpec, results: str, *, quiet: bool = False) -> None:
        self.spec = spec
        self.results = results
        self.cells = [cell_name(s, t) for s, t in spec.cells]
        self.searched = {cell_name(s, t): tuple(cell_space(spec.space, t)) for s, t in spec.cells}
        self.quiet = quiet
        self._reset()

    def _reset(self) -> None:
        self._epochs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self._settings: dict[str, dict[str, Any]] = {}  # trial id -> resolved config
        self._rows = _RowIndex()
        self._running: set[str] = set()  # as of Tune's last step
        self._announced: set[str] = set()
        self._announced_at: dict[str, int] = {}  # cell -> its final seeds when last announced
        self._looks = set(Plan.of(self.spec.to_dict()).looks())
        self.progress = Progress(total_search=self.spec.cell_search_trials * len(self.cells),
                                 total_final=self.spec.final_seeds * len(self.cells),
                                 most_final=max(self.spec.final_seeds, self.spec.max_final_seeds)
                                 * len(self.cells),
                                 cells=len(self.cells), quiet=self.quiet)

    # Tune pickles its callbacks with the experiment and restores them on ``Tuner.restore``:
    # start from what is on disk, not from what this object held when it was pickled.
    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self._reset()
        self._rows = _RowIndex(ResultsStore(Path(self.results)).trial_rows())
        self._announced = {c for c in self.cells if self._cell_done(c)}
        for row in self._rows.by_id.values():  # an earlier session's trials time the ETA too
            if row["status"] != "error":
                self.progress.trial_ended(row.get("wall_seconds"))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._running = {t.trial_id for t in trials if t.status == "RUNNING"}
        self._status()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get("replayed") or "epoch" not in result:
            return
        settings = resolved_config(result)
        if settings is not None:
            self._settings[trial.trial_id] = settings
        epochs = self._epochs[trial.trial_id]
        for old in result.get("epoch_history") or ():
            epochs.setdefault(int(old["epoch"]), epoch_row(old))
        epochs[int(result["epoch"])] = epoch_row(result)
        self._status()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get("replayed"):
            self._finish(trial, None)
            return
        final = result if "test_accuracy" in result else None
        self._finish(trial, self._record(trial, final,
                                         status="completed" if final else "stopped"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = _error_text(trial)
        self._finish(trial, self._record(trial, None, status="error", error=message[-4000:]))

    @property
    def _writer(self) -> _Writer:
        writer = self.__dict__.get("_writer_")
        if writer is None:
            writer = self.__dict__["_writer_"] = _Writer()
        return writer

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment: a thread pool does not pickle.
        return {k: v for k, v in self.__dict__.items() if k != "_writer_"}

    def _record(self, trial: Any, final: dict[str, Any] | None, *, status: str,
                error: str | None = None) -> dict[str, Any]:
        epochs = [self._epochs[trial.trial_id][k] for k in sorted(self._epochs[trial.trial_id])]
        last = getattr(trial, "last_result", None)
        settings = self._settings.get(trial.trial_id) or resolved_config(last)
        row = trial_row(self.spec.name, trial.config, settings, epochs, final, status=status,
                        tune_trial_id=trial.trial_id, error=error, last_report=last)
        # Checkpoints go once the row is safe; an errored trial keeps them for --resume.
        drop = None if status == "error" else (
            getattr(trial, "path", None),
            train_run_folder(self.spec, self.results, trial.config["trial_key"])
            if self.spec.resources.mode == "train" else None)
        model = None
        if status == "completed" and row["phase"] == "final" and self.spec.keep_models != "none":
            model = (getattr(trial, "path", None), row["cell"], int(row["seed"]))
        self._writer.submit(_write_row, self.results, row, epochs, drop, model)
        return row

    def _finish(self, trial: Any, row: dict[str, Any] | None) -> None:
        self._running.discard(trial.trial_id)
        self._epochs.pop(trial.trial_id, None)
        self._settings.pop(trial.trial_id, None)
        if row is not None:
            self._rows.add(row)
            if row["status"] != "error":
                self.progress.trial_ended(row.get("wall_seconds"))
            if row["status"] == "error":
                self.progress.say(f"trial {row['trial_id']} failed: "
                                  f"{(row.get('error') or '').strip().splitlines()[-1:]}")
        cell = trial.config.get("cell")
        finals = len(self._cell_rows(cell, "final")) if cell else 0
        # Announced when done, and again at each later look's seeds (sequential seeds).
        if cell and self._cell_done(cell) and (cell not in self._announced or (
                finals > self._announced_at.get(cell, finals) and finals in self._looks)):
            self._announced.add(cell)
            self._announced_at[cell] = finals
            self._announce(cell)
            # After the cell's rows (the writer keeps order): keep_models applied to it.
            self._writer.submit(functools.partial(
                settle_models, keep=self.spec.keep_models, final_seeds=self.spec.final_seeds),
                self.results, self._cell_rows(cell, "final"))
        self._status(force=row is not None and row["phase"] == "final")

    def _cell_rows(self, cell: str, phase: str) -> list[dict[str, Any]]:
        return self._rows.cell(cell, phase)

    def _cell_done(self, cell: str) -> bool:
        search = self._cell_rows(cell, "search")
        if len(search) < self.spec.cell_search_trials:
            return False
        if search and all(r["status"] == "error" for r in search):
            return True
        return len(self._cell_rows(cell, "final")) >= self.spec.final_seeds

    def _announce(self, cell: str) -> None:
        if self.spec.search_trials == 0:  # no search: the one configuration's seeds
            self.progress.say(f"{cell:<24} fixed configuration -> "
                              f"{cell_summary(self._cell_rows(cell, 'final'))}")
            return
        search = self._cell_rows(cell, "search")
        scored = [r for r in search if isinstance(r.get("val_macro_f1"), float)]
        if not scored:
            self.progress.say(f"{cell:<24} every search trial failed; see trials.parquet")
            return
        best = max(scored, key=lambda r: r.get("val_macro_f1") or -1.0)
        # A setting the chosen run never read (a scratch run's aug_factor) is no part of it.
        off = inapplicable_settings(best)
        names = tuple(n for n in self.searched.get(cell, ()) if n not in off)
        self.progress.say(f"{cell:<24} best {format_params(best, names)} "
                          f"-> {cell_summary(self._cell_rows(cell, 'final'))}")

    def _remaining(self) -> int:
        """Trials still to run (running ones included): the unfinished cells' searches and
        final seeds."""
        spec = self.spec
        return sum(max(0, spec.cell_search_trials - self._rows.count(cell, "search"))
                   + max(0, spec.final_seeds - self._rows.count(cell, "final"))
                   for cell in self.cells if cell not in self._announced)

    def _status(self, force: bool = False) -> None:
        self.progress.status(
            search=self._rows.phases["search"], final=self._rows.phases["final"],
            running=len(self._running), cells_done=len(self._announced),
            failed=self._rows.failed, remaining=self._remaining(), force=force)

    def flush(self) -> None:
        """Wait until every row handed to the writer is on disk (raising a failed write)."""
        self._writer.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()
        self.progress.end()


def _write_row(results: str, row: dict[str, Any], epochs: list[dict[str, Any]],
               drop: tuple[str | None, Path | None] | None,
               model: tuple[str | None, str, int] | None = None) -> None:
    if model is not None:
        # Before the row: a final row means its model is in place (a replay trains nothing).
        source = tune_model_files(model[0])
        if source is not None:
            place_model(results, model[1], model[2], source)
    ResultsStore(Path(results)).write_trial(row, epochs)
    if drop is not None:
        _drop_checkpoints(*drop)
