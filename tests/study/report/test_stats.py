"""Tests of study.stats: metrics against sklearn, constructed comparisons, coverage, Holm."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from threadpoolctl import threadpool_limits

from study.report.stats import (
    METRICS,
    bootstrap_weights,
    cell_estimate,
    compare,
    hierarchical_bootstrap,
    holm,
    metric_values,
    seed_image_test,
)

C = 4


@pytest.fixture
def one_blas_thread() -> Iterator[None]:
    # Thousands of tiny matrix products: BLAS threads only contend on a shared 2-core machine.
    with threadpool_limits(limits=1):
        yield


def _sklearn(metric: str, y: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    if metric == "accuracy":
        return float(accuracy_score(y, pred))
    if metric == "macro_f1":
        return float(f1_score(y, pred, labels=list(range(num_classes)), average="macro",
                              zero_division=0))
    with warnings.catch_warnings():
        # sklearn warns when a predicted class is never true; its result is still the one
        # wanted (mean recall over the true classes).
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def _synthetic_study(rng: np.random.Generator, seeds: int, n: int, *, seed_sd: float,
                     image_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y and two cells' predictions with a true difference of exactly 0.

    A and B are exchangeable: each image has a shared difficulty plus a strategy-specific
    effect (image noise: which images are in the split), each run a logit shift (seed noise),
    and each (run, image) a Bernoulli draw. Wrong predictions go to a random other class.
    """
    y = rng.integers(0, C, n)
    base = rng.normal(1.0, 1.0, n)
    cells = []
    for _ in range(2):
        effect = rng.normal(0.0, image_sd, n)
        shift = rng.normal(0.0, seed_sd, (seeds, 1))
        correct = rng.random((seeds, n)) < 1.0 / (1.0 + np.exp(-(base + effect + shift)))
        wrong = (y + rng.integers(1, C, (seeds, n))) % C
        cells.append(np.where(correct, y, wrong))
    return y, cells[0], cells[1]


