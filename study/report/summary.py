"""What a study's rows say: its cells, their final runs and chosen configurations, paired
comparisons between strategies, and which hyperparameters mattered."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from study.report.load import Results
from study.report.stats import holm
from study.space import SEARCHABLE, searched_names
from study.spec import SearchSpace
from wbc.layout import subset_percent
from wbc.metrics import mean_interval
from wbc.strategies import strategy_names

__all__ = ["COMPARISONS", "METRICS", "REPORT_ACCURACY", "Cell", "Report", "importances",
           "paired", "summarise"]

# The seed report's Table 1: test accuracy (%) of its three experiments (one run each, scored
# on the validation set that also picked the epoch).
REPORT_ACCURACY: dict[str, dict[str, float]] = {
    "scratch": {"WBC_100": 97.05, "WBC_50": 96.59, "WBC_10": 92.53, "WBC_1": 84.03},
    "pretrain": {"WBC_100": 97.57, "WBC_50": 95.78, "WBC_10": 93.06, "WBC_1": 84.32},
    "pretrain_aug": {"WBC_100": 97.63, "WBC_50": 96.47, "WBC_10": 93.69, "WBC_1": 82.93},
}
METRICS = (("test_accuracy", "accuracy"), ("test_macro_f1", "macro-F1"),
           ("test_balanced_accuracy", "balanced accuracy"))
COMPARISONS = (("pretrain", "scratch", "does CAM16 pretraining help?"),
               ("pretrain_aug", "pretrain", "does the mask-based augmentation help?"),
               ("pretrain_aug", "scratch", "both against scratch"),
               ("ssl", "scratch", "does pRCC self-supervised pretraining help?"),
               ("ssl_pretrain", "pretrain", "does pRCC SSL before CAM16 help?"),
               ("ssl", "pretrain", "pRCC SSL against CAM16 supervised"))


@dataclass
class Cell:
    subset: str
    strategy: str
    search_done: int = 0
    search_expected: int | None = None
    finals: pd.DataFrame = field(default_factory=pd.DataFrame)
    final_expected: int | None = None
    best: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.subset}-{self.strategy}"


@dataclass
class Report:
    results: Results
    cells: dict[tuple[str, str], Cell]
    subsets: list[str]
    strategies: list[str]
    missing: list[str]
    searched: tuple[str, ...] = SEARCHABLE  # the hyperparameters some cell searched


def _searched(spec: dict[str, Any], strategies: list[str], trials: pd.DataFrame
              ) -> tuple[str, ...]:
    """What the study searched: from its spec's space, or the searchable columns present."""
    space = spec.get("space")
    known = set(strategy_names())
    if isinstance(space, dict) and strategies and set(strategies) <= known:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in space.items()}
        try:
            return searched_names(SearchSpace(**fields), tuple(strategies))
        except (TypeError, ValueError):
            pass
    return tuple(n for n in SEARCHABLE if n in trials)


def _sort_subsets(subsets: Sequence[str]) -> list[str]:
    return sorted(set(subsets), key=lambda s: -(subset_percent(s) or 0))


