"""What one metrics report costs: a Tune function trial against a Ray Train run, same run.

A study reports every ``report_every`` epochs (``best_val_macro_f1`` for ASHA, the epoch row for
the Parquet files). Inline trials report with ``tune.report`` in the trial's own process; a
Ray Train trial reports with ``ray.train.report`` in its worker, which reaches Tune through the
trainer's controller and ``TuneReportCallback``. This times both on a local Ray: each run makes
``--reports`` reports with no work between them, and again with one report; the difference over
``reports - 1`` is the cost of one report, measured by the wall time of the whole run (what the
study pays), not by the call alone. The baseline is the Tune function trial. Ray Train runs
twice: with Ray's own controller poll, and with the study's (``study.train.trainer``'s
``POLL_INTERVAL_SECONDS`` in ``POLL_INTERVAL_ENV``).

It prints a line per kind (the run with one report, the run with ``--reports``, the cost of one
report), then ``per-report cost: <kind> <ms> ms, ...``. Nothing trains: the trials only report,
so no run goes through ``wbc.training.run``. The trials are defined here, in ``__main__``, so that
Ray ships them by value and its workers need nothing from ``benchmarks/``.

    python benchmarks/report_overhead.py --reports 40
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

from study.train.trainer import POLL_INTERVAL_ENV, POLL_INTERVAL_SECONDS


def tune_trial(config: dict[str, Any]) -> None:
    from ray import tune

    for step in range(config["reports"]):
        tune.report({"epoch": step + 1, "score": float(step)})


def train_loop(config: dict[str, Any]) -> None:
    import ray.train

    for step in range(config["reports"]):
        ray.train.report({"epoch": step + 1, "score": float(step)})


def train_trial(config: dict[str, Any]) -> None:
    """A Tune trial that drives a one-worker TorchTrainer, as the study's train mode does."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    if config["poll"]:
        os.environ[POLL_INTERVAL_ENV] = config["poll"]  # read when the controller starts
    else:
        os.environ.pop(POLL_INTERVAL_ENV, None)  # Ray's default
    trainer = TorchTrainer(
        train_loop, train_loop_config={"reports": config["reports"]},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"reports-{config['reports']}-{time.time_ns()}",
                             storage_path=config["storage"], callbacks=[TuneReportCallback()]))
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def run(kind: str, reports: int, storage: Path, poll: str = "") -> float:
    """Wall seconds of one Tune run of one trial making ``reports`` reports."""
    from ray import tune

    trainable: Any
    if kind == "tune":
        trainable = tune.with_resources(tune_trial, {"cpu": 1})
    else:
        trainable = tune.with_resources(train_trial, {"cpu": 0, "memory": 1 << 20})
    tuner = tune.Tuner(
        trainable, param_space={"reports": reports, "storage": str(storage), "poll": poll},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name=f"{kind}-{reports}-{time.time_ns()}",
                                  storage_path=str(storage), verbose=0))
    with harness.Timer() as timer:
        grid = tuner.fit()
    if grid.errors:
        raise RuntimeError(f"{kind} run failed: {grid.errors[0]}")
    last = grid[0].metrics or {}
    if last.get("epoch") != reports:
        raise RuntimeError(f"{kind}: expected {reports} reports to arrive, the last said "
                           f"epoch {last.get('epoch')}")
    return timer.seconds


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--reports", type=int, default=40,
                        help="reports of the long run (at least 2)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    args = parser.parse_args()
    if args.reports < 2 or args.cpus < 1:
        parser.error("--reports must be at least 2 and --cpus at least 1")
    harness.header(f"{args.cpus} CPUs given to Ray", ray=True)
    figures: dict[str, float] = {}
    with harness.local_ray(args.cpus), tempfile.TemporaryDirectory() as tmp:
        for label, kind, poll in (("tune function trial", "tune", ""),
                                  ("Ray Train, Ray's poll", "train", ""),
                                  (f"Ray Train, {POLL_INTERVAL_SECONDS} s poll", "train",
                                   POLL_INTERVAL_SECONDS)):
            one = run(kind, 1, Path(tmp), poll)
            many = run(kind, args.reports, Path(tmp), poll)
            figures[label] = (many - one) / (args.reports - 1)
            print(f"{label:26s}: 1 report {one:6.2f} s, {args.reports} reports {many:6.2f} "
                  f"s -> {1000 * figures[label]:7.1f} ms a report", flush=True)
    print("per-report cost: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in figures.items()))


if __name__ == "__main__":
    main()