def _with_errors(y: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Predictions equal to y except at the ``wrong`` indices (shifted to the next class)."""
    pred = y.copy()
    pred[wrong] = (y[wrong] + 1) % C
    return pred


# --- metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_metrics_match_sklearn_unweighted(metric: str) -> None:
    rng = np.random.default_rng(0)
    # Class 4 is never true and class 5 never true nor predicted: both must count in macro-F1.
    y = rng.integers(0, 4, 50)
    pred = rng.integers(0, 5, (6, 50))
    got = metric_values(y, pred, metric, 6)
    assert got.shape == (6,)
    ref = [_sklearn(metric, y, p, 6) for p in pred]
    np.testing.assert_allclose(got, ref, atol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_metrics_match_sklearn_integer_weights(metric: str) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, 40)
    pred = rng.integers(0, C, (3, 40))
    weights = rng.integers(0, 4, (5, 40))  # zeros drop images, so classes can go missing
    got = metric_values(y, pred, metric, C, weights)
    assert got.shape == (3, 5)
    for s in range(3):
        for b in range(5):
            rep = np.repeat(np.arange(40), weights[b])
            assert got[s, b] == pytest.approx(_sklearn(metric, y[rep], pred[s, rep], C),
                                              abs=1e-12)


def test_metric_value_shapes() -> None:
    y = np.array([0, 1, 2, 3, 0, 1])
    one = metric_values(y, y, "accuracy", C)
    assert one.shape == () and float(one) == 1.0
    assert metric_values(y, y, "macro_f1", C, np.ones((7, 6))).shape == (7,)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_values(y, y, "auc", C)
    with pytest.raises(ValueError, match="shape"):
        metric_values(y, y[:-1], "accuracy", C)


def test_bootstrap_weights_keep_class_counts_and_pool_single_images() -> None:
    y = np.array([0] * 5 + [1] * 3 + [2] + [3])  # classes 2 and 3 have one image each
    w = bootstrap_weights(y, 500, np.random.default_rng(0))
    assert np.all(w.sum(axis=1) == y.size)
    for c in (0, 1):
        assert np.all(w[:, y == c].sum(axis=1) == np.sum(y == c))
    rare = w[:, y >= 2]
    assert np.all(rare.sum(axis=1) == 2) and rare.std() > 0  # pooled, so they do vary
    plain = bootstrap_weights(y, 500, np.random.default_rng(0), stratify=False)
    assert plain[:, y == 0].sum(axis=1).std() > 0


# --- constructed comparisons -------------------------------------------------------------


def test_identical_cells() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, C, 40)
    pred = rng.integers(0, C, (3, 40))
    res = compare(y, pred, pred.copy(), "macro_f1", C, replicates=300)
    assert res.difference == 0.0 and res.low == 0.0 and res.high == 0.0
    assert res.p == 1.0 and res.verdict == "cannot tell"
    assert res.seed_sd == 0.0 and res.image_sd == 0.0 and math.isinf(res.df)
    assert res.prob_improvement == 0.5  # every replicate is a tie
    assert res.seeds_needed == 2  # no noise at all: two seeds to be able to say so


def test_perfect_cell_beats_twenty_percent_errors() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(C), 25)
    fixed = rng.choice(100, 18, replace=False)
    # Small seed noise: A misses 0-2 images, B misses 18 fixed images plus 2 varying ones.
    pred_a = np.stack([_with_errors(y, rng.choice(100, s, replace=False)) for s in range(3)])
    pred_b = np.stack([_with_errors(y, np.union1d(fixed, rng.choice(100, 2, replace=False)))
                       for _ in range(3)])
    res = compare(y, pred_a, pred_b, "accuracy", C, replicates=1000)
    assert res.difference == pytest.approx(0.19, abs=0.02)
    assert res.verdict == "better" and res.p < 1e-3 and res.low > 0.05
    assert res.prob_improvement > 0.99 and res.prob_improvement_low > 0.99
    assert res.seed_sd < res.image_sd


def test_pure_image_noise_resolves_only_on_a_large_split() -> None:
    y = np.repeat(np.arange(C), 10)  # 40 images
    a = _with_errors(y, np.array([0, 11, 22, 33]))  # A misses 4 images, B 5 others
    b = _with_errors(y, np.array([1, 2, 12, 23, 34]))
    small = compare(y, np.stack([a] * 3), np.stack([b] * 3), "accuracy", C)
    big_y, big_a, big_b = (np.tile(v, 100) for v in (y, a, b))  # same effect on 4000 images
    big = compare(big_y, np.stack([big_a] * 3), np.stack([big_b] * 3), "accuracy", C)
    for res in (small, big):
        assert res.difference == pytest.approx(0.025)
        assert res.seed_sd == 0.0 and math.isinf(res.df)
    assert small.verdict == "cannot tell" and big.verdict == "better"
    ratio = (small.high - small.low) / (big.high - big.low)
    assert 9.0 < ratio < 12.0  # ~sqrt(100), a little more from the small-split correction
    assert small.seeds_needed is None  # image noise alone exceeds what 0.005 allows


def test_pure_seed_noise_has_s_minus_one_degrees_of_freedom() -> None:
    rng = np.random.default_rng(4)
    n = 2000
    y = np.repeat(np.arange(C), n // C)
    pred_a = np.stack([_with_errors(y, rng.choice(n, int(f * n), replace=False))
                       for f in (0.02, 0.30, 0.10)])
    pred_b = np.stack([_with_errors(y, np.arange(0, n, 7))] * 3)  # ~14.3% errors, every seed
    res = compare(y, pred_a, pred_b, "accuracy", C, replicates=500, target=0.05)
    assert res.seed_sd > 5 * res.image_sd
    assert 2.0 <= res.df < 2.3
    assert res.verdict == "cannot tell"
    # seeds_needed is the smallest S' meeting the power condition for this target.
    k = (1.959963984540054 + 0.8416212335729143) ** 2
    v_run, v_img = res.seed_sd**2 * res.seeds, res.image_sd**2
    assert res.seeds_needed is not None and res.seeds_needed > 2
    assert k * (v_run / res.seeds_needed + v_img) <= 0.05**2
    assert k * (v_run / (res.seeds_needed - 1) + v_img) > 0.05**2
    assert res.min_detectable > abs(res.difference)


def test_one_seed_claims_nothing() -> None:
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(C), 100)
    a = _with_errors(y, np.arange(0, 400, 20))
    b = _with_errors(y, np.arange(0, 400, 3))  # a large difference...
    res = compare(y, a[None], b[None], "accuracy", C, replicates=300)
    assert res.difference > 0.2 and res.image_sd > 0
    assert math.isnan(res.low) and math.isnan(res.p) and math.isnan(res.df)
    assert res.verdict == "cannot tell" and "one seed" in res.note  # ...but one seed
    assert res.seeds_needed is None and math.isnan(res.prob_improvement_low)
    cell = cell_estimate(y, a[None], "accuracy", C, replicates=300)
    assert cell.estimate == pytest.approx(0.95) and math.isnan(cell.low) and cell.note
    del rng


def test_cell_estimate() -> None:
    rng = np.random.default_rng(6)
    y, pred, _ = _synthetic_study(rng, 5, 300, seed_sd=0.3, image_sd=1.0)
    est = cell_estimate(y, pred, "balanced_accuracy", C, replicates=500)
    assert est.estimate == pytest.approx(metric_values(y, pred, "balanced_accuracy", C).mean())
    assert est.low < est.estimate < est.high
    assert est.seed_sd > 0 and est.image_sd > 0 and est.df >= 4
    assert est.seeds == 5 and est.images == 300


# --- simulation ----------------------------------------------------------------------------


def _coverage(seeds: int, studies: int) -> float:
    rng = np.random.default_rng(100 + seeds)
    covered = 0
    for k in range(studies):
        y, a, b = _synthetic_study(rng, seeds, 300, seed_sd=0.2, image_sd=2.0)
        res = compare(y, a, b, "accuracy", C, replicates=200, seed=k)
        covered += res.low <= 0.0 <= res.high
    return covered / studies


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.usefixtures("one_blas_thread")
def test_interval_covers_a_zero_true_difference(seeds: int) -> None:
    # Seed and image noise are of similar size in this model (seed_sd/image_sd ~ 0.8), so an
    # interval that ignored either would cover well under 95%. 250 studies: sd ~1.4 points.
    coverage = _coverage(seeds, 250)
    assert coverage >= 0.90, f"S={seeds}: coverage {coverage:.3f}"


@pytest.mark.usefixtures("one_blas_thread")
def test_hierarchical_bootstrap_agrees_with_analytic_interval_at_30_seeds() -> None:
    rng = np.random.default_rng(7)
    y, a, b = _synthetic_study(rng, 30, 300, seed_sd=0.6, image_sd=2.0)
    res = compare(y, a, b, "accuracy", C, replicates=2000, seed=1)
    assert res.seed_sd > 0.3 * res.image_sd  # both components matter
    boot = hierarchical_bootstrap(y, a, b, "accuracy", C, replicates=2000, seed=1)
    width = res.high - res.low
    assert boot.estimate == pytest.approx(res.difference)
    assert abs(boot.low - res.low) < 0.1 * width and abs(boot.high - res.high) < 0.1 * width
    # Independent image draws per seed average the shared image effects away: too narrow.
    nested = hierarchical_bootstrap(y, a, b, "accuracy", C, replicates=500, seed=1,
                                    shared_images=False)
    assert nested.sd < 0.8 * boot.sd


# --- Holm and determinism --------------------------------------------------------------------


def test_holm_hand_computed() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    got = holm([0.01, np.nan, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, np.nan, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,)
    assert holm(np.array([[0.01, 0.02], [np.nan, 0.2]])).shape == (2, 2)


def test_deterministic_given_seed() -> None:
    rng = np.random.default_rng(8)
    y, a, b = _synthetic_study(rng, 3, 120, seed_sd=0.3, image_sd=1.0)
    first = compare(y, a, b, "macro_f1", C, replicates=300, seed=11)
    assert compare(y, a, b, "macro_f1", C, replicates=300, seed=11) == first
    other = compare(y, a, b, "macro_f1", C, replicates=300, seed=12)
    assert other.difference == first.difference and other.low != first.low
    assert (cell_estimate(y, a, "accuracy", C, replicates=300, seed=3)
            == cell_estimate(y, a, "accuracy", C, replicates=300, seed=3))
    assert (hierarchical_bootstrap(y, a, b, "accuracy", C, replicates=300, seed=3)
            == hierarchical_bootstrap(y, a, b, "accuracy", C, replicates=300, seed=3))


def test_intervals_match_the_hand_formulas_they_replaced() -> None:
    """The t interval is ``d ± t_df sqrt(v)`` and the probability-of-improvement interval is a
    percentile bootstrap over seeds; the numbers are pinned from the hand-written versions
    that scipy's ``t.interval`` and ``bootstrap`` replaced (same generator stream)."""
    y = np.repeat(np.arange(C), 10)
    rng = np.random.default_rng(9)
    a = np.where(rng.random((5, 40)) < 0.8, y, (y + 1) % C)
    b = np.where(rng.random((5, 40)) < 0.7, y, (y + 2) % C)
    res = compare(y, a, b, "accuracy", C, replicates=400, seed=1)
    half = sps.t.ppf(0.975, res.df) * math.hypot(res.seed_sd, res.image_sd)
    assert res.low == pytest.approx(res.difference - half, rel=1e-12)
    assert res.high == pytest.approx(res.difference + half, rel=1e-12)
    assert (res.low, res.high, res.p) == pytest.approx(
        (0.00775834808714379, 0.22224165191285614, 0.03740928416665705), rel=1e-12)
    assert (res.prob_improvement, res.prob_improvement_low, res.prob_improvement_high) == \
        pytest.approx((0.85075, 0.70475, 0.9618812499999997), rel=1e-12)


def test_seed_image_test_is_what_compare_computes() -> None:
    """The public test on per-seed values and a given image variance (what the replication
    simulation calls) gives compare's interval and p from compare's own parts, and the hand
    formulas: v_seed = var/S, Welch-Satterthwaite df, t on the sum."""
    y = np.repeat(np.arange(C), 10)
    rng = np.random.default_rng(9)
    a = np.where(rng.random((5, 40)) < 0.8, y, (y + 1) % C)
    b = np.where(rng.random((5, 40)) < 0.7, y, (y + 2) % C)
    res = compare(y, a, b, "accuracy", C, replicates=400, seed=1)
    diffs = (a == y).mean(axis=1) - (b == y).mean(axis=1)
    test = seed_image_test(diffs, res.image_sd**2)
    assert (test.estimate, test.low, test.high, test.p, test.df) == pytest.approx(
        (res.difference, res.low, res.high, res.p, res.df), rel=1e-12)
    v_seed = float(np.var(diffs, ddof=1)) / 5
    assert test.v_seed == pytest.approx(v_seed, rel=1e-12)
    total = v_seed + res.image_sd**2
    assert test.df == pytest.approx(total**2 * 4 / v_seed**2, rel=1e-12)
    assert test.p == pytest.approx(2 * sps.t.sf(abs(diffs.mean()) / math.sqrt(total), test.df))
    # No seed variance: infinite df (a z test on the image variance); none at all: exact.
    flat = seed_image_test([0.25, 0.25, 0.25], 0.125**2)
    assert flat.df == math.inf and flat.p == pytest.approx(2 * sps.norm.sf(2.0), rel=1e-9)
    assert seed_image_test([0.1, 0.1], 0.0).p == 0.0
    assert seed_image_test([0.0, 0.0], 0.0).p == 1.0
    one = seed_image_test([0.3], 0.01)  # one seed: a mean, no test
    assert one.estimate == 0.3 and math.isnan(one.p) and math.isnan(one.low)
    with pytest.raises(ValueError, match="at least one seed"):
        seed_image_test([], 0.01)


def test_compare_rejects_unpaired_cells() -> None:
    y = np.arange(8) % C
    with pytest.raises(ValueError, match="pair"):
        compare(y, np.stack([y] * 3), np.stack([y] * 2), "accuracy", C)
    with pytest.raises(ValueError, match="outside"):
        compare(y, np.stack([y + 1] * 3), np.stack([y] * 3), "accuracy", C)
