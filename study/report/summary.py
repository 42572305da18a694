"""What a study's rows say: its cells, their final runs and chosen configurations, the reporting
split they were scored on, paired comparisons between strategies and between label budgets, and
which hyperparameters mattered.

Every interval and test here includes two sources of variance: the seeds (training randomness)
and the sampling of the reporting images (``study.report.stats``, from the per-image predictions
each final run records). A study recorded before the runs kept their predictions falls back to
a Student-t interval over seeds alone, and says so.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from study.report.load import Results
from study.report.stats import Comparison, cell_estimate, compare, holm
from study.results import failed_trials
from study.sequential import ALPHA, Plan, Status, status
from study.space import SEARCHABLE, searched_names
from study.spec import SearchSpace, cell_search_trials
from wbc.datasets.layout import WBC_CLASSES, subset_percent
from wbc.metrics import mean_interval
from wbc.strategies import strategy_names

__all__ = ["COMPARISONS", "METRICS", "REPORT_ACCURACY", "Cell", "Estimate", "Report",
           "Reporting", "budget_effects", "cell_estimate_of", "compare_runs", "importances",
           "paired", "paired_runs", "repeated_interval", "summarise"]

# The seed report's Table 1: test accuracy (%) of its three experiments (one run each, scored
# on the validation set that also picked the epoch).
REPORT_ACCURACY: dict[str, dict[str, float]] = {
    "scratch": {"WBC_100": 97.05, "WBC_50": 96.59, "WBC_10": 92.53, "WBC_1": 84.03},
    "pretrain": {"WBC_100": 97.57, "WBC_50": 95.78, "WBC_10": 93.06, "WBC_1": 84.32},
    "pretrain_aug": {"WBC_100": 97.63, "WBC_50": 96.47, "WBC_10": 93.69, "WBC_1": 82.93},
}
# Macro-F1 first: it is the objective, and accuracy rewards always saying "Neutrophil".
METRICS = (("test_macro_f1", "macro-F1"), ("test_balanced_accuracy", "balanced accuracy"),
           ("test_accuracy", "accuracy"))
COMPARISONS = (("pretrain", "scratch", "does CAM16 pretraining help?"),
               ("pretrain_aug", "pretrain", "does the mask-based augmentation help?"),
               ("pretrain_aug", "scratch", "both against scratch"),
               ("ssl", "scratch", "does pRCC self-supervised pretraining help?"),
               ("ssl_pretrain", "pretrain", "does pRCC SSL before CAM16 help?"),
               ("ssl", "pretrain", "pRCC SSL against CAM16 supervised"),
               ("pretrain_aug_predicted", "pretrain",
                "does the augmentation help with masks for every image?"),
               ("pretrain_aug_predicted", "pretrain_aug",
                "predicted masks for every image against the given ones"),
               ("ssl_wbc", "scratch",
                "does self-supervised pretraining on the study's own images help?"),
               ("ssl_wbc", "pretrain", "in-domain SSL against CAM16 supervised"))
REPLICATES = 2000  # bootstrap replicates of the reporting images per interval
TARGET = 0.005  # half a point on the 0-1 scale: the difference the power line asks about


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

    def predictions(self) -> np.ndarray | None:
        """(seeds, images) predictions of the final runs on the reporting split, or None."""
        if not len(self.finals) or "test_predictions" not in self.finals:
            return None
        runs = self.finals["test_predictions"]
        if runs.isna().any():
            return None
        try:
            return np.array([list(r) for r in runs], dtype=np.int64)
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Reporting:
    """The split every figure is scored on, as the rows saw it."""

    name: str
    n: int
    support: dict[str, int]  # images per class
    targets: np.ndarray | None  # the true classes in the runs' order, when recorded

    @property
    def majority(self) -> str:
        return max(self.support, key=lambda c: self.support[c])

    def majority_scores(self) -> dict[str, float]:
        """What always answering the commonest class scores: accuracy, macro-F1 (one class
        at F1 2p/(1+p), the others 0) and balanced accuracy (one present class of K)."""
        if not self.n:
            return {}
        share = self.support[self.majority] / self.n
        present = sum(1 for v in self.support.values() if v)
        return {"test_accuracy": share, "test_macro_f1": 2 * share / (1 + share) / len(
            self.support), "test_balanced_accuracy": 1 / max(present, 1)}


@dataclass
class Report:
    results: Results
    cells: dict[tuple[str, str], Cell]
    subsets: list[str]
    strategies: list[str]
    missing: list[str]
    searched: tuple[str, ...] = SEARCHABLE  # the hyperparameters some cell searched
    reporting: Reporting | None = None
    # Intervals computed once: tables, the terminal and the figures ask for the same cells.
    estimates: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def plan(self) -> Plan:
        """The study's seed plan: when its comparisons were looked at (``study.sequential``)."""
        return Plan.of(self.results.study.get("spec", {}))


