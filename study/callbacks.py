"""The driver's side of a study: every finished trial becomes Parquet rows, and a person can
follow along.

``StudyCallback`` runs in the Tune driver. It keeps each running trial's epoch reports; when a
trial ends (completed, stopped by ASHA, or failed after its retries) it writes the trial's row
and its epoch rows at once (``ResultsStore.write_trial``), so results land as trials finish. It
prints a status line (redrawn in place on a terminal, every 30 s otherwise) and one line per cell
when the cell's final seeds are all in.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.results import ResultsStore
from study.trial import scalars, trial_config
from wbc.metrics import mean_interval

__all__ = ["StudyCallback", "cell_summary", "trial_row"]

# Final-record fields copied into a trial's row (hyperparameters come from the config instead:
# the last report's ``lr`` is the schedule's value at the last step, not the searched one).
_RECORD_FIELDS = ("best_epoch", "train_images", "selection_split", "reporting_split", "notes",
                  "excluded_files", "data_fingerprint", "pretrain_key", "device", "hostname",
                  "world_size", "setup_seconds", "resumed_from_epoch")
_EPOCH_DROP = ("notes", "data_fingerprint", "pretrain_key", "device", "hostname", "pid",
               "selection_split", "reporting_split", "excluded_files", "world_size",
               "setup_seconds", "resumed_from_epoch", "replayed", "node_ip", "date",
               "timestamp", "trial_id", "experiment_tag", "done", "training_iteration",
               "time_this_iter_s", "time_total_s", "time_since_restore",
               "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint")


def _epoch_row(result: dict[str, Any]) -> dict[str, Any]:
    """An ``epochs.parquet`` row from one report (the last one's own epoch figures are under
    ``epoch_metrics``, nested, or flattened to ``epoch_metrics/...`` in Tune's CSV)."""
    own = result.get("epoch_metrics")
    if not isinstance(own, dict):
        own = {k.split("/", 1)[1]: v for k, v in result.items()
               if k.startswith("epoch_metrics/")}
    source = own or result
    row = {k: v for k, v in scalars(source).items()
           if k not in _EPOCH_DROP and not k.startswith("test_")}
    row["epoch"] = int(result["epoch"])
    if "time_total_s" in result:
        row["trial_seconds"] = float(result["time_total_s"])
    return row


def _error_text(trial: Any) -> str:
    """The trial's error trace: Tune writes it locally first, to storage later."""
    local = trial.error_file
    if local and Path(local).exists():
        return Path(local).read_text(errors="replace")
    error = trial.get_error()
    return str(error) if error is not None else "failed (Tune recorded no error text)"


def trial_row(study: str, config: dict[str, Any], settings: dict[str, Any],
              epochs: list[dict[str, Any]], final: dict[str, Any] | None, *, status: str,
              tune_trial_id: str, error: str | None = None,
              last_report: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``trials.parquet`` row from a trial's config, epoch rows and final report.

    ``last_report``: the trial's last report as Tune holds it, for a trial stopped early (its
    record fields, such as ``pretrain_key``, are not kept in the epoch rows)."""
    row: dict[str, Any] = {
        "study": study, "cell": config["cell"], "subset": config["subset"],
        "strategy": config["strategy"], "phase": config["phase"],
        "trial_id": config["trial_key"], "tune_trial_id": tune_trial_id,
        "seed": int(config["seed"]), "status": status, "error": error,
        **{k: v for k, v in settings.items() if k not in ("subset", "strategy", "seed")},
        "epochs_run": max((e["epoch"] for e in epochs), default=0),
        "train_loop_seconds": float(sum(e.get("loop_seconds", 0.0) for e in epochs)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    source = final or {}
    if final is None and epochs:  # stopped early: the best epoch's selection figures
        last = epochs[-1]
        best = next((e for e in epochs if e["epoch"] == last.get("best_epoch")), last)
        kept = {k: v for k, v in (last_report or {}).items() if k in _RECORD_FIELDS}
        source = {**kept, **last, **{k: v for k, v in best.items() if k.startswith("val_")},
                  "train_images": last.get("train_images")}
    for key, value in source.items():
        wanted = key.startswith(("val_", "test_")) or key in _RECORD_FIELDS
        if wanted and (isinstance(value, bool | int | float | str | list) or value is None):
            row[key] = value
    if final is not None:
        row["fit_seconds"] = final.get("wall_seconds")
        row["wall_seconds"] = final.get("time_total_s", final.get("wall_seconds"))
    elif epochs:
        row["wall_seconds"] = epochs[-1].get("trial_seconds")
    return row


def cell_summary(rows: list[dict[str, Any]]) -> str:
    """``test accuracy 93.1% [91.0, 95.2], macro-F1 0.874 (3 seeds)`` for a cell's final rows."""
    done = [r for r in rows if r.get("status") == "completed"]
    if not done:
        return "no final run completed"

    def interval(key: str, percent: bool) -> str:
        mean, low, high = mean_interval([float(r.get(key) or math.nan) for r in done])
        low, high = max(low, 0.0), min(high, 1.0)  # a proportion's interval stays in [0, 1]
        scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", 3)
        text = f"{scale * mean:.{digits}f}{unit}"
        if math.isfinite(low):
            text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
        return text

    return (f"test accuracy {interval('test_accuracy', True)}, macro-F1 "
            f"{interval('test_macro_f1', False)} ({len(done)} seed{'s' * (len(done) != 1)})")


def _params(row: dict[str, Any], names: tuple[str, ...]) -> str:
    parts = []
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


class StudyCallback(Callback):
    """Rows for every finished trial, a status line, and a line per finished cell."""

    def __init__(self, study: str, results: str, *, base: dict[str, Any], redraw_subsets: bool,
                 checkpoint_every: int, cells: list[str], search_trials: int,
                 final_seeds: int, searched: dict[str, tuple[str, ...]], quiet: bool = False
                 ) -> None:
        self.study = study
        self.results = results
        self.base = base
        self.redraw_subsets = redraw_subsets
        self.checkpoint_every = checkpoint_every
        self.cells = cells
        self.search_trials = search_trials
        self.final_seeds = final_seeds
        self.searched = searched
        self.quiet = quiet
        self._reset()

    def _reset(self) -> None:
        self._epochs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self._rows: dict[str, dict[str, Any]] = {}
        self._running: set[str] = set()  # as of Tune's last step
        self._announced: set[str] = set()
        self._started = time.monotonic()
        self._last_line = 0.0

    # Tune pickles its callbacks with the experiment and restores them on ``Tuner.restore``:
    # start from what is on disk, not from what this object held when it was pickled.
    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self._reset()
        self._rows = ResultsStore(Path(self.results)).trial_rows()
        self._announced = {c for c in self.cells if self._cell_done(c)}

    def _store(self) -> ResultsStore:
        return ResultsStore(Path(self.results))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._running = {t.trial_id for t in trials if t.status == "RUNNING"}
        self._status()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get("replayed") or "epoch" not in result:
            return
        epochs = self._epochs[trial.trial_id]
        for old in result.get("epoch_history") or ():
            epochs.setdefault(int(old["epoch"]), _epoch_row(old))
        epochs[int(result["epoch"])] = _epoch_row(result)
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
        config = trial.config
        try:
            settings = trial_config(self.base, config, redraw_subsets=self.redraw_subsets,
                                    checkpoint_every=self.checkpoint_every).to_flat()
        except ValueError:
            settings = {k: v for k, v in config.items()}
        epochs = [self._epochs[trial.trial_id][k] for k in sorted(self._epochs[trial.trial_id])]
        row = trial_row(self.study, config, settings, epochs, final, status=status,
                        tune_trial_id=trial.trial_id, error=error,
                        last_report=getattr(trial, "last_result", None))
        self._store().write_trial(row, epochs)
        return row

    def _finish(self, trial: Any, row: dict[str, Any] | None) -> None:
        self._running.discard(trial.trial_id)
        self._epochs.pop(trial.trial_id, None)
        if row is not None:
            self._rows[row["trial_id"]] = row
            if row["status"] == "error":
                self._say(f"trial {row['trial_id']} failed: "
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
        if len(search) < self.search_trials:
            return False
        if all(r["status"] == "error" for r in search):
            return True
        return len(self._cell_rows(cell, "final")) >= self.final_seeds

    def _announce(self, cell: str) -> None:
        search = self._cell_rows(cell, "search")
        scored = [r for r in search if isinstance(r.get("val_macro_f1"), float)]
        if not scored:
            self._say(f"{cell:<24} every search trial failed; see trials.parquet")
            return
        best = max(scored, key=lambda r: r.get("val_macro_f1") or -1.0)
        self._say(f"{cell:<24} best {_params(best, self.searched.get(cell, ()))} -> "
                  f"{cell_summary(self._cell_rows(cell, 'final'))}")

    def _status(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        tty = sys.stderr.isatty()
        if not force and now - self._last_line < (1.0 if tty else 30.0):
            return
        self._last_line = now
        counts = {p: sum(1 for r in self._rows.values() if r["phase"] == p)
                  for p in ("search", "final")}
        errors = sum(1 for r in self._rows.values() if r["status"] == "error")
        total_search = self.search_trials * len(self.cells)
        total_final = self.final_seeds * len(self.cells)
        elapsed = int(now - self._started)
        line = (f"[{elapsed // 60:02d}:{elapsed % 60:02d}] search {counts['search']}/"
                f"{total_search}  final {counts['final']}/{total_final}  "
                f"running {len(self._running)}  cells done {len(self._announced)}/"
                f"{len(self.cells)}" + (f"  failed {errors}" if errors else ""))
        if tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def _say(self, message: str) -> None:
        if self.quiet:
            return
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if not self.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")
