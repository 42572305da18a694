"""Intervals, tests and power for comparing training strategies on a fixed reporting split.

Why not a t-test over seeds
---------------------------
A paired t-test over seeds of a test-set metric treats the reporting images as fixed: its
interval covers only training randomness on *those* images. On a split of ~40 images that is a
small part of the uncertainty, and two studies that differ only in their seeds can both claim
"significant" differences with non-overlapping intervals. Following Bouthillier et al. (2021),
"Accounting for variance in machine learning benchmarks" (MLSys), the variance of a reported
difference is split into a *seed* part (training randomness) and an *image* part (which images
happened to be in the reporting split), and both are estimated and added.

Data model
----------
``y`` (n,) holds the true classes of the reporting images; a cell's runs are ``pred`` (S, n),
row ``s`` the predictions of seed ``s``. Two strategies compared at one label budget ran the
same seeds on the same images, so ``pred_a[s]`` and ``pred_b[s]`` are paired by seed *and* by
image.

Method (what :func:`compare` computes; :func:`cell_estimate` is the same for one cell)
--------------------------------------------------------------------------------------
- Seed component: ``d_s = metric(A_s) - metric(B_s)`` on the full split,
  ``v_seed = var(d_s, ddof=1) / S``.
- Image component: a paired bootstrap over images. Each replicate is one multinomial weight
  vector over the n images, applied to A and B and to every seed alike (all runs scored the
  same images, so one draw per replicate keeps that pairing); the statistic is the mean over
  seeds of the difference, and ``v_img`` its variance over the replicates. Metrics are computed
  for all replicates at once: per-class TP, predicted and true counts are ``W @ indicators``.
- Stratification (default on): the resample keeps every class's image count, because the
  project's reporting splits are stratified by class
  (``wbc.training.loop.selection_reporting_split`` and the importer's stratified splits), so class
  composition is not a source of variance in the design; it also keeps every class present in every
  replicate, so balanced accuracy and macro-F1 replicates average over the same classes. Classes
  with a single image are pooled into one stratum (a lone image would otherwise never vary). The
  plug-in bootstrap variance is low by about ``(n - K) / n`` for K strata (exact for a mean over
  equal-sized strata), so ``v_img`` is multiplied by ``n / (n - K)``: +14% variance at n = 40, K =
  5.
- Total ``v = v_seed + v_img``; Welch–Satterthwaite degrees of freedom
  ``df = v**2 / (v_seed**2 / (S - 1) + v_img**2 / inf) = v**2 (S - 1) / v_seed**2``
  (-> S - 1 when seed noise dominates, -> inf when image noise does, inf when ``v_seed == 0``);
  interval ``difference ± t_df * sqrt(v)`` and a two-sided p from the same t distribution.
- One seed (S = 1): there is no estimate of seed variance, so ``low``, ``high``, ``p``,
  ``df`` and ``min_detectable`` are NaN, the verdict is "cannot tell" and ``note`` says why.
  ``image_sd`` is still reported. A report built on these numbers therefore can never claim a
  seed-robust difference from one seed.
- Probability of improvement (Agarwal et al. 2021, "Deep reinforcement learning at the edge of
  the statistical precipice", NeurIPS): P(a random run of A beats the same-seed run of B on a
  random reporting set of this size), ties counting one half. Every bootstrap replicate is
  scored for every seed, so the estimate averages over all (seed, replicate) pairs rather than
  sampling one seed per replicate. Its interval is a percentile bootstrap over seeds (cheap:
  per-seed probabilities are resampled); it does not include the uncertainty of the reporting
  split itself, and it is NaN with one seed. With 3 seeds it is coarse (10 distinct resamples).
- Power: ``min_detectable = (t_{1-α/2, df} + t_{power, df}) * sqrt(v)``, the smallest true
  difference this design detects with probability ``power``. ``seeds_needed`` is the smallest
  S' with ``(z_{1-α/2} + z_power)**2 * (var(d_s, ddof=1) / S' + v_img) <= target**2``: more seeds
  shrink only the seed part, since they score the same images. It is None when ``v_img`` alone
  already exceeds the target (a larger reporting split is needed, not more seeds); at least 2,
  because one seed cannot estimate seed variance.
- :func:`holm` adjusts a table of p-values (Holm's step-down; NaN stays NaN).
- :func:`hierarchical_bootstrap` is the two-level bootstrap (resample seeds with replacement,
  then images) used to cross-check the analytic interval. By default one image resample is
  shared by all resampled seeds of a replicate, mirroring the crossed design; with
  ``shared_images=False`` each resampled seed gets its own image draw (the textbook nested
  bootstrap), which averages image noise away across seeds and so is too narrow here whenever
  images are hard or easy for all seeds alike.

Everything is deterministic given ``seed`` (one ``numpy.random.Generator`` per call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

__all__ = [
    "METRICS",
    "Comparison",
    "Estimate",
    "Interval",
    "SeedImageTest",
    "bootstrap_weights",
    "cell_estimate",
    "compare",
    "hierarchical_bootstrap",
    "holm",
    "metric_values",
    "seed_image_test",
]

METRICS = ("accuracy", "macro_f1", "balanced_accuracy")

# Weight-matrix entries per block of bootstrap replicates: bounds memory (~32 MB of float64)
# whatever the split size; blocks are drawn in order from one generator, so results depend
# only on ``seed``.
_BLOCK_ENTRIES = 4_000_000

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Estimate:
    """One cell (one strategy at one budget): mean metric over seeds and its interval."""

    metric: str
    estimate: float  # mean over seeds of the metric on the full reporting split
    low: float  # NaN with one seed
    high: float
    seed_sd: float  # standard deviation of the mean due to seeds (NaN with one seed)
    image_sd: float  # standard deviation of the mean due to the choice of reporting images
    df: float  # Welch–Satterthwaite degrees of freedom (inf when seed variance is 0)
    seeds: int
    images: int
    confidence: float
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    """A minus B at one budget: difference, interval, test, probability of improvement, power."""

    metric: str
    difference: float  # mean over seeds of metric(A_s) - metric(B_s) on the full split
    low: float
    high: float
    p: float  # two-sided; NaN with one seed
    seeds: int
    images: int
    prob_improvement: float  # P(A_s beats B_s on a resampled split); ties count 1/2
    prob_improvement_low: float  # percentile bootstrap over seeds; NaN with one seed
    prob_improvement_high: float
    seed_sd: float  # sd of the mean difference due to seeds
    image_sd: float  # sd of the mean difference due to the choice of images
    df: float
    min_detectable: float  # smallest true difference detected with probability ``power``
    seeds_needed: int | None  # seeds for ``target`` on this split; None: more seeds won't do
    verdict: str  # "better", "worse" or "cannot tell" (A relative to B)
    confidence: float
    power: float
    target: float
    note: str = ""


@dataclass(frozen=True)
class SeedImageTest:
    """A mean over seeds with a known image variance: its t interval and p against 0."""

    estimate: float  # mean of the per-seed values
    v_seed: float  # variance of the mean due to seeds (NaN with one seed)
    v_img: float  # variance of the mean due to the choice of reporting images (given)
    df: float  # Welch-Satterthwaite (inf when v_seed is 0; NaN with one seed)
    low: float  # NaN with one seed
    high: float
    p: float


@dataclass(frozen=True)
class Interval:
    """A bootstrap distribution's centre, percentile interval and standard deviation."""

    estimate: float  # the statistic on the original data
    low: float
    high: float
    sd: float  # standard deviation over the replicates
    replicates: int
    confidence: float


