"""Which seed rules give verdicts that replicate? Seed plans compared by resampling real seeds.

A replication benchmark (``replication.py``) measures one seed plan with three studies: 35
minutes on the quick preset, and one outcome of a random process. This asks the same question
of many plans at once, on seeds that were really run: it pools the final seeds of finished,
independent runs of one spec (``--runs``), label budget by label budget, each seed keeping the
values of every strategy it trained (so comparisons stay paired), and then simulates studies:

- a simulated study draws seeds for each label budget from that pool (with replacement), looks
  at its strategy comparisons as ``study.sequential`` does (the same ``Plan``, ``status`` and
  stop rules, a t test with the seed variance and the image variance the runs' reports measured,
  Welch-Satterthwaite degrees of freedom), adds seeds while a comparison is open, and ends with
  Holm over the table: strong, some or none for every comparison;
- and its label-budget table as the report makes it: per strategy, the largest budget minus the
  smallest on the first planned seeds, one look, Holm over the strategies (a budget's seeds are
  drawn independently of another's, so the pairing by seed number that the report uses across
  budgets is not kept: the runs share nothing across budgets but a seed's number);
- ``--k`` simulated studies make one replication: it passes when every strong verdict of each
  study, the budget table's included, is at least "some", with the same sign, in every other
  (the issue's criterion, as ``replication.py`` counts it).

It prints, per plan: the share of replications that pass, the strong verdicts per study, the
share of strong verdicts that hold, and the seeds a study spends (the trials it costs).

    python benchmarks/replication_sim.py --runs R/seed0 R/seed1 R/seed2 --sims 2000

What it cannot say: the pool is what the runs drew (9 to 27 seeds a label budget; a seed two
runs share is counted once), so a tail the runs never drew is not in it; the reporting images are the runs' own, whose noise is in
every interval but is the same in every simulated study.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import harness
import numpy as np

from study.report.load import load_results
from study.report.stats import holm, seed_image_test
from study.report.summary import (
    COMPARISONS,
    budget_effects,
    compare_runs,
    paired_runs,
    summarise,
)
from study.sequential import ALPHA, Plan, budget_open, status

METRIC = "test_macro_f1"


@dataclass(frozen=True)
class Look:
    """A comparison on the first seeds drawn: what ``study.sequential.status`` reads."""

    seeds: int
    difference: float
    seed_sd: float
    image_sd: float
    p: float


def look(diffs: np.ndarray, v_img: float) -> Look:
    """The report's test (``study.report.stats.seed_image_test``) on per-seed differences."""
    test = seed_image_test(diffs, v_img)
    return Look(diffs.size, test.estimate, math.sqrt(test.v_seed), math.sqrt(v_img), test.p)


@dataclass
class Pool:
    """Per label budget: one row per (run, seed) with every strategy's metric value."""

    subsets: list[str]
    strategies: list[str]
    pairs: list[tuple[str, str]]
    values: dict[str, np.ndarray]  # subset -> (units, strategies)
    v_img: dict[tuple[str, str, str], float]  # (subset, a, b) -> image variance of the mean
    plan: Plan  # the runs' own seed plan (the first run's)
    # strategy -> image variance of its label-budget effect (largest minus smallest budget);
    # empty: the budget table is left out
    v_budget: dict[str, float] = field(default_factory=dict)