def summarise(results: Results) -> Report:
    """Cells, their final rows and best configurations, and what is missing."""
    trials = results.trials
    searched = _searched(results.study.get("spec", {}),
                         list(results.study.get("spec", {}).get("strategies", [])), trials)
    spec = results.study.get("spec", {})
    subsets = _sort_subsets(list(spec.get("subsets", [])) or list(trials.get("subset", [])))
    known = list(strategy_names())
    strategies = list(spec.get("strategies", [])) or sorted(
        set(trials.get("strategy", [])), key=lambda s: (known.index(s) if s in known
                                                        else len(known), s))
    cells: dict[tuple[str, str], Cell] = {}
    missing = []
    for subset in subsets:
        for strategy in strategies:
            cell = Cell(subset, strategy, search_expected=spec.get("search_trials"),
                        final_expected=spec.get("final_seeds"))
            rows = trials[(trials["subset"] == subset) & (trials["strategy"] == strategy)] \
                if len(trials) else trials
            search = rows[rows["phase"] == "search"] if len(rows) else rows
            cell.search_done = len(search)
            if len(rows):
                cell.finals = rows[(rows["phase"] == "final")
                                   & (rows["status"] == "completed")].sort_values("seed")
            scored = search[search["val_macro_f1"].notna()] if len(search) else search
            if len(scored):
                best = scored.sort_values(["val_macro_f1", "trial_id"],
                                          ascending=[False, True]).iloc[0]
                cell.best = {k: best[k] for k in searched if k in best and _present(best[k])}
                cell.best["val_macro_f1"] = float(best["val_macro_f1"])
            wanted = cell.final_expected
            if not len(rows):
                missing.append(f"{cell.name}: no trial has finished")
            elif wanted is not None and len(cell.finals) < wanted:
                missing.append(f"{cell.name}: {len(cell.finals)} of {wanted} final seeds "
                               f"({cell.search_done} of {cell.search_expected} search trials)")
            cells[(subset, strategy)] = cell
    return Report(results, cells, subsets, strategies, missing, searched)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def paired(report: Report, metric: str = "test_accuracy") -> pd.DataFrame:
    """Per subset and comparison: mean difference over shared seeds, its interval, p (paired t)
    and Holm-adjusted p over every comparison in the table."""
    from scipy import stats

    rows = []
    for subset in report.subsets:
        for better, base, question in COMPARISONS:
            a = report.cells.get((subset, better))
            b = report.cells.get((subset, base))
            if a is None or b is None or not len(a.finals) or not len(b.finals):
                continue
            left = a.finals.set_index("seed")[metric]
            right = b.finals.set_index("seed")[metric]
            seeds = sorted(set(left.index) & set(right.index))
            diff = np.array([left[s] - right[s] for s in seeds], dtype=float)
            mean, low, high = mean_interval(diff)
            p = math.nan
            if len(diff) >= 2 and np.std(diff) > 0:
                p = float(stats.ttest_1samp(diff, 0.0).pvalue)
            elif len(diff) >= 2:
                p = 0.0 if abs(mean) > 0 else 1.0
            rows.append({"subset": subset, "comparison": f"{better} - {base}",
                         "question": question, "seeds": len(seeds), "difference": mean,
                         "low": low, "high": high, "p": p})
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p"].to_numpy())
        table["significant"] = table["p_holm"] < 0.05
    return table


def importances(report: Report) -> pd.DataFrame:
    """Which hyperparameters mattered, per strategy: fANOVA (Optuna's default evaluator, seeded)
    over the search trials of all subsets, each cell's objective turned into ranks within the
    cell so that WBC_1's scale does not drown WBC_100's."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    trials = report.results.trials
    rows = []
    for strategy in report.strategies:
        search = trials[(trials["phase"] == "search") & (trials["strategy"] == strategy)
                        & trials["val_macro_f1"].notna()].copy() if len(trials) else trials
        if len(search) < 4:
            continue
        search["rank"] = search.groupby("subset")["val_macro_f1"].rank(pct=True)
        names = [n for n in report.searched if n in search and search[n].notna().all()
                 and search[n].nunique() > 1]
        if not names:
            continue
        dists: dict[str, Any] = {}
        for n in names:
            if not pd.api.types.is_numeric_dtype(search[n]):
                dists[n] = CategoricalDistribution(sorted(search[n].unique()))
            else:
                dists[n] = FloatDistribution(float(search[n].min()), float(search[n].max()),
                                             log=n in ("lr", "weight_decay"))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize")
        for record in search.to_dict("records"):
            params = {n: (record[n] if isinstance(dists[n], CategoricalDistribution)
                          else float(record[n])) for n in names}
            study.add_trial(create_trial(params=params, distributions=dists,
                                         value=float(record["rank"])))
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        for n, score in scores.items():
            rows.append({"strategy": strategy, "parameter": n, "importance": float(score),
                         "trials": len(search)})
    return pd.DataFrame(rows)
