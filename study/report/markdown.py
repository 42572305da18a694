"""``study report``: answers first, then the report's Table 1 with intervals, the comparisons
behind the answers, and what the seed report did not show.

Reads a results folder (``trials.parquet``, ``epochs.parquet``, ``study.json``) or, failing
that, a Ray Tune experiment folder (through ``ExperimentAnalysis``), and writes ``report.md``
and ``figures/`` next to the data. Everything in it is computed from the rows, every word of
judgement included (``study.report.answers``); the same rows give the same bytes (no dates,
figures without timestamps), so a committed report can be checked by regenerating it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from study.report.answers import answers
from study.report.classifiers import kept_models_section, out_of_domain_section
from study.report.figures import draw_all
from study.report.load import load_results
from study.report.sections import (
    background_section,
    best_section,
    importance_section,
    method_section,
    provenance_section,
    recall_section,
    segmentation_section,
)
from study.report.summary import (
    METRICS,
    REPORT_ACCURACY,
    Estimate,
    Report,
    budget_effects,
    cell_estimate_of,
    paired,
    summarise,
)
from study.spec import cell_search_trials, no_search
from wbc.datasets.layout import REPORT_TABLE1, WBC_CLASSES
from wbc.strategies import get_strategy, strategy_names

__all__ = ["table1", "terminal_table", "write_report"]


def _interval(est: Estimate, percent: bool = True) -> str:
    if not math.isfinite(est.mean):
        return "–"
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{scale * est.mean:.{digits}f}"
    if math.isfinite(est.low):
        text += (f" [{scale * max(est.low, 0.0):.{digits}f}, "
                 f"{scale * min(est.high, 1.0):.{digits}f}]")
    return text


def _on_report_data(study: dict[str, Any]) -> bool:
    """Whether the study ran on a tree with the report's WBC_100 counts (its dataset)."""
    data = study.get("data", {})
    if data.get("source") != "tree":
        return False
    counts = data.get("wbc100_counts", {})
    return all(counts.get("train", {}).get(c) == n and counts.get("val", {}).get(c) == v
               for c, (n, _, v) in REPORT_TABLE1.items())


def table1(report: Report, metric: str, *, with_report: bool) -> list[str]:
    """Strategies x budgets, mean [95% CI] in %, with the majority-class baseline as a row."""
    head = ["strategy", *report.subsets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strategy in report.strategies:
        cells = []
        for subset in report.subsets:
            text = _interval(cell_estimate_of(report, report.cells[(subset, strategy)], metric))
            if with_report and metric == "test_accuracy":
                ref = REPORT_ACCURACY.get(strategy, {}).get(subset)
                if ref is not None:
                    text += f" (report {ref:.2f})"
            cells.append(text)
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    baseline = report.reporting.majority_scores().get(metric) if report.reporting else None
    if baseline is not None:
        lines.append(f"| *always {report.reporting.majority}* | "  # type: ignore[union-attr]
                     + " | ".join(f"{100 * baseline:.1f}" for _ in report.subsets) + " |")
    return lines


def terminal_table(report: Report) -> str:
    """The main table (macro-F1, %, mean [95% CI]) for the terminal."""
    width = max(12, *(len(s) for s in report.strategies)) + 2
    col = 22
    lines = ["test macro-F1, % (mean [95% CI] over final seeds and reporting images"
             + ("; each seed its own search)"
                if report.results.study.get("spec", {}).get("final_config") == "replicates"
                else ")"),
             " " * width + "".join(f"{s:>{col}}" for s in report.subsets)]
    for strategy in report.strategies:
        row = f"{strategy:<{width}}"
        for subset in report.subsets:
            est = cell_estimate_of(report, report.cells[(subset, strategy)], "test_macro_f1")
            row += f"{_interval(est):>{col}}"
        lines.append(row)
    if report.reporting:
        base = report.reporting.majority_scores().get("test_macro_f1", math.nan)
        lines.append(f"{'always ' + report.reporting.majority:<{width}}"
                     + "".join(f"{100 * base:>{col}.1f}" for _ in report.subsets))
    return "\n".join(lines)


def _fmt_p(p: float) -> str:
    return "–" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _pm(x: float, digits: int = 1) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.{digits}f}"


def write_report(source: Path, out: Path | None = None, *,
                 formats: Sequence[str] = ("png",)) -> tuple[Path, Report]:
    """Write ``report.md`` and ``figures/`` (``formats``: png, svg, pdf) into ``out``
    (default: the results folder)."""
    results = load_results(source)
    out = Path(out) if out is not None else Path(source)
    out.mkdir(parents=True, exist_ok=True)
    report = summarise(results)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    drawn = draw_all(report, figures, formats=formats)
    text = _markdown(report, [p.name for p in drawn if p.suffix == ".png"])
    (out / "report.md").write_text(text)
    return out / "report.md", report