def pool(folders: list[Path]) -> Pool:
    """The seeds of every run, budget by budget, and each comparison's image variance (the
    mean over runs of what its report's comparison measured). A seed two runs share (the same
    seed of the same spec: the same run) is counted once."""
    reports = [summarise(load_results(f)) for f in folders]
    first = reports[0]
    pairs = [(a, b) for a, b, _ in COMPARISONS if a in first.strategies and b in first.strategies]
    values: dict[str, list[list[float]]] = {s: [] for s in first.subsets}
    seen: dict[str, set[int]] = {s: set() for s in first.subsets}
    v_img: dict[tuple[str, str, str], list[float]] = {}
    v_budget: dict[str, list[float]] = {}
    for report in reports:
        for subset in first.subsets:
            cells = [report.cells[(subset, s)].finals.set_index("seed") for s in first.strategies]
            seeds = sorted(set.intersection(*(set(c.index) for c in cells)) - seen[subset])
            seen[subset] |= set(seeds)
            values[subset] += [[float(c.loc[s, METRIC]) for c in cells] for s in seeds]
            targets = report.reporting.targets if report.reporting else None
            for a, b in pairs:
                _, pa, pb, _ = paired_runs(report.cells[(subset, a)], report.cells[(subset, b)],
                                          METRIC)
                if pa is None or pb is None or targets is None:
                    continue
                c = compare_runs(targets, pa, pb, "macro_f1")
                v_img.setdefault((subset, a, b), []).append(c.image_sd ** 2)
        effects = budget_effects(report)
        for row in effects.itertuples() if len(effects) else ():
            if row.images_counted:
                v_budget.setdefault(str(row.strategy), []).append(float(row.image_sd) ** 2)
    return Pool(first.subsets, first.strategies, pairs,
                {s: np.array(v) for s, v in values.items()},
                {k: float(np.mean(v)) for k, v in v_img.items()}, first.plan,
                {k: float(np.mean(v)) for k, v in v_budget.items()})


def _budget_verdicts(p: Pool, drawn: dict[str, np.ndarray], planned: int
                     ) -> dict[Any, tuple[str, float]]:
    """The label-budget table as the report makes it: per strategy, the largest budget minus
    the smallest on the first ``planned`` seeds, one look, Holm over the strategies."""
    if not p.v_budget or len(p.subsets) < 2:
        return {}
    high, low = drawn[p.subsets[0]], drawn[p.subsets[-1]]
    rows = []
    for i, strategy in enumerate(p.strategies):
        if strategy not in p.v_budget:
            continue
        d = high[:planned, i] - low[:planned, i]
        rows.append((("budget", strategy), look(d, p.v_budget[strategy]).p, float(d.mean())))
    return _words(rows)


def _words(rows: list[tuple[Any, float, float]]) -> dict[Any, tuple[str, float]]:
    """Holm over a table's rows: strong, some or none, with each row's difference."""
    p_values = np.array([r[1] for r in rows], dtype=float)
    adjusted = holm(np.nan_to_num(p_values, nan=1.0))
    return {key: ("strong" if adj < ALPHA else "some" if pv < ALPHA else "none", diff)
            for (key, pv, diff), adj in zip(rows, adjusted, strict=True)}


def simulate(p: Pool, plan: Plan, rng: np.random.Generator
             ) -> tuple[dict[Any, tuple[str, float]], int]:
    """One study: every comparison's verdict and sign, and the seeds it ran (per cell)."""
    family = len(p.pairs) * len(p.subsets)
    index = {s: i for i, s in enumerate(p.strategies)}
    rows, seeds_run, by_subset = [], 0, {}
    for subset in p.subsets:
        units = p.values[subset]
        drawn = units[rng.integers(0, len(units), plan.planned)]
        while True:
            looks = []
            for a, b in p.pairs:
                diffs = drawn[:, index[a]] - drawn[:, index[b]]
                v = p.v_img.get((subset, a, b), 0.0)
                looks.append(status(lambda n, d=diffs, v=v: look(d[:n], v), len(drawn), plan,
                                    family))
            if budget_open(looks) and len(drawn) < plan.most:
                more = plan.next_seeds(len(drawn)) - len(drawn)
                drawn = np.vstack([drawn, units[rng.integers(0, len(units), more)]])
                continue
            break
        seeds_run += len(drawn) * len(p.strategies)
        by_subset[subset] = drawn
        for (a, b), st in zip(p.pairs, looks, strict=True):
            used = st.decided_at or len(drawn)
            d = drawn[:used, index[a]] - drawn[:used, index[b]]
            rows.append(((subset, a, b), st.p, float(d.mean())))
    return {**_words(rows), **_budget_verdicts(p, by_subset, plan.planned)}, seeds_run


