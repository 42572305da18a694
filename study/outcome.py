"""Where a session's time went, and whether the study is done.

The wall time splits into data, Ray start-up, pretraining and the Tune run; inside the Tune run,
time inside training loops against per-trial overhead. Utilisation is slot-seconds inside
training loops (pretraining's included) over slot-seconds held (wall time x concurrent trial
slots); ``held_device_seconds`` says what the slots held in GPU- or CPU-seconds.
"""

from __future__ import annotations

import pandas as pd

from study.results import ResultsStore, failed_trials
from study.spec import StudySpec
from study.study_record import Session, StudyRecord

__all__ = ["COMPLETE", "COMPLETE_WITH_ERRORS", "FAILED", "INTERRUPTED", "account",
           "failed_cells", "failure_summary", "study_status"]


def account(spec: StudySpec, record: StudyRecord, session: Session, store: ResultsStore,
            slots: int) -> None:
    """Fill ``session``'s trial figures and utilisation, and ``record``'s total wall time."""
    assert session.wall_seconds is not None and session.tune_seconds is not None
    trials = store.trials()
    for column in ("finished_at", "status", "train_loop_seconds", "wall_seconds"):
        if column not in trials:  # rows of trials that all failed before reporting
            trials[column] = None
    started = pd.Timestamp(session.started_at)
    finished = pd.to_datetime(trials["finished_at"], utc=True, format="mixed") \
        if len(trials) else pd.Series([], dtype="datetime64[ns, UTC]")
    mine = trials[finished >= started] if len(trials) else trials
    loop = float(pd.to_numeric(mine["train_loop_seconds"]).fillna(0).sum()) if len(mine) else 0.0
    trained = int((mine["status"] != "error").sum()) if len(mine) else 0
    session.trials_run = len(mine)
    session.train_loop_slot_seconds = loop
    # Slot time of the Tune run outside training loops, per trial: what a trial costs the
    # study, idle slots included (a cell's finals wait for its search).
    session.per_trial_overhead_seconds = ((session.tune_seconds * slots - loop) / trained
                                          if trained else None)
    # Inside a trial, outside its loops: start-up, data, model, reports (Tune's time_total_s).
    if len(mine):
        inside = (pd.to_numeric(mine["wall_seconds"])
                  - pd.to_numeric(mine["train_loop_seconds"])).dropna()
        session.trial_overhead_seconds = float(inside.mean()) if len(inside) else None
    in_loops = loop + (session.pretrain_loop_slot_seconds or 0.0)
    session.inside_training_loops_fraction = in_loops / (session.wall_seconds * slots)
    resources = spec.resources
    device, share = (("GPU", resources.gpus_per_trial) if resources.gpus_per_trial > 0
                     else ("CPU", resources.cpus_per_trial))
    if resources.mode == "train":
        share *= resources.workers_per_trial
    session.held_device = device
    session.held_device_seconds = session.wall_seconds * slots * share
    record.wall_seconds = sum(s.wall_seconds or 0.0 for s in record.sessions)


COMPLETE = "complete"
COMPLETE_WITH_ERRORS = "complete with errors"
INTERRUPTED = "interrupted"
FAILED = "failed"


def study_status(spec: StudySpec, store: ResultsStore, interrupted: bool) -> str:
    """``complete`` when every cell's search trials have rows, nothing was cut off and no
    trial failed; ``complete with errors`` when it ran to its end with failed trials (rows of
    status ``error``: ``failed_cells`` names them); ``failed`` when it ran to its end and every
    trial failed; else ``interrupted``."""
    trials = store.trials()
    expected = len(spec.cells) * spec.cell_search_trials
    search = int((trials["phase"] == "search").sum()) if len(trials) else 0
    if interrupted or search < expected:
        return INTERRUPTED
    if len(trials) and "status" in trials and (trials["status"] == "error").all():
        return FAILED
    if failed_cells(store):
        return COMPLETE_WITH_ERRORS
    return COMPLETE


def failure_summary(store: ResultsStore) -> str:
    """The failed trials' errors, per cell: how many, and the last line of the first error."""
    lines = [f"{cell} ({n} trial(s)): {(error or 'no error text recorded')[:300]}"
             for cell, (n, error) in failed_trials(store.trials()).items()]
    return "every trial failed:\n  " + "\n  ".join(lines) if lines else ""


def failed_cells(store: ResultsStore) -> dict[str, int]:
    """Cells with failed trials: cell -> how many failed."""
    return {cell: n for cell, (n, _) in failed_trials(store.trials()).items()}
