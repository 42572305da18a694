"""What a finished trial costs the study's driver, with 1,000, 5,000 and 10,000 trials before it.

The driver's side of a study (``study.tune.callback.StudyCallback``) runs in Tune's event loop:
it keeps each trial's epoch reports and, when the trial ends, writes its rows
(``study.results.ResultsStore``) and updates the status line. That cost must not grow with the
number of rows already written, or a long study slows down as it goes and Tune warns that
``on_trial_result`` is a bottleneck.

This feeds ``--trials`` finished trials through a real ``StudyCallback`` into a real results
folder: each trial reports ``--epochs`` epochs with figures of a realistic size (per-class
recall, a confusion matrix, the reporting split's predictions) and then completes. Trials go
in windows of ``--window``; after each window the writer is flushed, so a window's time is
everything the driver spent on its trials, the disk included. It prints, at 1,000, 5,000 and
10,000 trials, the milliseconds per trial in Tune's event loop (the callback's own calls) and
in all (event loop + row writes), then the ratio of the last to the first: flat means within 2x.

The baseline, measured in the same run on the same rows, is the store as it was before the
append-only row files: every finished trial rewrote both Parquet files with all earlier rows
(here: ``compact()`` after each write, which does exactly that), for ``--baseline-trials``.

    python benchmarks/driver_scaling.py                       # 10,000 trials, about 3 minutes
    python benchmarks/driver_scaling.py --trials 2000 --json out.json
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness

from study.results import ResultsStore
from study.spec import preset
from study.tune.callback import StudyCallback
from wbc.datasets.layout import WBC_CLASSES

CHECKPOINTS = (1000, 5000, 10000)


@dataclass
class FakeTrial:
    """What the callback reads of a Tune trial."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    status: str = "RUNNING"
    path: str | None = None
    error_file: str | None = None


def _report(epoch: int, epochs: int, rng: random.Random, config: dict[str, Any]
            ) -> dict[str, Any]:
    n = 100  # reporting images
    row: dict[str, Any] = {
        "epoch": epoch, "train_loss": rng.random(), "train_accuracy": rng.random(),
        "scheduled_lr": 0.01, "val_accuracy": rng.random(), "val_macro_f1": rng.random(),
        "val_balanced_accuracy": rng.random(), "best_epoch": epoch,
        "best_val_macro_f1": rng.random(), "loop_seconds": 1.0, "train_images": 800,
        "resolved_config": {"lr": config["lr"], "weight_decay": 1e-4, "imbalance": "weighted",
                            "aug_factor": 0, "epochs": epochs},
        "node_id": "0" * 56, "hostname": "bench", "data_fingerprint": "f" * 64,
        **{f"val_recall_{c}": rng.random() for c in WBC_CLASSES},
    }
    if epoch == epochs:
        row.update({
            "test_accuracy": rng.random(), "test_macro_f1": rng.random(),
            "test_balanced_accuracy": rng.random(), "time_total_s": 12.0, "wall_seconds": 11.0,
            **{f"test_recall_{c}": rng.random() for c in WBC_CLASSES},
            "test_confusion_matrix": [[rng.randrange(20) for _ in WBC_CLASSES]
                                      for _ in WBC_CLASSES],
            "test_predictions": [rng.randrange(5) for _ in range(n)],
            "test_targets": [i % 5 for i in range(n)],
        })
    return row


def _feed(callback: StudyCallback, cells: list[tuple[str, str]], start: int, count: int,
          epochs: int, rng: random.Random) -> float:
    """``count`` trials through the callback; the seconds spent in its calls."""
    spent = 0.0
    for index in range(start, start + count):
        subset, strategy = cells[index % len(cells)]
        cell = f"{subset}-{strategy}"
        config = {"cell": cell, "subset": subset, "strategy": strategy, "phase": "search",
                  "trial_key": f"{cell}/search-{index:05d}", "seed": 0,
                  "lr": 10 ** rng.uniform(-4, -1)}
        trial = FakeTrial(f"t{index:05d}", config)
        for epoch in range(1, epochs + 1):
            result = _report(epoch, epochs, rng, config)
            trial.last_result = result
            began = time.perf_counter()
            callback.on_trial_result(0, [trial], trial, result)
            spent += time.perf_counter() - began
        trial.status = "TERMINATED"
        began = time.perf_counter()
        callback.on_trial_complete(0, [trial], trial)
        callback.on_step_end(0, [trial])
        spent += time.perf_counter() - began
    return spent


