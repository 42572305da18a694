"""``benchmarks/replication_sim.py``: simulated studies follow the study's seed rules and its
verdicts (a large effect is strong and holds; no effect is rarely strong)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import replication_sim  # noqa: E402

from study.sequential import Plan  # noqa: E402


def _pool(effect: float, sd: float, rng: np.random.Generator, second_effect: float = 0.0
          ) -> replication_sim.Pool:
    """Two label budgets of 30 seeds: pretrain is scratch plus ``effect`` at the first,
    ``second_effect`` at the second; seed noise ``sd``, no image noise."""
    a = rng.normal(0.7, sd, (30, 1))
    first = np.hstack([a, a + effect + rng.normal(0, sd, (30, 1))])
    second = np.hstack([a, a + second_effect + rng.normal(0, sd, (30, 1))])
    return replication_sim.Pool(["WBC_100", "WBC_1"], ["scratch", "pretrain"],
                                [("pretrain", "scratch")], {"WBC_100": first, "WBC_1": second},
                                {}, Plan(3, 9, 3, 2.0, 6, 0.2))


def test_a_large_effect_is_strong_in_every_study_and_holds() -> None:
    rng = np.random.default_rng(0)
    pool = _pool(0.2, 0.02, rng, second_effect=-0.2)
    plan = Plan(3, 9, 3, 2.0, 6, 0.2)
    out = [replication_sim.replication(pool, plan, 3, rng) for _ in range(20)]
    assert all(o["strong"] == o["held"] == 6 and o["flips"] == 0 for o in out)
    verdicts, seeds = replication_sim.simulate(pool, plan, rng)
    assert verdicts[("WBC_100", "pretrain", "scratch")][0] == "strong"
    # Its difference is the effect (0.2); no look before 6 seeds may decide, so both budgets
    # (effects of +0.2 and -0.2) ran at least 6 seeds a cell.
    assert verdicts[("WBC_100", "pretrain", "scratch")][1] > 0.15
    assert seeds >= 2 * 6 * 2


def test_no_effect_is_rarely_strong() -> None:
    rng = np.random.default_rng(1)
    pool = _pool(0.0, 0.05, rng)
    plan = Plan(3, 9, 3, 2.0, 6, 0.2)
    words = [replication_sim.simulate(pool, plan, rng)[0][("WBC_1", "pretrain", "scratch")][0]
             for _ in range(200)]
    assert words.count("strong") <= 10  # alpha 0.05 over a table of 2, sequential: about 2.5%


def test_a_fixed_plan_runs_its_seeds_and_no_more() -> None:
    rng = np.random.default_rng(2)
    pool = _pool(0.0, 0.05, rng)
    _, seeds = replication_sim.simulate(pool, Plan(4, 4), rng)
    assert seeds == 2 * 4 * 2  # two budgets, four seeds, two strategies


def test_the_budget_table_is_judged_on_the_planned_seeds() -> None:
    """A budget effect shows in the budget table (strong when large), tested on the first
    planned seeds as the report does: a noisy smallest budget leaves it undecided at 3 seeds
    more often than at 6."""
    rng = np.random.default_rng(3)
    pool = _pool(0.0, 0.02, rng)
    pool.values["WBC_1"] = pool.values["WBC_1"] - 0.3  # WBC_100 is 30 points better
    pool.v_budget.update(scratch=0.0001, pretrain=0.0001)
    verdicts, _ = replication_sim.simulate(pool, Plan(3, 9, 3, 2.0, 6, 0.2), rng)
    assert verdicts[("budget", "scratch")][0] == "strong"
    assert verdicts[("budget", "scratch")][1] > 0.25
    out = replication_sim.replication(pool, Plan(3, 9, 3, 2.0, 6, 0.2), 3, rng)
    assert out["strong"] == out["held"] >= 6  # two strategies' budget effects, three studies
    # A 10-point effect with 8 points of seed noise at the smallest budget: 6 planned seeds
    # call it strong more often than 3 (2 degrees of freedom).
    noisy = _pool(0.0, 0.02, rng)
    noisy.values["WBC_1"] = rng.normal(0.6, 0.08, (30, 2))
    noisy.v_budget.update(scratch=0.0004, pretrain=0.0004)
    strong = {planned: sum(replication_sim.simulate(noisy, Plan(planned, 9, 3, 2.0, 6, 0.2),
                                                    rng)[0][("budget", "scratch")][0] == "strong"
                           for _ in range(200))
              for planned in (3, 6)}
    assert strong[6] > strong[3] + 20
    # Without the runs' budget variances the table is left out.
    assert not any(k[0] == "budget" for k in replication_sim.simulate(
        _pool(0.0, 0.02, rng), Plan(3, 3), rng)[0])
