"""Classification metrics that stay honest under the WBC class imbalance.

Neutrophils are 61% of the validation set, so a constant "Neutrophil" predictor scores 61%
accuracy. Accuracy is therefore always reported with macro-F1, balanced
accuracy, per-class recall and the confusion matrix, and with a Wilson interval that shows how
little a one-run difference of half a point means on 1,728 images.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import SupportsIndex, TypedDict

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

__all__ = ["ClassificationMetrics", "classification_metrics", "flatten_metrics", "mean_interval",
           "scalars", "wilson_interval"]


class ClassificationMetrics(TypedDict):
    """What :func:`classification_metrics` returns: a plain, JSON-able dict."""

    accuracy: float
    macro_f1: float  # over all num_classes labels; a label never true nor predicted counts as 0
    balanced_accuracy: float  # mean recall over the classes present in y_true
    recall: dict[str, float]  # class name -> recall; NaN where the class is absent from y_true
    confusion_matrix: list[list[int]]  # [true][predicted], rows and columns in class order
    n: int  # number of samples, the denominator of an accuracy interval


def _labels(values: ArrayLike, what: str, num_classes: int) -> np.ndarray:
    if hasattr(values, "detach"):
        # A torch tensor, possibly on a GPU: numpy can only read it from host memory.
        values = values.detach().cpu()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one label per sample (1-D), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{what} holds class indices outside 0..{num_classes - 1}: "
            f"min {arr.min()}, max {arr.max()}"
        )
    return arr.astype(np.int64)


def classification_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> ClassificationMetrics:
    """Accuracy, macro-F1, balanced accuracy, per-class recall and confusion matrix.

    ``y_true`` and ``y_pred`` are integer class indices in ``0..num_classes-1`` (lists, numpy
    arrays or torch tensors). ``class_names`` name the classes in index order (default
    ``"0"``, ``"1"``, ...). All values are plain Python ``float``/``int``.

    The label space is fixed by ``num_classes``, not by what happens to occur, so that scores
    of different evaluation sets are comparable:

    - ``macro_f1`` averages F1 over every class; a class that is neither true nor predicted
      scores 0 (``zero_division=0``), as does one that is predicted but never true.
    - ``recall[c]`` is NaN when class ``c`` has no true sample: its recall is undefined, not 0.
    - ``balanced_accuracy`` is the mean recall over the classes present in ``y_true``. That is
      scikit-learn's ``balanced_accuracy_score`` (which also drops undefined recalls), computed
      without its warning and independent of which classes appear in ``y_pred``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    names = [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names {names} for num_classes={num_classes}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names}")
    true = _labels(y_true, "y_true", num_classes)
    pred = _labels(y_pred, "y_pred", num_classes)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    if true.size == 0:
        raise ValueError("cannot compute metrics of an empty set (no labels)")

    labels = list(range(num_classes))
    present = sorted(int(c) for c in np.unique(true))
    present_recall = recall_score(true, pred, labels=present, average=None, zero_division=0)
    recall = dict.fromkeys(names, math.nan)
    for cls, value in zip(present, present_recall, strict=True):
        recall[names[cls]] = float(value)
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(
            f1_score(true, pred, labels=labels, average="macro", zero_division=0)
        ),
        "balanced_accuracy": float(np.mean(present_recall)),
        "recall": recall,
        "confusion_matrix": confusion_matrix(true, pred, labels=labels).tolist(),
        "n": int(true.size),
    }


def flatten_metrics(prefix: str, metrics: Mapping[str, object]) -> dict[str, float]:
    """Flat ``{prefix}_{name}`` columns for a results table, e.g. ``val_macro_f1``.

    Number values become ``{prefix}_{key}``; a dict of numbers becomes ``{prefix}_{key}_{sub}``
    (``recall`` -> ``val_recall_Basophil``). Lists such as the confusion matrix have no flat
    form and are left out. Extra scalar keys (a loss, say) pass through. An empty prefix gives
    the bare names.
    """
    head = f"{prefix}_" if prefix else ""
    flat: dict[str, float] = {}

    def number(value: object) -> float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float | np.integer | np.floating):
            # Keep ints as ints: counts should stay integer-typed columns.
            return int(value) if isinstance(value, int | np.integer) else float(value)
        return None

    for key, value in metrics.items():
        if (scalar := number(value)) is not None:
            flat[f"{head}{key}"] = scalar
        elif isinstance(value, Mapping):
            for sub, inner in value.items():
                if (scalar := number(inner)) is not None:
                    flat[f"{head}{key}_{sub}"] = scalar
    return flat


def scalars(metrics: Mapping[str, object]) -> dict[str, object]:
    """The numbers, strings and Nones of a flat record (no matrices, histories or nested
    records): what a per-epoch row keeps of a report."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, bool | int | float | str) or v is None}


def wilson_interval(successes: SupportsIndex, n: SupportsIndex, confidence: float = 0.95
                    ) -> tuple[float, float]:
    """Wilson score interval for a proportion such as accuracy (``successes`` of ``n``).

    Preferred over the normal approximation because it stays inside [0, 1] and keeps its
    coverage near 0% and 100%, where small WBC subsets and good models live. The bound is
    exactly 0 at ``successes == 0`` and exactly 1 at ``successes == n``. Raises ``ValueError``
    for ``n < 1``, ``successes`` outside ``0..n``, non-integer counts or a confidence outside
    (0, 1).
    """
    try:
        k, n = operator.index(successes), operator.index(n)
    except TypeError:
        raise ValueError(f"successes and n must be integer counts, got {successes!r} of {n!r}"
                         ) from None
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"successes must be in 0..{n}, got {k}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    # scipy pins the 0 and n ends exactly; the clamp only guards rounding dust elsewhere.
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def mean_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of repeated runs (seeds) with a Student-t interval: ``(mean, low, high)``.

    Non-finite values (a run that reported NaN) are left out. No values give all NaN; one
    value gives the mean with a NaN interval (one run says nothing about run-to-run spread);
    identical values give the zero-width interval ``(mean, mean, mean)``.
    """
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(data))
    if sem == 0.0:
        # scipy answers NaN (and warns) for a zero scale; no spread is a zero-width interval.
        return mean, mean, mean
    low, high = stats.t.interval(confidence, data.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)