@dataclass(frozen=True)
class Estimate:
    """A cell's figure: the mean over its final seeds and an interval."""

    mean: float
    low: float
    high: float
    seeds: int
    images_counted: bool  # the interval covers the reporting images' sampling too


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


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _reporting(trials: pd.DataFrame) -> Reporting | None:
    """The reporting split from the finished rows: its targets when recorded, else the class
    counts from a confusion matrix (its rows are the true classes)."""
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    if not len(done) or "test_confusion_matrix" not in done:
        return None
    row = done.iloc[0]
    name = str(row.get("reporting_split") or "the reporting split")
    targets = row.get("test_targets") if "test_targets" in done else None
    if targets is not None and not (isinstance(targets, float) and math.isnan(targets)):
        labels = np.asarray(list(targets), dtype=np.int64)
        counts = np.bincount(labels, minlength=len(WBC_CLASSES))
        return Reporting(name, int(labels.size), dict(zip(WBC_CLASSES, map(int, counts),
                                                          strict=True)), labels)
    matrix = np.array([list(r) for r in row["test_confusion_matrix"]])
    support = dict(zip(WBC_CLASSES, map(int, matrix.sum(axis=1)), strict=True))
    return Reporting(name, int(matrix.sum()), support, None)


def _cell(trials: pd.DataFrame, spec: dict[str, Any], subset: str, strategy: str,
          searched: tuple[str, ...]) -> Cell:
    cell = Cell(subset, strategy, search_expected=cell_search_trials(spec) or None,
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
        best = scored.sort_values(["val_macro_f1", "trial_id"], ascending=[False, True]).iloc[0]
        cell.best = {k: best[k] for k in searched if k in best and _present(best[k])}
        cell.best["val_macro_f1"] = float(best["val_macro_f1"])
        cell.best["trial_id"] = best["trial_id"]
    return cell


def _failures(trials: pd.DataFrame) -> list[str]:
    """One line per cell with failed trials: how many, and the last line of an error."""
    return [f"{cell}: {n} trial(s) failed" + (f" ({error[:200]})" if error else "")
            for cell, (n, error) in failed_trials(trials).items()]


def summarise(results: Results) -> Report:
    """Cells, their final rows and best configurations, the reporting split, what is missing."""
    trials = results.trials
    spec = results.study.get("spec", {})
    searched = _searched(spec, list(spec.get("strategies", [])), trials)
    subsets = _sort_subsets(list(spec.get("subsets", [])) or list(trials.get("subset", [])))
    known = list(strategy_names())
    strategies = list(spec.get("strategies", [])) or sorted(
        set(trials.get("strategy", [])), key=lambda s: (known.index(s) if s in known
                                                        else len(known), s))
    cells: dict[tuple[str, str], Cell] = {}
    missing = []
    for subset in subsets:
        for strategy in strategies:
            cell = _cell(trials, spec, subset, strategy, searched)
            wanted = cell.final_expected
            if not cell.search_done and not len(cell.finals):
                missing.append(f"{cell.name}: no trial has finished")
            elif wanted is not None and len(cell.finals) < wanted:
                missing.append(f"{cell.name}: {len(cell.finals)} of {wanted} final seeds "
                               f"({cell.search_done} of {cell.search_expected} search trials)")
            cells[(subset, strategy)] = cell
    missing += _failures(trials)
    for fingerprint, n in results.set_aside.items():
        missing.append(f"{n} trial(s) ran on other data (fingerprint {fingerprint[:12]}, before "
                       "the data changed and the study was resumed with --allow-data-change) "
                       "and are left out of every table and figure")
    return Report(results, cells, subsets, strategies, missing, searched,
                  _reporting(trials) if len(trials) else None)


def cell_estimate_of(report: Report, cell: Cell, metric: str) -> Estimate:
    """A cell's mean over its final seeds, with an interval for the seeds and the reporting
    images (or the seeds alone when the runs recorded no predictions)."""
    key = (cell.name, metric)
    if key not in report.estimates:
        report.estimates[key] = _estimate(report, cell, metric)
    return report.estimates[key]


def _estimate(report: Report, cell: Cell, metric: str) -> Estimate:
    values = cell.finals[metric].astype(float).tolist() if len(cell.finals) else []
    runs = cell.predictions()
    targets = report.reporting.targets if report.reporting else None
    name = metric.removeprefix("test_")
    if runs is not None and targets is not None and runs.shape[1] == targets.size \
            and name in ("accuracy", "macro_f1", "balanced_accuracy"):
        est = cell_estimate(targets, runs, name, len(WBC_CLASSES), replicates=REPLICATES)
        return Estimate(est.estimate, est.low, est.high, est.seeds, True)
    mean, low, high = mean_interval(values)
    return Estimate(mean, low, high, len(values), False)


def paired_runs(a: Cell, b: Cell, metric: str) -> tuple[list[int], np.ndarray | None,
                                                        np.ndarray | None, np.ndarray]:
    """Seeds both cells ran; their predictions on those seeds; the metric differences."""
    left = a.finals.set_index("seed")
    right = b.finals.set_index("seed")
    seeds = sorted(set(left.index) & set(right.index))
    diff = np.array([left.loc[s, metric] - right.loc[s, metric] for s in seeds], dtype=float)
    pa, pb = a.predictions(), b.predictions()
    if pa is None or pb is None:
        return seeds, None, None, diff
    index_a = {s: i for i, s in enumerate(a.finals["seed"])}
    index_b = {s: i for i, s in enumerate(b.finals["seed"])}
    return (seeds, pa[[index_a[s] for s in seeds]], pb[[index_b[s] for s in seeds]], diff)


def compare_runs(targets: Any, pa: np.ndarray, pb: np.ndarray, metric: str) -> Comparison:
    """Runs of A against runs of B (paired by seed) on the reporting images, as the report's
    comparison tables compare them (the searcher's sequential looks too)."""
    return compare(targets, pa, pb, metric, len(WBC_CLASSES), replicates=REPLICATES,
                   target=TARGET)


@dataclass(frozen=True)
class _SeedsOnly:
    """A comparison from the seeds' metric values alone (runs that recorded no predictions)."""

    seeds: int
    difference: float
    low: float
    high: float
    p: float
    seed_sd: float = math.nan  # NaN: the sequential plan does not project from these
    image_sd: float = math.nan
    sd: float = math.nan  # the standard error of the difference (seeds only)
    df: float = math.nan


def _seeds_only(diff: np.ndarray) -> _SeedsOnly:
    from scipy import stats

    mean, low, high = mean_interval(diff)
    p, sd = math.nan, math.nan
    if len(diff) >= 2 and np.std(diff) > 0:
        p = float(stats.ttest_1samp(diff, 0.0).pvalue)
        sd = float(stats.sem(diff))
    elif len(diff) >= 2:
        p, sd = (0.0 if abs(mean) > 0 else 1.0), 0.0
    return _SeedsOnly(len(diff), mean, low, high, p, sd=sd, df=len(diff) - 1.0)


def _at_level(c: Comparison | _SeedsOnly, alpha: float) -> tuple[float, float]:
    """A look's t interval for the difference at confidence ``1 - alpha`` (its p and its 95%
    interval come from the same t statistic, so this one excludes 0 exactly when p < alpha)."""
    from scipy import stats

    sd = c.sd if isinstance(c, _SeedsOnly) else math.hypot(c.seed_sd, c.image_sd)
    if not math.isfinite(sd) or not c.df > 0:
        return -math.inf, math.inf  # one seed: no interval
    if sd == 0.0:
        return c.difference, c.difference
    half = float(stats.t.isf(alpha / 2.0, c.df)) * sd
    return c.difference - half, c.difference + half


def repeated_interval(st: Status, at: Callable[[int], Any], plan: Plan
                       ) -> tuple[float, float] | None:
    """The interval that matches a comparison's sequential p (a repeated confidence interval,
    Jennison and Turnbull 1989): each look's interval at that look's share of alpha,
    ``1 - alpha * w_k``, intersected over the looks it took that may decide. It excludes 0
    exactly when one look's p is below its share of alpha, that is when the sequential p is
    below alpha, and covers the difference with at least 95% whatever the stopping rule did
    (the union bound of ``study.sequential``). None when no look it took may decide."""
    looks = []  # (interval, p over its share of alpha) of each look that may decide
    for n, w in zip(st.seeds_at, plan.weights(), strict=False):
        if w > 0:
            c = at(n)
            looks.append((_at_level(c, ALPHA * w), c.p / w if math.isfinite(c.p) else math.inf))
    if not looks:
        return None
    low = max(bounds[0] for bounds, _ in looks)
    high = min(bounds[1] for bounds, _ in looks)
    if low > high:
        # Two looks' intervals do not meet (one of them excludes 0, so p is below alpha):
        # the deciding look's.
        return min(looks, key=lambda look: look[1])[0]
    return low, high


def _figures(c: Comparison) -> dict[str, Any]:
    """A comparison's figures as a table row holds them."""
    return {"seeds": c.seeds, "difference": c.difference, "low": c.low, "high": c.high,
            "p": c.p, "prob_improvement": c.prob_improvement,
            "min_detectable": c.min_detectable, "seeds_needed": c.seeds_needed,
            "seed_sd": c.seed_sd, "image_sd": c.image_sd, "images_counted": True}


def _comparison_row(report: Report, a: Cell, b: Cell, metric: str, *, most: int | None = None
                    ) -> tuple[dict[str, Any], Callable[[int], Any]] | None:
    """A table row over the seeds both cells ran (the first ``most`` of them), and the
    comparison on their first n seeds (for the sequential looks)."""
    seeds, pa, pb, diff = paired_runs(a, b, metric)
    if most is not None and len(seeds) > most:
        seeds, diff = seeds[:most], diff[:most]
        pa, pb = (None, None) if pa is None or pb is None else (pa[:most], pb[:most])
    if not seeds:
        return None
    targets = report.reporting.targets if report.reporting else None
    name = metric.removeprefix("test_")
    if pa is not None and pb is not None and targets is not None and pa.shape[1] == targets.size:
        c = compare_runs(targets, pa, pb, name)

        @functools.cache
        def at(n: int) -> Any:
            return c if n == len(seeds) else compare_runs(targets, pa[:n], pb[:n], name)

        return _figures(c), at
    only = _seeds_only(diff)
    return {"seeds": only.seeds, "difference": only.difference, "low": only.low,
            "high": only.high, "p": only.p,
            "prob_improvement": float(np.mean((diff > 0) + 0.5 * (diff == 0))),
            "min_detectable": math.nan, "seeds_needed": None, "seed_sd": math.nan,
            "image_sd": math.nan, "images_counted": False}, \
        functools.cache(lambda n: _seeds_only(diff[:n]))


def _evidence(table: pd.DataFrame, looks: list[Callable[[int], Any]], plan: Plan
              ) -> pd.DataFrame:
    """The sequential p-value of each row (``study.sequential``: the p-value itself when the
    study planned one look), Holm over the table's rows, and a word for each: strong, some or
    none."""
    if not len(table):
        return table
    statuses = [status(at, int(seeds), plan, len(table))
                for at, seeds in zip(looks, table["seeds"], strict=True)]
    for i, (st, at) in enumerate(zip(statuses, looks, strict=True)):
        if st.decided_at is not None and st.decided_at < st.seeds \
                and bool(table["images_counted"].iloc[i]):
            # Decided at an earlier look: its figures are that look's (the seeds its budget
            # ran after were bought for other comparisons).
            for name, value in _figures(at(st.decided_at)).items():
                table.at[table.index[i], name] = value
    if plan.sequential:
        for i, (st, at) in enumerate(zip(statuses, looks, strict=True)):
            bounds = repeated_interval(st, at, plan)
            if bounds is not None:
                table.at[table.index[i], "low"], table.at[table.index[i], "high"] = bounds
    table["p"] = [st.p for st in statuses]
    table["looks"] = [st.looks for st in statuses]
    table["stopped"] = [st.why() for st in statuses]
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"] < ALPHA
    table["evidence"] = np.where(table["significant"], "strong",
                                 np.where(table["p"] < ALPHA, "some", "none"))
    return table


def paired(report: Report, metric: str = "test_macro_f1") -> pd.DataFrame:
    """Per subset and comparison (first strategy minus second): the difference over the seeds
    both ran, its 95% interval, p, the probability of improvement, the smallest difference the
    design could detect and the seeds a half-point difference would need; Holm-adjusted p over
    every row and the strength of evidence."""
    rows, looks = [], []
    for subset in report.subsets:
        for better, base, question in COMPARISONS:
            a, b = report.cells.get((subset, better)), report.cells.get((subset, base))
            if a is None or b is None or not len(a.finals) or not len(b.finals):
                continue
            made = _comparison_row(report, a, b, metric)
            if made is not None:
                rows.append({"subset": subset, "comparison": f"{better} - {base}",
                             "question": question, **made[0]})
                looks.append(made[1])
    return _evidence(pd.DataFrame(rows), looks, report.plan)


def budget_effects(report: Report, metric: str = "test_macro_f1") -> pd.DataFrame:
    """Per strategy: the largest label budget minus the smallest (same seeds, same images).

    Over the planned final seeds only: seeds a budget got later were spent on its strategy
    comparisons, so counting them here would let those looks choose this test's seeds; on the
    planned ones it is a test of a fixed design, one look at full alpha."""
    if len(report.subsets) < 2:
        return pd.DataFrame()
    high, low = report.subsets[0], report.subsets[-1]
    planned = report.plan.planned
    rows, looks = [], []
    for strategy in report.strategies:
        a, b = report.cells.get((high, strategy)), report.cells.get((low, strategy))
        if a is None or b is None or not len(a.finals) or not len(b.finals):
            continue
        made = _comparison_row(report, a, b, metric, most=planned)
        if made is not None:
            rows.append({"strategy": strategy, "comparison": f"{high} - {low}", **made[0]})
            looks.append(made[1])
    return _evidence(pd.DataFrame(rows), looks, Plan(planned, planned))


def _journal_search(report: Report, strategy: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A strategy's search trials from the results folder's Optuna journal: (one row per
    trial: cell and params and objective, the search space's distributions); empty when the
    folder has none. Only trials whose rows the report uses (the current data) count."""
    from optuna.trial import TrialState

    from study.results.journal import cell_studies

    root = report.results.root
    studies = cell_studies(root) if root is not None else {}
    trials = report.results.trials
    current = set(trials["trial_id"]) if "trial_id" in trials else set()
    records, dists = [], {}
    for subset in report.subsets:
        study = studies.get(f"{subset}-{strategy}")
        if study is None:
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.user_attrs.get("trial_key") not in current or trial.value is None:
                continue
            records.append({"subset": subset, "objective": float(trial.value), **trial.params})
            dists.update(trial.distributions)
    return pd.DataFrame(records), dists


def _row_search(report: Report, strategy: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A strategy's search trials from the rows, for a folder without a journal: the
    distributions spanned by the values tried."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    trials = report.results.trials
    if not len(trials):
        return pd.DataFrame(), {}
    search = trials[(trials["phase"] == "search") & (trials["strategy"] == strategy)
                    & trials["val_macro_f1"].notna()]
    names = [n for n in report.searched if n in search]
    frame = search[["subset", "val_macro_f1", *names]].rename(
        columns={"val_macro_f1": "objective"})
    dists: dict[str, Any] = {}
    for n in names:
        values = frame[n].dropna()
        if not len(values):
            continue
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            dists[n] = CategoricalDistribution(sorted(values.unique()))
        else:
            dists[n] = FloatDistribution(float(values.min()), float(values.max()),
                                         log=n in ("lr", "weight_decay"))
    return frame, dists


def importances(report: Report) -> pd.DataFrame:
    """Which hyperparameters mattered, per strategy: fANOVA (Optuna's default evaluator, seeded)
    over the search trials of all subsets, each cell's objective turned into ranks within the
    cell so that WBC_1's scale does not drown WBC_100's. The trials come from the results
    folder's Optuna journal (``study.results.journal``: the search space's own
    distributions), else from the rows."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    rows = []
    for strategy in report.strategies:
        search, dists = _journal_search(report, strategy)
        source = "optuna.journal"
        if not len(search):
            search, dists = _row_search(report, strategy)
            source = "trials.parquet"
        if len(search) < 4:
            continue
        search = search.copy()
        search["rank"] = search.groupby("subset")["objective"].rank(pct=True)
        if search["rank"].nunique() < 2:
            continue  # one search trial a cell (or all tied): nothing to attribute
        # A parameter every trial set, to more than one value (a switch-gated one is not
        # set by every trial: it has no importance to measure over all of them).
        names = [n for n in report.searched if n in search and n in dists
                 and search[n].notna().all() and search[n].nunique() > 1]
        if not names:
            continue
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize")
        for record in search.to_dict("records"):
            params = {n: (float(record[n]) if isinstance(record[n], float) else record[n])
                      for n in names}
            study.add_trial(create_trial(params=params,
                                         distributions={n: dists[n] for n in names},
                                         value=float(record["rank"])))
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        for n, score in scores.items():
            rows.append({"strategy": strategy, "parameter": n, "importance": float(score),
                         "trials": len(search), "source": source})
    return pd.DataFrame(rows)
