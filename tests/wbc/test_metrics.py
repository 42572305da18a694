"""Classification metrics against hand-computed examples, and the Wilson and t intervals."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from wbc.datasets.layout import WBC_CLASSES
from wbc.metrics import (
    classification_metrics,
    flatten_metrics,
    mean_interval,
    wilson_interval,
)

# Ten labels, three classes. Per class (TP, FN, FP): 0 -> (2, 1, 1), 1 -> (3, 1, 2), 2 -> (2, 1, 0).
Y_TRUE = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 1, 0, 2, 2, 1]


def test_hand_computed_example() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, num_classes=3, class_names=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(7 / 10)
    # F1: a = 2/3 (P 2/3, R 2/3), b = 2/3 (P 3/5, R 3/4), c = 4/5 (P 1, R 2/3).
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 4 / 5) / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)
    assert m["recall"] == pytest.approx({"a": 2 / 3, "b": 3 / 4, "c": 2 / 3})
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 3, 0], [0, 1, 2]]
    assert m["n"] == 10
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))


def test_plain_python_values_and_tensor_input() -> None:
    m = classification_metrics(torch.tensor(Y_TRUE), np.array(Y_PRED), num_classes=3)
    assert json.loads(json.dumps(m)) == m
    assert all(type(m[k]) is float for k in ("accuracy", "macro_f1", "balanced_accuracy"))
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)
    assert list(m["recall"]) == ["0", "1", "2"]


def test_majority_predictor_on_imbalanced_set() -> None:
    # 61 Neutrophils out of 100, like the WBC validation set (1059 of 1728).
    counts = {"Basophil": 2, "Eosinophil": 7, "Lymphocyte": 24, "Monocyte": 6, "Neutrophil": 61}
    y_true = np.repeat(np.arange(5), [counts[c] for c in WBC_CLASSES])
    y_pred = np.full_like(y_true, WBC_CLASSES.index("Neutrophil"))
    m = classification_metrics(y_true, y_pred, num_classes=5, class_names=WBC_CLASSES)
    assert m["accuracy"] == pytest.approx(0.61)
    assert m["balanced_accuracy"] == pytest.approx(0.2)
    assert m["macro_f1"] == pytest.approx((2 * 0.61 / 1.61) / 5)  # only Neutrophil's F1 is > 0
    assert m["recall"]["Neutrophil"] == 1.0 and m["recall"]["Basophil"] == 0.0


def test_absent_class_gives_nan_recall_and_balanced_accuracy_over_present() -> None:
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 1]
    m = classification_metrics(y_true, y_pred, num_classes=3)
    assert m["recall"]["0"] == 0.5 and m["recall"]["1"] == 1.0
    assert math.isnan(m["recall"]["2"])
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class absent from y_true
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    # Class 2 is predicted but never true: its F1 is 0 and counts in the macro average.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]


def test_flatten_metrics() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, num_classes=3, class_names=["Basophil", "b", "c"])
    flat = flatten_metrics("val", m)
    assert flat == {
        "val_accuracy": m["accuracy"],
        "val_macro_f1": m["macro_f1"],
        "val_balanced_accuracy": m["balanced_accuracy"],
        "val_recall_Basophil": m["recall"]["Basophil"],
        "val_recall_b": m["recall"]["b"],
        "val_recall_c": m["recall"]["c"],
        "val_n": 10,
    }
    assert type(flat["val_n"]) is int
    assert "accuracy" in flatten_metrics("", m)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [([0, 1], [0], "2 labels but y_pred has 1"), ([0, 5], [0, 1], "outside 0..2"),
     ([0.0, 1.0], [0, 1], "integer"), ([], [], "empty")],
)
def test_bad_inputs(y_true: list[float], y_pred: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(y_true, y_pred, num_classes=3)


def test_wilson_interval_at_report_scale() -> None:
    # A 95% interval at 97% on 1,728 images is about +-0.8 points.
    successes = round(0.97 * 1728)
    lo, hi = wilson_interval(successes, 1728)
    assert lo < successes / 1728 < hi
    assert 0.007 < (hi - lo) / 2 < 0.009
    assert wilson_interval(successes, 1728, confidence=0.99)[1] > hi


def test_wilson_interval_edges() -> None:
    lo, hi = wilson_interval(0, 10)
    z2 = 1.959963984540054**2
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2))
    lo7, hi7 = wilson_interval(7, 10)
    lo3, hi3 = wilson_interval(3, 10)
    assert lo7 == pytest.approx(1 - hi3) and hi7 == pytest.approx(1 - lo3)
    assert wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0, 0)


@pytest.mark.parametrize(("successes", "n", "expected"), [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
    # method 3 (score interval without continuity correction), to the 4 places printed there.
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_interval_published_values(successes: int, n: int,
                                          expected: tuple[float, float]) -> None:
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=5e-5)


def test_wilson_interval_matches_the_closed_form() -> None:
    def closed_form(k: int, n: int, z: float) -> tuple[float, float]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return 0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half

    for n in (1, 2, 7, 40, 1728):
        for k in sorted({0, 1, n // 3, n - 1, n}):
            for confidence, z in ((0.95, 1.959963984540054), (0.99, 2.5758293035489004)):
                assert wilson_interval(k, n, confidence) == pytest.approx(
                    closed_form(k, n, z), abs=1e-12)
    assert wilson_interval(np.int64(3), np.int64(10)) == wilson_interval(3, 10)
    with pytest.raises(ValueError, match="integer counts"):
        wilson_interval(3.0, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(3, 10, confidence=1.0)


def test_mean_interval() -> None:
    mean, low, high = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t_{0.975, 4} = 2.7764451051977987; sd = sqrt(2.5), so half = t * sqrt(2.5 / 5).
    assert mean == 3.0
    assert (low, high) == pytest.approx((3.0 - 1.9632432, 3.0 + 1.9632432), abs=1e-7)
    assert mean_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.99)[1] < low
    # Non-finite runs are left out; one run has no spread to estimate; equal runs, none.
    assert mean_interval([1.0, math.nan, 3.0, math.inf]) == pytest.approx(mean_interval([1.0, 3.0]))
    assert all(math.isnan(v) for v in mean_interval([]))
    assert all(math.isnan(v) for v in mean_interval([math.nan]))
    one = mean_interval([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and math.isnan(one[2])
    assert mean_interval([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)
