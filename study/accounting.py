"""Where a session's time went, and whether the study is done.

The wall time splits into data, Ray start-up, pretraining and the Tune run; inside the Tune run,
time inside training loops against per-trial overhead. Utilisation is slot-seconds inside
training loops (pretraining's included) over slot-seconds held (wall time x concurrent trial
slots); ``held_device_seconds`` says what the slots held in GPU- or CPU-seconds.
"""

from __future__ import annotations

import pandas as pd

from study.record import Session, StudyRecord
from study.results import ResultsStore
from study.spec import StudySpec

__all__ = ["account", "study_status"]


def account(spec: StudySpec, record: StudyRecord, session: Session, store: ResultsStore,
            slots: int) -> None:
    """Fill ``session``'s trial figures and utilisation, and ``record``'s total wall time."""
    assert session.wall_seconds is not None and session.tune_seconds is not None
    trials = store.trials()
    started = pd.Timestamp(session.started_at)
    finished = pd.to_datetime(trials["finished_at"], utc=True, format="mixed") \
        if len(trials) else pd.Series([], dtype="datetime64[ns, UTC]")
    mine = trials[finished >= started] if len(trials) else trials
    loop = float(mine["train_loop_seconds"].fillna(0).sum()) if len(mine) else 0.0
    trained = int((mine["status"] != "error").sum()) if len(mine) else 0
    session.trials_run = len(mine)
    session.train_loop_slot_seconds = loop
    # Slot time of the Tune run outside training loops, per trial: what a trial costs the
    # study, idle slots included (a cell's finals wait for its search).
    session.per_trial_overhead_seconds = ((session.tune_seconds * slots - loop) / trained
                                          if trained else None)
    # Inside a trial, outside its loops: start-up, data, model, reports (Tune's time_total_s).
    if len(mine) and "wall_seconds" in mine:
        inside = (mine["wall_seconds"] - mine["train_loop_seconds"]).dropna()
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


def study_status(spec: StudySpec, store: ResultsStore, interrupted: bool) -> str:
    """``complete`` when every cell's search trials have rows and nothing was cut off."""
    trials = store.trials()
    expected = len(spec.cells) * spec.search_trials
    search = int((trials["phase"] == "search").sum()) if len(trials) else 0
    if interrupted or search < expected:
        return "interrupted"
    return "complete"