def _overview(report: Report) -> list[str]:
    results, study = report.results, report.results.study
    spec = study.get("spec", {})
    data = study.get("data", {})
    scales = ", ".join(f"{label} {data[key]}" for key, label in (
        ("scale", "scale"), ("val_scale", "val scale"), ("tissue_scale", "tissue scale"),
        ("test_scale", "test scale"))
        if data.get(key) is not None)
    source = (f"a synthetic tree ({scales}, seed {data.get('seed')})"
              if data.get("source") == "synthetic" else f"the tree {data.get('root')}"
              if data.get("root") else "its data")
    if not spec:
        return [f"Read from the {results.source} (no study.json: the spec is inferred from the "
                "trials).", ""]
    seeds = spec.get("final_seeds")
    plan = report.plan
    more = (f" ({plan.most} at a label budget still undecided after them)" if plan.sequential
            else "")
    return [f"Preset `{study.get('preset')}` on {source}: {len(report.subsets)} label budgets "
            f"x {len(report.strategies)} strategies, {_searched_phrase(spec)} "
            f"and {seeds} final seed{'s' * (seeds != 1)} per cell{more}, "
            f"{spec.get('image_size')} px, "
            f"{spec.get('epochs')} epochs. Read from the {results.source}.", ""]


def _reporting_section(report: Report) -> list[str]:
    rep = report.reporting
    if rep is None:
        return []
    support = ", ".join(f"{c} {rep.support.get(c, 0)}" for c in WBC_CLASSES)
    base = rep.majority_scores()
    trials = report.results.trials
    selection = trials["selection_split"].dropna().iloc[0] if "selection_split" in trials \
        and trials["selection_split"].notna().any() else "the selection split"
    part = ("It took no part in any choice: epochs and configurations were picked on "
            f"{selection}." if not report.plan.sequential else
            f"It picked no epoch or configuration (those were picked on {selection}); its "
            "comparisons decided how many seeds a label budget ran, which the sequential "
            "p-values correct for (Paired comparisons).")
    return ["## The reporting split", "",
            f"Every figure is from {rep.name}: {rep.n} images ({support}). {part} Always "
            f"answering {rep.majority} scores macro-F1 {100 * base['test_macro_f1']:.1f}, "
            f"balanced accuracy {100 * base['test_balanced_accuracy']:.1f} and accuracy "
            f"{100 * base['test_accuracy']:.1f} on it: the tables show it as a row.", ""]


def _searched_phrase(spec: dict) -> str:
    """How a cell was searched, in the spec's own numbers."""
    if no_search(spec):
        return "no search (one fixed configuration)"
    if spec.get("final_config") == "replicates":
        trials = spec.get("search_trials")
        return (f"{cell_search_trials(spec)} search trials ({trials} random "
                f"trial{'s' * (trials != 1)} for each replicate)")
    return f"{spec.get('search_trials')} search trials"


def covers(spec: dict) -> str:
    """Which sources of variation a Table 1 interval covers, by the spec's ``final_config``
    (one sentence), and what the pretrained strategies' intervals leave out."""
    sentence = _covers_search(spec)
    strategies = [s for s in spec.get("strategies", []) if s in strategy_names()]
    if any(get_strategy(s).pretrain == "cam16" for s in strategies):
        sentence += (" The CAM16 weights are one pretraining run, shared by every seed and by "
                     "studies of other seeds: no interval covers what another pretraining run "
                     "would give.")
    return sentence


def _covers_search(spec: dict) -> str:
    kept = ("training randomness (initialisation, batch order, augmentation) and which images "
            "the reporting split holds (see Method)")
    if spec.get("final_config") == "replicates":
        return ("Each interval covers the search (every final seed re-ran the best of its own "
                f"independent search), {kept}; not another sample of cells or other fixed "
                "settings.")
    if no_search(spec):
        return (f"Each interval covers {kept}; there is no search to cover: every seed trained "
                "the spec's one fixed configuration, which another run of the study trains "
                "too.")
    if spec.get("final_config") == "resampled":
        return (f"Each interval covers {kept}, and the choice among the configurations one "
                "search tried (each seed re-ran the best of a resample of them), not what "
                "another search would have tried.")
    return (f"Each interval covers {kept}, not the search (every seed re-ran one "
            "configuration).")


def _table_section(report: Report) -> list[str]:
    on_report = _on_report_data(report.results.study)
    lines = ["## Table 1: test figures by strategy and label budget", "",
             "Mean over the final seeds with its 95% interval, in %. "
             + covers(report.results.study.get("spec", {})), ""]
    if on_report:
        lines += ["The study ran on the report's dataset (its WBC_100 counts match the report's "
                  "Table 1), so the report's own accuracy stands in brackets. The report scored "
                  "one run on the same validation set that picked its epoch; ours are several "
                  "seeds on a held-out split.", ""]
    else:
        lines += ["The study did not run on the report's dataset, so the report's numbers "
                  "(97.05 ... 84.03) are not shown beside ours: they measure other images.", ""]
    for metric, label in METRICS:
        lines += [f"### {label}", "", *table1(report, metric, with_report=on_report), ""]
    return lines


