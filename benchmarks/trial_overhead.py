"""Per-trial overhead of a study: bare Tune trials against the study's own, same run.

One local Ray (``--cpus`` CPUs, started here) runs three things in turn:

1. baseline: a bare Ray Tune run of ``--trials`` trivial function trials (each reports three
   times, no torch work) with ``reuse_actors=True``, one CPU a trial, as many at once as there
   are CPUs. Its overhead is the slot time a trial holds: Tune wall time x slots / trials.
2. inline: ``run_study`` on a tiny generated tree, one cell (WBC_100 x scratch, so no CAM16
   pretraining), ``--trials`` search trials and one final seed of one epoch at 32 px, trials
   training in their own reused process (``resources.execution = "inline"``).
3. train: the same study with ``resources.execution = "train"`` and one worker a trial, each
   trial driving a Ray Train ``TorchTrainer`` (``--train-trials`` search trials).

For the studies the figures are the ones ``study.json`` records (``per_trial_overhead_seconds``:
slot time in the Tune run outside training loops, per trial; ``inside_training_loops_fraction``)
and, from ``trials.parquet``, the mean ``setup_seconds`` and ``train_loop_seconds`` of a trial.
It prints a table, the ratios to the baseline, and one line ``per-trial overhead:
baseline=<x>s inline=<y>s train=<z>s`` with whether inline meets the CPU target (< 5 s a trial).
Everything runs on generated data in a temporary folder (the decode cache too): a synthetic
tree at scale 0.01 of 40 px images (85 WBC_100 training images, 18 validation ones).

The trials import ``wbc`` and ``study`` from the installed package; the baseline's trivial
trial is defined here, in ``__main__``, so that Ray ships it by value and its workers need
nothing from ``benchmarks/``.

    python benchmarks/trial_overhead.py --trials 12 --train-trials 3
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import harness

CPU_TARGET_SECONDS = 5.0  # the project's per-trial overhead target for inline trials on CPU
REPORTS = 3  # reports per baseline trial
TREE_SCALE = 0.01  # of the report's counts: 85 training images, about the size of a unit test's
TREE_IMAGE_SIZE = 40  # px: the generated files; the study trains at 32 px


def trivial_trial(config: dict[str, Any]) -> None:
    """A Tune trial that does nothing but report."""
    from ray import tune

    for step in range(REPORTS):
        tune.report({"step": step, "score": float(step)})


def baseline(trials: int, cpus: int, storage: Path) -> dict[str, Any]:
    """Bare Tune: ``trials`` trivial trials, one CPU each, actors reused."""
    from ray import tune

    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(trivial_trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=cpus,
                                    reuse_actors=True, metric="score", mode="max"),
        run_config=tune.RunConfig(name="baseline", storage_path=str(storage), verbose=0),
    )
    grid = tuner.fit()
    took = time.perf_counter() - started
    if grid.errors:
        raise RuntimeError(f"baseline: {len(grid.errors)} trial(s) failed: {grid.errors[0]}")
    lived = [float((grid[i].metrics or {}).get("time_total_s", "nan")) for i in range(len(grid))]
    return {"key": "baseline", "shape": "bare Tune (trivial)", "trials": len(grid),
            "slots": cpus, "tune_seconds": took, "wall_seconds": took,
            "overhead": took * cpus / trials, "inside_fraction": 0.0,
            "trial_seconds": sum(lived) / len(lived), "setup_seconds": None,
            "loop_seconds": 0.0}


def study(key: str, shape: str, tree: Path, results: Path, cache: Path, *, trials: int,
          resources: dict[str, Any]) -> dict[str, Any]:
    """One cell of the study on ``tree``; the session's figures and the trials' means."""
    import pandas as pd

    from study.runner import run_study
    from study.spec import StudySpec

    spec = StudySpec.from_dict({
        **StudySpec().to_dict(), "name": "overhead", "data": str(tree), "image_size": 32,
        "subsets": ["WBC_100"], "strategies": ["scratch"], "search_trials": trials,
        "final_seeds": 1, "epochs": 1, "grace_epochs": 1,
        "train": {"batch_size": 16, "bn_recalibrate": 32, "min_epoch_images": 32},
        "resources": resources})
    record = run_study(spec, results, quiet=True, cache_dir=str(cache), say=lambda _: None)
    session = record["sessions"][-1]
    rows = pd.read_parquet(results / "trials.parquet")
    errors = int((rows["status"] == "error").sum())
    if record["status"] != "complete" or errors:
        first = rows.loc[rows["status"] == "error", "error"].head(1).tolist()
        raise RuntimeError(f"{shape}: study {record['status']}, {errors} trial(s) failed"
                           + (f"; the first: {str(first[0])[-2000:]}" if first else ""))
    setup = rows["setup_seconds"].mean() if "setup_seconds" in rows else float("nan")
    return {"key": key, "shape": shape, "trials": int(session["trials_run"]),
            "tune_seconds": float(session["tune_seconds"]),
            "wall_seconds": float(session["wall_seconds"]), "slots": int(session["slots"]),
            "overhead": session["per_trial_overhead_seconds"],
            "inside_fraction": float(session["inside_training_loops_fraction"]),
            "trial_seconds": float(rows["wall_seconds"].mean()), "setup_seconds": float(setup),
            "loop_seconds": float(rows["train_loop_seconds"].mean())}


def fmt(value: float | None, width: int = 0, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--trials", type=int, default=12,
                        help="baseline trials and inline search trials (plus one final seed)")
    parser.add_argument("--train-trials", type=int, default=3,
                        help="search trials of the execution=train study (plus one final seed)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    parser.add_argument("--skip-train", action="store_true",
                        help="leave out the execution=train study")
    args = parser.parse_args()
    if args.trials < 1 or args.train_trials < 1 or args.cpus < 1:
        parser.error("--trials, --train-trials and --cpus must be at least 1")

    harness.header(f"{args.cpus} CPUs given to Ray", ray=True)
    with harness.workspace(scale=TREE_SCALE, image_size=TREE_IMAGE_SIZE,
                           prefix="trial-overhead-") as work:
        os.environ["WBC_CACHE_DIR"] = str(work.cache)  # never the user's cache, here or in workers
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # as the study runs Tune
        rows: list[dict[str, Any]] = []
        # With the dashboard, as a study has it: without it, placement groups of trials that
        # Tune ended early can stay reserved, and the next study's trials never start.
        with harness.local_ray(args.cpus) as started:
            print(f"ray started in {started:.1f} s", flush=True)
            rows.append(baseline(args.trials, args.cpus, work.folder / "baseline"))
            print(f"baseline done: {rows[-1]['trials']} trials", flush=True)
            rows.append(study("inline", "study, inline", work.root, work.folder / "inline",
                              work.cache, trials=args.trials,
                              resources={"execution": "inline", "cpus_per_trial": 1.0}))
            print(f"inline study done: {rows[-1]['trials']} trials", flush=True)
            if not args.skip_train:
                rows.append(study("train", "study, train (1 worker)", work.root,
                                  work.folder / "train", work.cache, trials=args.train_trials,
                                  resources={"execution": "train", "workers_per_trial": 1,
                                             "cpus_per_trial": 1.0}))
                print(f"train study done: {rows[-1]['trials']} trials", flush=True)

    print()
    print(f"{'shape':24s} {'trials':>6s} {'slots':>5s} {'tune s':>7s} {'wall s':>7s} "
          f"{'overhead s':>10s} {'in loops':>8s} {'trial s':>7s} {'setup s':>7s} {'loop s':>7s}")
    for row in rows:
        print(f"{row['shape']:24s} {row['trials']:6d} {row['slots']:5d} "
              f"{row['tune_seconds']:7.1f} {row['wall_seconds']:7.1f} "
              f"{fmt(row['overhead'], 10)} {100 * row['inside_fraction']:7.1f}% "
              f"{fmt(row['trial_seconds'], 7)} {fmt(row['setup_seconds'], 7)} "
              f"{fmt(row['loop_seconds'], 7)}")
    print("overhead s: slot-seconds of the Tune run outside training loops, per trial (idle "
          "slots included); in loops: loop slot-seconds over wall s x slots; trial s, setup s, "
          "loop s: means per trial (Tune's time_total_s, start-up inside the trial, loops); "
          "wall s: the whole study session")
    overhead = {row["key"]: row["overhead"] for row in rows}
    base = overhead["baseline"]
    for key in ("inline", "train"):
        value = overhead.get(key)
        if value is not None:
            print(f"{key} overhead / baseline: {value / base:.1f}x "
                  f"({value - base:+.2f} s a trial)")
    inline = overhead.get("inline")
    train = "skipped" if args.skip_train else f"{fmt(overhead.get('train'))}s"
    verdict = "meets" if inline is not None and inline < CPU_TARGET_SECONDS else "misses"
    print(f"per-trial overhead: baseline={base:.2f}s inline={fmt(inline)}s train={train}; "
          f"inline {verdict} the CPU target (< {CPU_TARGET_SECONDS:g} s)")


if __name__ == "__main__":
    main()