# --- input checks -----------------------------------------------------------------------


def _labels(y: ArrayLike, num_classes: int) -> IntArray:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"y must be a non-empty 1-D array of labels, got shape {arr.shape}")
    _check_classes(arr, "y", num_classes)
    return arr.astype(np.int64)


def _predictions(pred: ArrayLike, n: int, num_classes: int, what: str = "pred") -> IntArray:
    arr = np.asarray(pred)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] == 0:
        raise ValueError(f"{what} must have shape (seeds, {n}), got {np.shape(pred)}")
    _check_classes(arr, what, num_classes)
    return arr.astype(np.int64)


def _check_classes(arr: np.ndarray, what: str, num_classes: int) -> None:
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(f"{what} holds classes outside 0..{num_classes - 1}")


def _check_options(metric: str, replicates: int, confidence: float) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    if replicates < 2:
        raise ValueError(f"replicates must be at least 2, got {replicates}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# --- metrics, vectorised over weight rows -----------------------------------------------


def _metric_matrix(y: IntArray, pred: IntArray, weights: FloatArray, metric: str,
                   num_classes: int) -> FloatArray:
    """Metric of every seed (rows of ``pred``) under every weight row: shape (S, B)."""
    seeds, n = pred.shape
    eye = np.eye(num_classes)
    true_onehot = eye[y]  # (n, C)
    pred_onehot = eye[pred]  # (S, n, C)
    hit = pred_onehot * (pred == y[None, :])[:, :, None]  # (S, n, C): correct and of class c
    # One product per count type: (B, n) @ (n, S*C) gives every seed's per-class counts.
    tp = (weights @ hit.transpose(1, 0, 2).reshape(n, -1)).reshape(-1, seeds, num_classes)
    total = weights.sum(axis=1)  # (B,)
    if metric == "accuracy":
        with np.errstate(invalid="ignore", divide="ignore"):
            return (tp.sum(axis=2) / total[:, None]).T
    true_count = weights @ true_onehot  # (B, C), the same for every seed
    if metric == "balanced_accuracy":
        present = true_count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(present[:, None, :], tp / true_count[:, None, :], 0.0)
            return (recall.sum(axis=2) / present.sum(axis=1)[:, None]).T
    pred_count = (weights @ pred_onehot.transpose(1, 0, 2).reshape(n, -1)).reshape(
        -1, seeds, num_classes)
    denom = pred_count + true_count[:, None, :]  # 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2.0 * tp / denom, 0.0)  # never true nor predicted: 0
    return f1.mean(axis=2).T


def metric_values(y: ArrayLike, pred: ArrayLike, metric: str, num_classes: int,
                  weights: ArrayLike | None = None) -> np.ndarray:
    """The metric of each run (row of ``pred``), optionally under sample weights.

    ``pred`` is (n,) or (S, n); ``weights`` is None, (n,) or (B, n) non-negative sample
    weights (bootstrap counts, say). The result has shape ``pred.shape[:-1] +
    weights.shape[:-1]``: (S,) for (S, n) predictions without weights, (S, B) with a weight
    matrix, a 0-d array for one run and one weight vector. ``metric`` is one of
    :data:`METRICS`: ``accuracy``; ``macro_f1`` over all ``num_classes`` classes (a class never
    true nor predicted scores 0, as sklearn's ``zero_division=0``); ``balanced_accuracy``,
    mean recall over the classes with positive weight among the true labels.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    labels = _labels(y, num_classes)
    runs = _predictions(pred, labels.size, num_classes)
    w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape[-1:] != (labels.size,) or w.ndim > 2 or np.any(w < 0):
        raise ValueError(f"weights must be non-negative with shape (B, {labels.size}) or "
                         f"({labels.size},), got {w.shape}")
    values = _metric_matrix(labels, runs, np.atleast_2d(w), metric, num_classes)
    shape = np.shape(pred)[:-1] + w.shape[:-1]
    return values.reshape(shape)


# --- bootstrap draws ----------------------------------------------------------------------

# Hand-written rather than scipy.stats.bootstrap: that resamples the observations of each
# sample independently, while here one stratified draw of images must weight every seed of
# both cells alike (the pairing), metrics are scored for all replicates at once from weighted
# counts, and hierarchical_bootstrap crosses a seed draw with an image draw. Only the
# one-level seed bootstrap of _prob_improvement is scipy's.


def _strata(y: IntArray, stratify: bool) -> list[IntArray]:
    if not stratify:
        return [np.arange(y.size)]
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    strata = [g for g in groups if g.size >= 2]
    singles = [g for g in groups if g.size < 2]
    if singles:
        # A class with one image would be copied unchanged into every replicate: pooled, its
        # image can be swapped for another rare class's image, which is the uncertainty it has.
        strata.append(np.sort(np.concatenate(singles)))
    return strata


def bootstrap_weights(y: ArrayLike, replicates: int, rng: np.random.Generator, *,
                      stratify: bool = True) -> FloatArray:
    """``replicates`` multinomial resampling-count vectors over the images: shape (B, n).

    Row b holds how often each image appears in bootstrap sample b (rows sum to n). With
    ``stratify`` each class keeps its image count (classes with one image are pooled).
    """
    labels = np.asarray(y, dtype=np.int64)
    out = np.zeros((replicates, labels.size))
    for members in _strata(labels, stratify):
        size = members.size
        # Uniform multinomial counts = counts of uniform index draws; one bincount over
        # row-offset indices is much faster than numpy's per-category binomial multinomial.
        draws = rng.integers(0, size, size=(replicates, size))
        draws += np.arange(replicates)[:, None] * size
        counts = np.bincount(draws.reshape(-1), minlength=replicates * size)
        out[:, members] = counts.reshape(replicates, size)
    return out


def _image_variance_factor(y: IntArray, stratify: bool) -> float:
    """Small-sample correction n / (n - K) of the plug-in bootstrap variance (K strata)."""
    k = len(_strata(y, stratify))
    return y.size / (y.size - k) if y.size > k else 1.0


def _replicate_metrics(y: IntArray, runs: Sequence[IntArray], metric: str, num_classes: int,
                       replicates: int, rng: np.random.Generator, stratify: bool
                       ) -> list[FloatArray]:
    """Every run's metric on ``replicates`` image resamples, one (S, B) array per cell.

    The same weight rows are applied to every cell and seed: that is the image pairing.
    """
    block = max(1, _BLOCK_ENTRIES // y.size)
    parts: list[list[FloatArray]] = [[] for _ in runs]
    done = 0
    while done < replicates:
        w = bootstrap_weights(y, min(block, replicates - done), rng, stratify=stratify)
        for part, pred in zip(parts, runs, strict=True):
            part.append(_metric_matrix(y, pred, w, metric, num_classes))
        done += w.shape[0]
    return [np.concatenate(part, axis=1) for part in parts]


# --- variance, interval, power ------------------------------------------------------------


def _image_variance(replicate_means: FloatArray, factor: float) -> float:
    """``v_img``: the variance over bootstrap replicates of the mean over seeds, corrected."""
    return float(np.var(replicate_means, ddof=1)) * factor


def seed_image_test(values: ArrayLike, v_img: float, confidence: float = 0.95) -> SeedImageTest:
    """The mean of per-seed values (a cell's metric, or paired differences, each on the full
    reporting split) with its t interval and two-sided p against 0: seed variance
    ``var(values, ddof=1) / S`` plus ``v_img``, the image variance of that mean, on
    Welch-Satterthwaite degrees of freedom (the module docstring's method; :func:`compare` and
    :func:`cell_estimate` are this with ``v_img`` bootstrapped from the predictions)."""
    full = np.asarray(values, dtype=float).ravel()
    if full.size == 0:
        raise ValueError("seed_image_test needs at least one seed's value")
    centre = float(full.mean())
    if full.size < 2:
        return SeedImageTest(centre, math.nan, v_img, math.nan, math.nan, math.nan, math.nan)
    v_seed = float(np.var(full, ddof=1)) / full.size
    total = v_seed + v_img
    df = math.inf if v_seed == 0.0 else total**2 * (full.size - 1) / v_seed**2
    if total == 0.0:
        # No variability at all: the difference is exact (p = 1 for an exact zero).
        return SeedImageTest(centre, v_seed, v_img, df, centre, centre,
                             1.0 if centre == 0.0 else 0.0)
    sd = math.sqrt(total)
    low, high = sps.t.interval(confidence, df, loc=centre, scale=sd)
    p = float(2.0 * sps.t.sf(abs(centre) / sd, df))
    return SeedImageTest(centre, v_seed, v_img, df, float(low), float(high), p)


def _seeds_needed(v_seed_run: float, v_img: float, confidence: float, power: float,
                  target: float) -> int | None:
    """Smallest S' with (z_{1-α/2} + z_power)^2 (v_seed_run / S' + v_img) <= target^2."""
    k = (float(sps.norm.ppf(0.5 + confidence / 2.0)) + float(sps.norm.ppf(power))) ** 2
    room = target**2 / k - v_img  # what the seed part may still use
    if math.isnan(v_seed_run) or room <= 0.0:
        return None
    if v_seed_run == 0.0:
        return 2
    # The small tolerance keeps an exact boundary case from rounding up by one.
    return max(2, math.ceil(v_seed_run / room - 1e-9))


def _min_detectable(variance: float, df: float, confidence: float, power: float) -> float:
    if math.isnan(variance) or math.isnan(df):
        return math.nan
    quantiles = float(sps.t.ppf(0.5 + confidence / 2.0, df)) + float(sps.t.ppf(power, df))
    return quantiles * math.sqrt(variance)


def _prob_improvement(rep_a: FloatArray, rep_b: FloatArray, rng: np.random.Generator,
                      replicates: int, confidence: float) -> tuple[float, float, float]:
    """P(A_s > B_s) over all (seed, replicate) pairs, with a seed-bootstrap interval."""
    wins = (rep_a > rep_b) + 0.5 * (rep_a == rep_b)  # (S, B)
    per_seed = wins.mean(axis=1)
    estimate = float(per_seed.mean())
    seeds = per_seed.size
    if seeds < 2:
        return estimate, math.nan, math.nan
    # ``random_state`` rather than ``rng``: the keyword every supported scipy (>= 1.11) takes.
    boot = sps.bootstrap((per_seed,), np.mean, n_resamples=replicates, confidence_level=confidence,
                         method="percentile", vectorized=True, random_state=rng)
    interval = boot.confidence_interval
    return estimate, float(interval.low), float(interval.high)


_ONE_SEED = ("one seed: no estimate of seed variance, so no interval, test or power; "
             "image_sd covers the reporting images only")


# --- public analyses ----------------------------------------------------------------------


def cell_estimate(y: ArrayLike, pred: ArrayLike, metric: str, num_classes: int, *,
                  replicates: int = 2000, seed: int = 0, confidence: float = 0.95,
                  stratify: bool = True) -> Estimate:
    """Mean metric over seeds of one cell and an interval for seeds plus reporting images.

    ``pred`` is (S, n). The interval is ``estimate ± t_df sqrt(v_seed + v_img)`` with the
    seed and image components and degrees of freedom of the module docstring; with one seed
    it is NaN (see ``note``).
    """
    _check_options(metric, replicates, confidence)
    labels = _labels(y, num_classes)
    runs = _predictions(pred, labels.size, num_classes)
    if labels.size < 2:
        raise ValueError("at least two reporting images are needed to resample them")
    rng = np.random.default_rng(seed)
    full = _metric_matrix(labels, runs, np.ones((1, labels.size)), metric, num_classes)[:, 0]
    (rep,) = _replicate_metrics(labels, [runs], metric, num_classes, replicates, rng, stratify)
    factor = _image_variance_factor(labels, stratify)
    test = seed_image_test(full, _image_variance(rep.mean(axis=0), factor), confidence)
    centre, v_seed, v_img, df, low, high = (test.estimate, test.v_seed, test.v_img, test.df,
                                            test.low, test.high)
    return Estimate(metric=metric, estimate=centre, low=low, high=high,
                    seed_sd=math.sqrt(v_seed), image_sd=math.sqrt(v_img), df=df,
                    seeds=runs.shape[0], images=labels.size, confidence=confidence,
                    note=_ONE_SEED if runs.shape[0] < 2 else "")


def _paired_runs(y: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, num_classes: int
                 ) -> tuple[IntArray, IntArray, IntArray]:
    labels = _labels(y, num_classes)
    runs_a = _predictions(pred_a, labels.size, num_classes, "pred_a")
    runs_b = _predictions(pred_b, labels.size, num_classes, "pred_b")
    if runs_a.shape != runs_b.shape:
        raise ValueError(f"pred_a {runs_a.shape} and pred_b {runs_b.shape} must pair seed by "
                         "seed (same shape)")
    if labels.size < 2:
        raise ValueError("at least two reporting images are needed to resample them")
    return labels, runs_a, runs_b


def compare(y: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, metric: str, num_classes: int,
            *, replicates: int = 2000, seed: int = 0, confidence: float = 0.95,
            power: float = 0.8, target: float = 0.005, stratify: bool = True) -> Comparison:
    """A minus B at one budget, accounting for seeds and for the sampling of reporting images.

    ``pred_a`` and ``pred_b`` are (S, n), paired by seed (row s of each ran seed s) and by
    image (column i is image i of ``y``). See the module docstring for the method; ``verdict``
    is "better"/"worse" when the ``confidence`` interval excludes 0 and "cannot tell"
    otherwise (always with one seed). ``target`` is on the metric's 0-1 scale.
    """
    _check_options(metric, replicates, confidence)
    if not 0.0 < power < 1.0 or target <= 0.0:
        raise ValueError(f"power must be in (0, 1) and target positive, got {power}, {target}")
    labels, runs_a, runs_b = _paired_runs(y, pred_a, pred_b, num_classes)
    rng = np.random.default_rng(seed)
    ones = np.ones((1, labels.size))
    diffs = (_metric_matrix(labels, runs_a, ones, metric, num_classes)
             - _metric_matrix(labels, runs_b, ones, metric, num_classes))[:, 0]
    rep_a, rep_b = _replicate_metrics(labels, [runs_a, runs_b], metric, num_classes,
                                      replicates, rng, stratify)
    factor = _image_variance_factor(labels, stratify)
    test = seed_image_test(diffs, _image_variance((rep_a - rep_b).mean(axis=0), factor),
                           confidence)
    centre, v_seed, v_img, df, low, high, p = (test.estimate, test.v_seed, test.v_img, test.df,
                                               test.low, test.high, test.p)
    pi, pi_low, pi_high = _prob_improvement(rep_a, rep_b, rng, replicates, confidence)
    seeds = runs_a.shape[0]
    v_seed_run = v_seed * seeds  # var(d_s, ddof=1)
    significant = not math.isnan(p) and p < 1.0 - confidence and centre != 0.0
    verdict = ("better" if centre > 0 else "worse") if significant else "cannot tell"
    return Comparison(
        metric=metric, difference=centre, low=low, high=high, p=p, seeds=seeds,
        images=labels.size, prob_improvement=pi, prob_improvement_low=pi_low,
        prob_improvement_high=pi_high, seed_sd=math.sqrt(v_seed), image_sd=math.sqrt(v_img),
        df=df, min_detectable=_min_detectable(v_seed + v_img, df, confidence, power),
        seeds_needed=_seeds_needed(v_seed_run, v_img, confidence, power, target),
        verdict=verdict, confidence=confidence, power=power, target=target,
        note=_ONE_SEED if seeds < 2 else "")


def hierarchical_bootstrap(y: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, metric: str,
                           num_classes: int, *, replicates: int = 2000, seed: int = 0,
                           confidence: float = 0.95, stratify: bool = True,
                           shared_images: bool = True) -> Interval:
    """Two-level bootstrap of the mean difference A - B: seeds with replacement, then images.

    Each replicate draws S seed indices with replacement (the pair A_s, B_s moves together)
    and image resampling weights, and averages ``metric(A_s) - metric(B_s)`` over the drawn
    seeds. With ``shared_images`` (default) one image draw serves all of a replicate's seeds,
    as all runs scored the same images; otherwise each drawn seed gets its own draw. Returns
    a percentile interval; used as a cross-check of :func:`compare`'s analytic interval (no
    small-sample variance correction is applied here).
    """
    _check_options(metric, replicates, confidence)
    labels, runs_a, runs_b = _paired_runs(y, pred_a, pred_b, num_classes)
    rng = np.random.default_rng(seed)
    seeds = runs_a.shape[0]
    ones = np.ones((1, labels.size))
    centre = float((_metric_matrix(labels, runs_a, ones, metric, num_classes)
                    - _metric_matrix(labels, runs_b, ones, metric, num_classes)).mean())
    picks = rng.integers(0, seeds, size=(replicates, seeds))
    if shared_images:
        rep_a, rep_b = _replicate_metrics(labels, [runs_a, runs_b], metric, num_classes,
                                          replicates, rng, stratify)
        diff = rep_a - rep_b  # (S, B)
        boot = diff[picks, np.arange(replicates)[:, None]].mean(axis=1)
    else:
        boot = _nested_replicates(labels, runs_a, runs_b, picks, metric, num_classes, rng,
                                  stratify)
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(estimate=centre, low=float(low), high=float(high),
                    sd=float(np.std(boot, ddof=1)), replicates=replicates,
                    confidence=confidence)


def _nested_replicates(y: IntArray, runs_a: IntArray, runs_b: IntArray, picks: IntArray,
                       metric: str, num_classes: int, rng: np.random.Generator,
                       stratify: bool) -> FloatArray:
    """Mean difference per replicate when every drawn seed gets its own image resample."""
    replicates, seeds = picks.shape
    flat = picks.reshape(-1)
    diff = np.empty(flat.size)
    block = max(1, _BLOCK_ENTRIES // y.size)
    for start in range(0, flat.size, block):
        chosen = flat[start:start + block]
        weights = bootstrap_weights(y, chosen.size, rng, stratify=stratify)
        for s in np.unique(chosen):
            # Score each seed only on the weight rows that drew it: S times less work.
            rows = np.flatnonzero(chosen == s)
            diff[start + rows] = (
                _metric_matrix(y, runs_a[s:s + 1], weights[rows], metric, num_classes)
                - _metric_matrix(y, runs_b[s:s + 1], weights[rows], metric, num_classes))[0]
    return diff.reshape(replicates, seeds).mean(axis=1)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values, same shape as the input.

    The k-th smallest of m p-values becomes ``max_{j<=k} min(1, (m - j + 1) p_(j))``. NaN
    entries (comparisons that could not be tested) stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.reshape(-1)
    out = np.full(flat.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(flat))
    if valid.size:
        order = valid[np.argsort(flat[valid], kind="stable")]
        m = order.size
        scaled = flat[order] * (m - np.arange(m))
        out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out.reshape(p.shape)
