"""The study's one Tune run: built (or restored) here, run, and reconciled with the rows.

``run_experiment`` builds the ``Tuner`` (per-cell Optuna searches and ASHA behind one searcher
and one scheduler, the study's callback, the trainable with its resources) or restores it from
the results folder, and runs it. ``reconcile`` writes the rows of ended trials the callback could
not write (a crash between the end of a trial and its row), from Tune's own record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from study.results import ResultsStore, curve, resolved_config, trial_row
from study.results.kept import trial_dir_name
from study.spec import StudySpec
from study.tune.callback import StudyCallback
from study.tune.search import CellScheduler, CellSearcher
from study.tune.trial import METRIC, MODE, StudyContext, with_resources

__all__ = ["TUNE_DIR", "ended", "reconcile", "run_experiment"]

TUNE_DIR = "tune"  # the Tune experiment inside the results folder


def _new_tuner(context: StudyContext, trainable: Any, slots: int, quiet: bool) -> Any:
    from ray import tune

    spec = context.spec
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=-1, max_concurrent_trials=slots,
            search_alg=CellSearcher(spec, metric=METRIC, mode=MODE, results=context.results),
            scheduler=CellScheduler(spec, metric=METRIC, mode=MODE),
            # Inline trials reuse their process (torch imported, cache mapped once); a Ray
            # Train driver function cannot be reset, so it is not reused.
            reuse_actors=spec.resources.mode == "inline",
            trial_dirname_creator=lambda trial: trial_dir_name(trial.config["trial_key"]),
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=context.results, verbose=0,
            callbacks=[StudyCallback(spec, context.results, quiet=quiet)],
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def run_experiment(context: StudyContext, slots: int, *, resume: bool, quiet: bool
                   ) -> tuple[Any, bool]:
    """Run (or continue) the study's Tune experiment: (Tune's result grid, interrupted)."""
    import optuna
    from ray import tune

    trainable = with_resources(context)
    experiment = Path(context.results) / TUNE_DIR
    # Tune's own status tables and banners: this study prints its own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A trial that keeps its model checkpoints once, at its end, and Tune then snapshots the
    # experiment (num_to_keep=1): right for a restore, and no bottleneck at a trial's end, but
    # Tune warns of it when trials end close together.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
    else:
        tuner = _new_tuner(context, trainable, slots, quiet)
    grid = tuner.fit()
    unfinished = [grid[i] for i in range(len(grid))
                  if grid[i].error is None and not ended(grid[i])]
    return grid, bool(unfinished)


def ended(result: Any) -> bool:
    """Whether a Tune result is of a trial that ran to its end (or was replayed)."""
    metrics = result.metrics or {}
    return bool(metrics.get("done") or "test_accuracy" in metrics or metrics.get("replayed"))


def reconcile(spec: StudySpec, grid: Any, store: ResultsStore) -> None:
    """Rows for ended trials the callback could not write, built from Tune's record."""
    rows = store.trial_rows()
    for index in range(len(grid)):
        result = grid[index]
        config = result.config or {}
        key = config.get("trial_key")
        if key is None or key in rows or (result.error is None and not ended(result)):
            continue
        epochs = curve(result.metrics_dataframe)
        metrics = result.metrics or {}
        final = metrics if "test_accuracy" in metrics else None
        status = "error" if result.error is not None else ("completed" if final else "stopped")
        store.write_trial(trial_row(spec.name, config, resolved_config(metrics), epochs, final,
                                    status=status,
                                    tune_trial_id=str(metrics.get("trial_id", "")),
                                    error=str(result.error) if result.error else None,
                                    last_report=metrics), epochs)
