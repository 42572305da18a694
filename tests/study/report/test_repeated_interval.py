"""The comparison table's interval under sequential seeds: it agrees with the sequential p and
keeps its coverage whatever the looks did."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
from scipy import stats as sps

from study.report.summary import repeated_interval
from study.sequential import Plan, status


def _looks(diffs: np.ndarray) -> Callable[[int], SimpleNamespace]:
    """The comparison on the first n seeds of per-seed differences (no image variance)."""

    def at(n: int) -> SimpleNamespace:
        d = diffs[:n]
        return SimpleNamespace(p=float(sps.ttest_1samp(d, 0.0).pvalue), seeds=n,
                               difference=float(d.mean()), seed_sd=float(sps.sem(d)),
                               image_sd=0.0, df=n - 1.0)
    return at


def test_it_excludes_zero_exactly_when_the_sequential_p_is_below_alpha() -> None:
    plan = Plan(6, 9, step=3, rho=2.0, decide_from=6, reach=0.2)
    rng = np.random.default_rng(0)
    agree, some, naive_disagree = 0, 0, 0
    runs = 600
    for _ in range(runs):
        diffs = rng.normal(rng.choice([0.0, 0.5, 1.0]), 1.0, size=9)
        at = _looks(diffs)
        st = status(at, 9, plan, family=1)
        bounds = repeated_interval(st, at, plan)
        assert bounds is not None and bounds[0] <= bounds[1]
        excludes = bounds[0] > 0 or bounds[1] < 0
        agree += excludes == (st.p < 0.05)
        some += st.p < 0.05
        last = at(st.seeds_at[-1])
        half = float(sps.t.isf(0.025, last.df)) * last.seed_sd
        naive_disagree += ((abs(last.difference) > half) != (st.p < 0.05))
    assert agree == runs
    assert 0.2 * runs < some < 0.9 * runs  # both kinds of outcome were tried
    assert naive_disagree > 0  # the plain 95% interval of the last look does disagree


def test_it_covers_the_true_difference_at_least_95_percent_of_the_time() -> None:
    plan = Plan(3, 12, step=3, rho=1.0)  # four looks, early ones spending much alpha
    rng = np.random.default_rng(1)
    runs, covered, naive_covered = 3000, 0, 0
    for _ in range(runs):
        diffs = rng.normal(0.3, 1.0, size=12)
        at = _looks(diffs)
        st = status(at, 12, plan, family=1)
        low, high = repeated_interval(st, at, plan)
        covered += low <= 0.3 <= high
        # The alternative this replaces: the last look's plain 95% interval.
        last = at(st.seeds_at[-1])
        half = float(sps.t.isf(0.025, last.df)) * last.seed_sd
        naive_covered += abs(last.difference - 0.3) <= half
    margin = 3 * math.sqrt(0.05 * 0.95 / runs)
    assert covered / runs >= 0.95 - margin
    assert naive_covered / runs < covered / runs


def test_a_one_look_plan_or_a_look_that_may_not_decide() -> None:
    diffs = np.array([0.3, 0.1, 0.5, 0.2, 0.4, 0.3])
    at = _looks(diffs)
    plan = Plan(6, 6)
    low, high = repeated_interval(status(at, 6, plan, family=1), at, plan)
    c = at(6)
    half = float(sps.t.isf(0.025, 5.0)) * c.seed_sd
    assert math.isclose(low, c.difference - half) and math.isclose(high, c.difference + half)
    early = Plan(3, 9, step=3, decide_from=6)
    assert repeated_interval(status(at, 3, early, family=1), at, early) is None
