"""Seeds spent where they decide: a group-sequential plan for a study's comparisons.

A study plans ``final_seeds`` final runs a cell. With ``max_final_seeds`` above that, a label
budget whose strategy comparisons are still undecided after the planned seeds gets
``seeds_per_look`` more seeds in every strategy cell (so that every comparison stays paired seed
by seed), and is looked at again, until each of its comparisons is decided, out of reach of the
budget, or the budget is spent. ``study.tune.search`` asks :func:`budget_open` after each look;
the report asks :func:`status` for every comparison, so both read the same rule.

Looking several times and stopping when a test comes out significant would inflate the error
rate; the looks are corrected by alpha spending (Lan and DeMets 1983) with the power family
``alpha * t**rho`` of Kim and DeMets (1987), ``t = seeds / max_final_seeds`` the information
fraction (rho = 3 spends little early, close to O'Brien-Fleming; rho = 1 close to Pocock). Look
``k`` tests at ``alpha * w_k``, ``w_k = t_k**rho - t_(k-1)**rho``, and the comparison's p-value is
``min_k p_k / w_k``: by the union bound its chance of falling below alpha under no difference is
at most ``sum_k alpha * w_k = alpha``, whatever the stopping rule did (conservative: the looks'
correlation is not used). Holm across each of the report's tables then works on these p-values
as on any others.

``min_decide_seeds`` keeps looks with fewer seeds from deciding: they spend no alpha (the first
look that may decide spends ``t**rho`` of it), so a comparison is not called on two or three
seeds whose spread happened to be small (a seed-variance estimate on 2 degrees of freedom): such
an early call overestimates the difference, and another run of the study does not repeat it.

The rule the searcher follows: a comparison is *decided* when its sequential p-value times the
number of comparisons in its table is below alpha (Bonferroni, so a decided comparison is strong
evidence under the report's Holm whatever the other rows say); *out of reach* when, taking its
difference and variances as they are now, even ``max_final_seeds`` seeds would decide it with a
chance below ``reach_chance`` (more seeds shrink only the seed part of the variance: the
reporting images stay the same; 0.5, the default, stops as soon as the projection falls short;
a lower chance stops only comparisons well short, a futility rule that costs no alpha);
otherwise it is *open* and its budget gets more seeds while any remain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as sps

__all__ = ["ALPHA", "Plan", "Status", "status"]

ALPHA = 0.05  # the report's level for "strong" (Holm) and "some" (unadjusted) evidence

DECIDED, OPEN, OUT_OF_REACH, BUDGET_SPENT, PLANNED = (
    "decided", "open", "out of reach", "budget spent", "planned seeds")


@dataclass(frozen=True)
class Plan:
    """When a comparison is looked at, and the share of alpha each look spends."""

    planned: int  # final_seeds: the first look
    most: int  # max_final_seeds: the last (== planned: one look, nothing added)
    step: int = 1  # seeds_per_look
    rho: float = 3.0  # spending_power
    decide_from: int = 0  # min_decide_seeds: no look with fewer seeds decides (0: any look)
    reach: float = 0.5  # reach_chance: out of reach below this chance of deciding

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Plan:
        """The plan of a spec as ``StudySpec.to_dict`` (or ``study.json``) gives it; a study
        from before sequential seeds has one look."""
        planned = int(spec.get("final_seeds") or 1)
        most = max(planned, int(spec.get("max_final_seeds") or 0))
        return cls(planned, most, max(1, int(spec.get("seeds_per_look") or 1)),
                   float(spec.get("spending_power") or 3.0),
                   int(spec.get("min_decide_seeds") or 0),
                   float(spec.get("reach_chance") or 0.5))

    @property
    def sequential(self) -> bool:
        return self.most > self.planned

    def looks(self) -> tuple[int, ...]:
        """Seeds at each look: the planned ones, then a step more each, the last at ``most``."""
        return (*range(self.planned, self.most, self.step), self.most)

    def decides(self, seeds: int) -> bool:
        """Whether a look at ``seeds`` seeds may decide (the last always may)."""
        return seeds >= min(self.decide_from, self.most)

    def weights(self) -> tuple[float, ...]:
        """Each look's share of alpha (they sum to 1; 0 for a look that may not decide)."""
        spent = [(n / self.most) ** self.rho if self.decides(n) else 0.0 for n in self.looks()]
        return tuple(b - a for a, b in zip([0.0, *spent[:-1]], spent, strict=True))

    def next_seeds(self, seeds: int) -> int:
        """Seeds of the look after one at ``seeds`` (``seeds`` when it was the last)."""
        return next((n for n in self.looks() if n > seeds), seeds)


