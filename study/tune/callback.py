"""The driver's side of a study: every finished trial becomes Parquet rows, and a person can
follow along.

``StudyCallback`` runs in the Tune driver. It keeps each running trial's epoch reports and its
resolved configuration; when a trial ends (completed, stopped by ASHA, or failed after its
retries) it writes the trial's row and its epoch rows at once (``ResultsStore.write_trial``,
rows built by ``study.results.rows``), so results land as trials finish. ``Progress`` prints a
status line and one line per cell when the cell's final seeds are all in.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.results import ResultsStore, epoch_row, resolved_config, trial_row
from study.space import cell_space
from study.spec import StudySpec
from study.tune.progress import Progress, cell_summary, format_params
from study.tune.search import cell_name

__all__ = ["StudyCallback"]


def _error_text(trial: Any) -> str:
    """The trial's error trace: Tune writes it locally first, to storage later."""
    local = trial.error_file
    if local and Path(local).exists():
        return Path(local).read_text(errors="replace")
    error = trial.get_error()
    return str(error) if error is not None else "failed (Tune recorded no error text)"


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
        self._rows: dict[str, dict[str, Any]] = {}
        self._running: set[str] = set()  # as of Tune's last step
        self._announced: set[str] = set()
        self.progress = Progress(total_search=self.spec.search_trials * len(self.cells),
                                 total_final=self.spec.final_seeds * len(self.cells),
                                 cells=len(self.cells), quiet=self.quiet)

    # Tune pickles its callbacks with the experiment and restores them on ``Tuner.restore``:
    # start from what is on disk, not from what this object held when it was pickled.
    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self._reset()
        self._rows = ResultsStore(Path(self.results)).trial_rows()
        self._announced = {c for c in self.cells if self._cell_done(c)}

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

    def _record(self, trial: Any, final: dict[str, Any] | None, *, status: str,
                error: str | None = None) -> dict[str, Any]:
        epochs = [self._epochs[trial.trial_id][k] for k in sorted(self._epochs[trial.trial_id])]
        last = getattr(trial, "last_result", None)
        settings = self._settings.get(trial.trial_id) or resolved_config(last)
        row = trial_row(self.spec.name, trial.config, settings, epochs, final, status=status,
                        tune_trial_id=trial.trial_id, error=error, last_report=last)
        ResultsStore(Path(self.results)).write_trial(row, epochs)
        return row

    def _finish(self, trial: Any, row: dict[str, Any] | None) -> None:
        self._running.discard(trial.trial_id)
        self._epochs.pop(trial.trial_id, None)
        self._settings.pop(trial.trial_id, None)
        if row is not None:
            self._rows[row["trial_id"]] = row
            if row["status"] == "error":
                self.progress.say(f"trial {row['trial_id']} failed: "
                                  f"{(row.get('error') or '').strip().splitlines()[-1:]}")
        cell = trial.config.get("cell")
        if cell and cell not in self._announced and self._cell_done(cell):
            self._announced.add(cell)
            self._announce(cell)
        self._status(force=row is not None and row["phase"] == "final")

    def _cell_rows(self, cell: str, phase: str) -> list[dict[str, Any]]:
        return [r for r in self._rows.values() if r["cell"] == cell and r["phase"] == phase]

    def _cell_done(self, cell: str) -> bool:
        search = self._cell_rows(cell, "search")
        if len(search) < self.spec.search_trials:
            return False
        if all(r["status"] == "error" for r in search):
            return True
        return len(self._cell_rows(cell, "final")) >= self.spec.final_seeds

    def _announce(self, cell: str) -> None:
        search = self._cell_rows(cell, "search")
        scored = [r for r in search if isinstance(r.get("val_macro_f1"), float)]
        if not scored:
            self.progress.say(f"{cell:<24} every search trial failed; see trials.parquet")
            return
        best = max(scored, key=lambda r: r.get("val_macro_f1") or -1.0)
        self.progress.say(f"{cell:<24} best {format_params(best, self.searched.get(cell, ()))} "
                          f"-> {cell_summary(self._cell_rows(cell, 'final'))}")

    def _status(self, force: bool = False) -> None:
        counts = {p: sum(1 for r in self._rows.values() if r["phase"] == p)
                  for p in ("search", "final")}
        self.progress.status(
            search=counts["search"], final=counts["final"], running=len(self._running),
            cells_done=len(self._announced),
            failed=sum(1 for r in self._rows.values() if r["status"] == "error"), force=force)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.progress.end()