def _comparison_lines(table: pd.DataFrame, key: str, *, stopped: bool = False) -> list[str]:
    """The table; ``stopped`` adds why each comparison stopped (sequential seeds)."""
    ci = "repeated 95% CI" if stopped else "95% CI"
    lines = [f"| {key} | comparison | seeds | difference [{ci}] | P(improvement) | p | "
             "p (Holm) | evidence | detectable | seeds for 0.5 pt |" + (" stopped |" * stopped),
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * stopped]
    for row in table.itertuples():
        interval = f"{_pm(row.difference)} [{_pm(row.low)}, {_pm(row.high)}]"
        needed = "–" if row.seeds_needed is None or (
            isinstance(row.seeds_needed, float) and math.isnan(row.seeds_needed)) \
            else str(int(row.seeds_needed))
        detect = "–" if not math.isfinite(row.min_detectable) else \
            f"{100 * row.min_detectable:.1f}"
        lines.append(f"| {getattr(row, key)} | {row.comparison} | {row.seeds} | {interval} | "
                     f"{row.prob_improvement:.2f} | {_fmt_p(row.p)} | {_fmt_p(row.p_holm)} | "
                     f"{row.evidence} | {detect} | {needed} |"
                     + (f" {row.stopped} |" if stopped else ""))
    return [*lines, ""]


def _sequential_lines(report: Report) -> list[str]:
    plan = report.plan
    if not plan.sequential:
        return []
    looks = ", ".join(map(str, plan.looks()))
    decides = [n for n in plan.looks() if plan.decides(n)]
    first = (f"; no look before {decides[0]} seeds may decide one, as a verdict on fewer seeds "
             "rests on a spread that may have been small by chance, and one stopped before "
             "then has no p, shown –" if decides[0] > plan.planned else "")
    reach = ("could not decide it" if plan.reach == 0.5 else
             f"would decide it with a chance below {plan.reach:.0%}")
    return [f"Seeds were spent where they decide: every label budget ran {plan.planned} seeds a "
            f"cell, and one whose comparisons were still open got {plan.step} more in each of "
            f"its cells, looked at again, up to {plan.most} (looks at {looks} seeds). A "
            f"comparison stops when decided (strong even after Bonferroni over the table{first})"
            f", when even {plan.most} seeds {reach} at its present difference (out of "
            "reach), or when the budget is spent. Its p is sequential: the smallest p over its "
            f"looks{' that may decide' if first else ''}, each divided by that look's share of "
            "alpha (alpha spending "
            f"alpha t^{plan.rho:g}, t = seeds / {plan.most}), so looking several times does "
            "not inflate the error rate. Its interval is the repeated confidence interval that "
            "matches that p (Jennison and Turnbull 1989): each look's interval at that look's "
            "share of alpha, intersected over its looks, wider than one look's 95% interval; "
            "it excludes 0 exactly when p is below 0.05. The label-budget table uses the "
            "planned seeds only, one look (a plain 95% interval): the seeds added later were "
            "bought for the strategy comparisons.", ""]


def _comparisons_section(report: Report, table: pd.DataFrame) -> list[str]:
    seeds = report.results.study.get("spec", {}).get("final_seeds")
    lines = ["## Paired comparisons", "",
             "Macro-F1 differences in points (first strategy minus second) on the seeds both "
             "ran and the same reporting images, with the 95% interval"
             + (" (repeated over the looks, below)" if report.plan.sequential else "")
             + ", P(improvement), p and "
             f"Holm's p over the table ({len(table)} rows). *strong*: the interval excludes 0 "
             "after Holm; *some*: only before; *none*: it does not. With "
             + (f"{seeds} to {report.plan.most} final seeds" if report.plan.sequential
                else f"{seeds} final seed{'s' * (seeds != 1)}")
             + " per cell, *none* says the study cannot "
             "tell, not that there is no effect: *detectable* is the smallest difference it "
             "could have found.", ""]
    if not len(table):
        return [*lines, "No subset has final runs of two strategies yet.", ""]
    lines += _sequential_lines(report)
    lines += _comparison_lines(table, "subset", stopped=report.plan.sequential)
    budgets = budget_effects(report)
    if len(budgets):
        lines += ["The label budget itself, per strategy (largest minus smallest budget, the "
                  "same seeds and images):", "", *_comparison_lines(budgets, "strategy")]
    return lines


def _markdown(report: Report, figures: list[str]) -> str:
    name = report.results.study.get("study", report.results.study.get("name", "study"))
    lines = [f"# Study `{name}`", "", *_overview(report)]
    if report.missing:
        lines += ["**Incomplete study.** Missing or still running:", ""]
        lines += [f"- {m}" for m in report.missing] + [""]
    table = paired(report)
    lines += ["## Answers", "", *answers(report, table), ""]
    lines += _reporting_section(report)
    lines += _table_section(report)
    lines += _comparisons_section(report, table)
    lines += background_section(report)
    lines += segmentation_section(report)
    lines += recall_section(report)
    lines += out_of_domain_section(report)
    lines += best_section(report)
    lines += importance_section(report)
    lines += kept_models_section(report)
    lines += method_section(report)
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f}](figures/{f})" for f in figures] + [""]
    lines += provenance_section(report)
    return "\n".join(lines).rstrip() + "\n"
