"""The sequential seed plan: looks, alpha spending, stop reasons and the error rate it keeps."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from study.sequential import (
    BUDGET_SPENT,
    DECIDED,
    OPEN,
    OUT_OF_REACH,
    PLANNED,
    Plan,
    budget_open,
    status,
)


def _comparison(p: float, seeds: int, difference: float = 0.05, seed_sd: float = 0.01,
                image_sd: float = 0.01) -> SimpleNamespace:
    return SimpleNamespace(p=p, seeds=seeds, difference=difference, seed_sd=seed_sd,
                           image_sd=image_sd)


def test_looks_and_their_shares_of_alpha() -> None:
    plan = Plan(planned=3, most=6, step=1, rho=3.0)
    assert plan.looks() == (3, 4, 5, 6)
    weights = plan.weights()
    assert math.isclose(sum(weights), 1.0)
    assert weights[0] == pytest.approx(0.125)  # (3/6)^3: little spent early
    assert Plan(3, 7, step=3).looks() == (3, 6, 7)  # the last look at the budget
    assert Plan(3, 6).next_seeds(3) == 4 and Plan(3, 6).next_seeds(6) == 6
    one = Plan.of({"final_seeds": 3})  # a study from before sequential seeds
    assert not one.sequential and one.looks() == (3,) and one.weights() == (1.0,)


def test_a_one_look_plan_keeps_the_plain_p_value_over_every_seed() -> None:
    asked: list[int] = []

    def at(n: int) -> SimpleNamespace:
        asked.append(n)
        return _comparison(0.03, n)

    st = status(at, 4, Plan(3, 3), family=1)
    assert asked == [4]  # the one look takes every seed there is
    assert st.p == 0.03 and st.reason == DECIDED and st.decided_at == 4


def test_stop_reasons() -> None:
    plan = Plan(3, 6, step=3)
    decided = status(lambda n: _comparison(1e-6, n), 3, plan, family=12)
    assert decided.reason == DECIDED and decided.decided_at == 3
    assert decided.why() == "decided at 3 seeds"
    # A small difference against image noise that more seeds cannot shrink: out of reach.
    hopeless = status(lambda n: _comparison(0.4, n, difference=0.001, image_sd=0.05), 3, plan,
                      family=12)
    assert hopeless.reason == OUT_OF_REACH
    # A large difference whose seed noise more seeds would beat: open, more seeds.
    promising = status(lambda n: _comparison(0.02, n, difference=0.10, seed_sd=0.03,
                                             image_sd=0.005), 3, plan, family=12)
    assert promising.reason == OPEN and budget_open([hopeless, promising])
    assert not budget_open([hopeless, decided])
    spent = status(lambda n: _comparison(0.02, n), 6, plan, family=12)
    assert spent.reason == BUDGET_SPENT and spent.looks == 2
    assert spent.p == pytest.approx(min(0.02 / 0.125, 0.02 / 0.875))
    assert status(lambda n: _comparison(0.2, n), 3, Plan(3, 3), family=2).reason == PLANNED


def _brownian_p_values(rng: np.random.Generator, looks: tuple[int, ...], effect: float
                       ) -> list[float]:
    """Two-sided p-values of a z test at each look of a mean of unit-variance seeds."""
    draws = rng.normal(effect, 1.0, looks[-1])
    return [float(2 * sps.norm.sf(abs(draws[:n].mean()) * math.sqrt(n))) for n in looks]


def test_the_sequential_p_value_keeps_alpha_where_naive_looks_do_not() -> None:
    plan = Plan(3, 12, step=1, rho=1.0)  # ten looks, spent evenly: the hard case for naivety
    rng = np.random.default_rng(0)
    runs, sequential, naive = 4000, 0, 0
    for _ in range(runs):
        ps = _brownian_p_values(rng, plan.looks(), effect=0.0)
        by_look = iter(ps)
        st = status(lambda n, it=by_look: _comparison(next(it), n), plan.most, plan, family=1)
        sequential += st.p < 0.05
        naive += min(ps) < 0.05
    # Under no difference: the corrected test stays at or below alpha (with Monte Carlo room),
    # testing every look at 0.05 rejects far more often.
    assert sequential / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    assert naive / runs > 0.10
    # And it still finds a real difference.
    found = 0
    for _ in range(500):
        ps = iter(_brownian_p_values(rng, plan.looks(), effect=1.0))
        found += status(lambda n, it=ps: _comparison(next(it), n), plan.most, plan,
                        family=1).p < 0.05
    assert found / 500 > 0.7


def test_looks_before_min_decide_seeds_spend_no_alpha_and_decide_nothing() -> None:
    plan = Plan(3, 9, step=3, rho=2.0, decide_from=6)
    assert plan.weights() == pytest.approx((0.0, (6 / 9) ** 2, 1 - (6 / 9) ** 2))
    assert Plan.of({"final_seeds": 3, "max_final_seeds": 9, "seeds_per_look": 3,
                    "spending_power": 2.0, "min_decide_seeds": 6}) == plan
    clear = _comparison(1e-9, 3, difference=0.2)
    early = status(lambda n: clear, 3, plan, family=12)
    # Three seeds, however clear: not decided, and its budget gets its next look.
    assert early.decided_at is None and early.reason == OPEN and budget_open([early])
    later = status(lambda n: _comparison(1e-9, n, difference=0.2), 6, plan, family=12)
    assert later.reason == DECIDED and later.decided_at == 6 and later.looks == 2
    assert later.p == pytest.approx(1e-9 / (6 / 9) ** 2)
    # A bound above the budget leaves the last look to decide (a plan always can).
    assert Plan(3, 6, step=3, decide_from=50).weights() == (0.0, 1.0)


def test_reach_chance_gives_up_only_on_comparisons_well_short() -> None:
    family, seed_sd, image_sd = 12, 0.01, 0.01
    plan = Plan(3, 9, step=3, rho=2.0)
    needed = float(sps.norm.isf(0.05 * plan.weights()[-1] / (2 * family)))
    projected_sd = math.sqrt(seed_sd**2 * 3 / 9 + image_sd**2)
    short = (needed - 0.3) * projected_sd  # 9 seeds would decide it with a chance of 38%

    def at(n: int) -> SimpleNamespace:
        return _comparison(0.01, n, difference=short, seed_sd=seed_sd, image_sd=image_sd)

    assert status(at, 3, plan, family).reason == OUT_OF_REACH  # 0.5: short is out
    patient = Plan(3, 9, step=3, rho=2.0, reach=0.2)
    assert status(at, 3, patient, family).reason == OPEN
    far = (needed - 1.5) * projected_sd  # a chance of 7%: out of reach at 0.2 too
    assert status(lambda n: _comparison(0.1, n, difference=far, seed_sd=seed_sd,
                                        image_sd=image_sd), 3, patient, family).reason \
        == OUT_OF_REACH


def test_alpha_is_kept_when_early_looks_may_not_decide() -> None:
    plan = Plan(3, 12, step=1, rho=1.0, decide_from=6)
    rng = np.random.default_rng(1)
    runs, rejected = 4000, 0
    for _ in range(runs):
        ps = iter(_brownian_p_values(rng, plan.looks(), effect=0.0))
        rejected += status(lambda n, it=ps: _comparison(next(it), n), plan.most, plan,
                           family=1).p < 0.05
    assert rejected / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