def replication(p: Pool, plan: Plan, k: int, rng: np.random.Generator) -> dict[str, float]:
    """``k`` simulated studies: whether every strong verdict holds (at least some, same sign)
    in every other, and what they cost."""
    studies = [simulate(p, plan, rng) for _ in range(k)]
    strong = held = flips = 0
    for i, (verdicts, _) in enumerate(studies):
        for key, (word, diff) in verdicts.items():
            if word != "strong":
                continue
            strong += 1
            others = [s[0][key] for j, s in enumerate(studies) if j != i]
            held += all(w in ("strong", "some") and np.sign(d) == np.sign(diff)
                        for w, d in others)
            flips += any(w == "strong" and np.sign(d) != np.sign(diff) for w, d in others)
    return {"strong": strong, "held": held, "flips": flips,
            "trials": float(np.mean([s[1] for s in studies]))}


# Plans to compare, as changes to the runs' own plan.
_SEQ = {"planned": 3, "most": 9, "step": 3, "rho": 2.0, "decide_from": 6, "reach": 0.2}
DESIGNS = {
    "the runs' own plan": {},
    "3-9, decide from 6, reach 0.2 (t^2)": dict(_SEQ),
    "3-9, decide at 9 only (reach 0.2)": {**_SEQ, "decide_from": 9},
    "3-9, decide at 9 only (reach 0.05)": {**_SEQ, "decide_from": 9, "reach": 0.05},
    "3-9, decide from 6, reach 0.05": {**_SEQ, "reach": 0.05},
    "3-9, decide from 3 (reach 0.5)": {**_SEQ, "decide_from": 0, "reach": 0.5},
    "6-9, decide from 6, reach 0.2 (t^2)": {**_SEQ, "planned": 6},
    "fixed 6 seeds": {"planned": 6, "most": 6},
    "fixed 9 seeds": {"planned": 9, "most": 9},
    "3-12, decide at 12 only (reach 0.2)": {**_SEQ, "most": 12, "decide_from": 12},
    "6-12, decide from 6, reach 0.2 (t^2)": {**_SEQ, "planned": 6, "most": 12},
    "fixed 12 seeds": {"planned": 12, "most": 12},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True,
                        help="finished, independent runs of one spec")
    parser.add_argument("--sims", type=int, default=1000, help="replications per plan")
    parser.add_argument("--k", type=int, default=3, help="studies per replication")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    p = pool(args.runs)
    base = p.plan
    print(f"{harness.machine()}; the runs' plan: {base}; pooled seeds per budget: "
          + ", ".join(f"{s} {len(v)}" for s, v in p.values.items()), flush=True)
    figures = {}
    for name, change in DESIGNS.items():
        plan = replace(base, **change)
        rng = np.random.default_rng(args.seed)
        out = [replication(p, plan, args.k, rng) for _ in range(args.sims)]
        passed = float(np.mean([o["strong"] == o["held"] for o in out]))
        strong = sum(o["strong"] for o in out)
        row = {"plan": plan.__dict__, "passed": passed,
               "strong_per_study": strong / (args.sims * args.k),
               "held": sum(o["held"] for o in out) / max(strong, 1),
               "flips": float(np.mean([o["flips"] > 0 for o in out])),
               "trials_per_study": float(np.mean([o["trials"] for o in out]))}
        figures[name] = row
        print(f"{name:50s} passes {passed:5.1%}  strong/study {row['strong_per_study']:4.1f}  "
              f"held {row['held']:5.1%}  flips {row['flips']:4.1%}  "
              f"trials/study {row['trials_per_study']:5.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"runs": [str(r) for r in args.runs], "sims": args.sims,
                                         "k": args.k, "seed": args.seed,
                                         "provenance": harness.provenance(),
                                         "designs": figures}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