@dataclass(frozen=True)
class Status:
    """Where one comparison stands after the seeds it has."""

    seeds: int  # the seeds both cells ran
    seeds_at: tuple[int, ...]  # the seeds of each look taken (the plan's, the last at
    # ``seeds``), up to the one that decided it
    p: float  # sequential p-value: min over looks of p / (that look's share of alpha)
    decided_at: int | None  # seeds at the first look that decided it
    reason: str  # decided, open, out of reach, budget spent, planned seeds

    @property
    def looks(self) -> int:
        """Looks taken."""
        return len(self.seeds_at)

    def why(self) -> str:
        """The stop reason in words, for the report."""
        if self.decided_at is not None:
            return f"decided at {self.decided_at} seeds"
        return {OUT_OF_REACH: "out of reach of the seed budget", BUDGET_SPENT:
                "seed budget spent", PLANNED: "planned seeds", OPEN: "stopped before "
                "deciding (study interrupted, or a look still to come)"}[self.reason]


def _reachable(comparison: Any, plan: Plan, family: int) -> bool:
    """Whether ``max_final_seeds`` seeds would decide it with a chance of at least
    ``reach_chance``, were its difference and variances what they are now (normal
    approximation at the last look's share of alpha: the chance is ``Phi(z - z_needed)``,
    ``z`` the difference over its projected standard error)."""
    seeds = int(comparison.seeds)
    if seeds < 2 or not math.isfinite(comparison.seed_sd):
        return True  # nothing to project from yet
    v_seed_run = comparison.seed_sd ** 2 * seeds
    variance = v_seed_run / plan.most + comparison.image_sd ** 2
    if variance <= 0:
        return comparison.difference != 0
    z = abs(comparison.difference) / math.sqrt(variance)
    needed = float(sps.norm.isf(ALPHA * plan.weights()[-1] / (2.0 * family)))
    return float(sps.norm.cdf(z - needed)) >= plan.reach


def status(compare_at: Callable[[int], Any], seeds: int, plan: Plan, family: int) -> Status:
    """Take every look of ``plan`` a comparison with ``seeds`` seeds has reached.

    ``compare_at(n)`` gives the comparison on its first ``n`` seeds (anything with ``p``,
    ``seeds``, ``difference``, ``seed_sd`` and ``image_sd``: a ``study.report.stats.Comparison``);
    ``family`` is the number of comparisons its table corrects for."""
    weights, looks = plan.weights(), plan.looks()
    p_seq, decided_at, last = math.inf, None, None
    used_at: list[int] = []
    for k, n in enumerate(looks):
        if k and looks[k - 1] >= seeds:
            break
        # The last look takes every seed there is (a plan of one look: all of them).
        used = seeds if k == len(looks) - 1 else min(n, seeds)
        last = compare_at(used)
        used_at.append(used)
        if math.isfinite(last.p) and weights[k] > 0:
            p_seq = min(p_seq, last.p / weights[k])
        if p_seq * family < ALPHA:
            decided_at = used
            break  # decided: a comparison stops at the look that decides it
    p = min(1.0, p_seq) if math.isfinite(p_seq) else math.nan
    if decided_at is not None:
        reason = DECIDED
    elif not plan.sequential:
        reason = PLANNED
    elif seeds >= plan.most:
        reason = BUDGET_SPENT
    elif last is not None and not _reachable(last, plan, family):
        reason = OUT_OF_REACH
    else:
        reason = OPEN
    return Status(seeds, tuple(used_at), p, decided_at, reason)


def budget_open(statuses: Sequence[Status]) -> bool:
    """Whether a label budget gets another look: one of its comparisons is still open."""
    return any(s.reason == OPEN for s in statuses)
