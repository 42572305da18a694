"""What one metrics report costs: a Tune function trial against a Ray Train run, same run.

A study reports every ``report_every`` epochs (``best_val_macro_f1`` for ASHA, the epoch row for
the Parquet files). Inline trials report with ``tune.report`` in the trial's own process; a
Ray Train trial reports with ``ray.train.report`` in its worker, which reaches Tune through the
trainer's controller and ``TuneReportCallback``. This times both on a local Ray: each run makes
``--reports`` reports with no work between them, and again with one report; the difference over
``reports - 1`` is the cost of one report, measured by the wall time of the whole run (what the
study pays), not by the call alone. The baseline is the Tune function trial.

    python benchmarks/report_overhead.py --reports 40
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


from study.train import POLL_INTERVAL_ENV, POLL_INTERVAL_SECONDS  # noqa: E402


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
    started = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - started
    if grid.errors:
        raise RuntimeError(f"{kind} run failed: {grid.errors[0]}")
    last = grid[0].metrics
    if last.get("epoch") != reports:
        raise RuntimeError(f"{kind}: expected {reports} reports to arrive, the last said "
                           f"epoch {last.get('epoch')}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    import logging

    import ray

    from wbc.hardware import describe

    ray.init(num_cpus=args.cpus, logging_level=logging.WARNING, log_to_driver=False)
    print(f"{describe()}, Ray {ray.__version__}, {args.cpus} CPUs", flush=True)
    figures: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, kind, poll in (("tune function trial", "tune", ""),
                                      ("Ray Train, Ray's poll", "train", ""),
                                      (f"Ray Train, {POLL_INTERVAL_SECONDS} s poll", "train",
                                       POLL_INTERVAL_SECONDS)):
                one = run(kind, 1, Path(tmp), poll)
                many = run(kind, args.reports, Path(tmp), poll)
                figures[label] = (many - one) / (args.reports - 1)
                print(f"{label:26s}: 1 report {one:6.2f} s, {args.reports} reports {many:6.2f} "
                      f"s -> {1000 * figures[label]:7.1f} ms a report", flush=True)
    finally:
        ray.shutdown()
    print("per-report cost: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in figures.items()))


if __name__ == "__main__":
    main()