def _measure(folder: Path, trials: int, window: int, epochs: int, *,
             rewrite_all: bool) -> list[dict[str, float]]:
    spec = preset("quick")
    callback = StudyCallback(spec, str(folder), quiet=True)
    callback.setup()
    store = ResultsStore(folder)
    rng = random.Random(0)
    windows = []
    done = 0
    while done < trials:
        count = min(window, trials - done)
        began = time.perf_counter()
        if rewrite_all:  # the old store: all rows rewritten as each trial ends
            loop = 0.0
            for index in range(done, done + count):
                loop += _feed(callback, list(spec.cells), index, 1, epochs, rng)
                callback.flush()
                store.compact()
        else:
            loop = _feed(callback, list(spec.cells), done, count, epochs, rng)
            callback.flush()
        done += count
        total = time.perf_counter() - began
        windows.append({"trials": done, "loop_ms_per_trial": 1e3 * loop / count,
                        "total_ms_per_trial": 1e3 * total / count})
    return windows


def _at(windows: list[dict[str, float]], trials: int) -> dict[str, float] | None:
    return next((w for w in windows if w["trials"] >= trials), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--window", type=int, default=500,
                        help="trials per measured window (default: 500)")
    parser.add_argument("--epochs", type=int, default=3, help="reports per trial")
    parser.add_argument("--baseline-trials", type=int, default=1000,
                        help="trials fed to the rewrite-everything baseline (default: 1000)")
    harness.add_json(parser)
    args = parser.parse_args()
    harness.header(f"driver cost per finished trial, {args.trials} trials of {args.epochs} "
                   "reports")
    with tempfile.TemporaryDirectory(prefix="wbc-driver-") as tmp:
        began = time.perf_counter()
        windows = _measure(Path(tmp) / "append", args.trials, args.window, args.epochs,
                           rewrite_all=False)
        fed = time.perf_counter() - began
        began = time.perf_counter()
        merged = ResultsStore(Path(tmp) / "append").compact()
        compact_seconds = time.perf_counter() - began
        baseline = _measure(Path(tmp) / "rewrite", args.baseline_trials,
                            max(1, args.baseline_trials // 4), args.epochs, rewrite_all=True)
    print(f"{'trials':>8} {'event loop ms/trial':>20} {'in all ms/trial':>16}")
    marks = [t for t in CHECKPOINTS if t <= args.trials] or [args.trials]
    for mark in marks:
        w = _at(windows, mark)
        assert w is not None
        print(f"{w['trials']:>8} {w['loop_ms_per_trial']:>20.2f} {w['total_ms_per_trial']:>16.2f}")
    first, last = _at(windows, marks[0]), _at(windows, marks[-1])
    assert first is not None and last is not None
    ratio_loop = last["loop_ms_per_trial"] / first["loop_ms_per_trial"]
    ratio_total = last["total_ms_per_trial"] / first["total_ms_per_trial"]
    print(f"ratio {marks[-1]} / {marks[0]} trials: event loop {ratio_loop:.2f}x, in all "
          f"{ratio_total:.2f}x ({'flat: within 2x' if max(ratio_loop, ratio_total) <= 2 else 'NOT flat'})")
    print(f"{args.trials} trials fed in {fed:.0f} s; compacting {merged} trials' row files into "
          f"trials.parquet and epochs.parquet took {compact_seconds:.1f} s (once, at the end)")
    print("baseline, every trial rewriting all earlier rows (the store before row files):")
    for w in baseline:
        print(f"{w['trials']:>8} {w['loop_ms_per_trial']:>20.2f} {w['total_ms_per_trial']:>16.2f}")
    harness.write_json(args.json, args, {
        "windows": windows, "baseline_windows": baseline, "ratio_event_loop": ratio_loop,
        "ratio_in_all": ratio_total, "compact_seconds": compact_seconds,
        "feed_seconds": fed})


if __name__ == "__main__":
    main()
