"""The line a finished cell prints agrees with the report's interval for it."""

from __future__ import annotations

import re

import numpy as np

from study.report.stats import cell_estimate
from study.report.summary import REPLICATES
from study.tune.progress import cell_summary
from wbc.datasets.layout import WBC_CLASSES
from wbc.metrics import classification_metrics, mean_interval


def _rows(seeds: int = 3, n: int = 120) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, len(WBC_CLASSES), n)
    rows = []
    for seed in range(seeds):
        wrong = rng.random(n) < 0.2 + 0.1 * seed
        pred = np.where(wrong, rng.integers(0, len(WBC_CLASSES), n), targets)
        rows.append({"status": "completed", "test_targets": targets.tolist(),
                     "test_predictions": pred.tolist(),
                     "test_accuracy": float((pred == targets).mean()),
                     "test_macro_f1": float(classification_metrics(targets, pred, num_classes=len(WBC_CLASSES))["macro_f1"])})
    rows.append({"status": "error", "test_accuracy": None, "test_macro_f1": None})
    return targets, rows


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


def test_the_cell_line_gives_the_reports_interval() -> None:
    targets, rows = _rows()
    line = cell_summary(rows)
    assert line.endswith("(3 seeds)"), line
    preds = np.array([r["test_predictions"] for r in rows[:3]])
    acc = cell_estimate(targets, preds, "accuracy", len(WBC_CLASSES), replicates=REPLICATES)
    f1 = cell_estimate(targets, preds, "macro_f1", len(WBC_CLASSES), replicates=REPLICATES)
    expected = [100 * acc.estimate, 100 * acc.low, 100 * acc.high, f1.estimate, f1.low, f1.high]
    np.testing.assert_allclose(_numbers(line), expected, atol=0.051)


def test_without_predictions_the_line_falls_back_to_the_seeds_t_interval() -> None:
    _, rows = _rows()
    for row in rows:
        row.pop("test_predictions", None)
    line = cell_summary(rows)
    mean, low, high = mean_interval([r["test_macro_f1"] for r in rows[:3]])
    np.testing.assert_allclose(_numbers(line)[3:], [mean, low, high], atol=0.0006)
    assert cell_summary([{"status": "error"}]) == "no final run completed"
