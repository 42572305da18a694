"""``study report``: the report's Table 1 with intervals, and what it did not show.

Reads a results folder (``trials.parquet``, ``epochs.parquet``, ``study.json``) or, failing
that, a Ray Tune experiment folder (through ``ExperimentAnalysis``), and writes ``report.md``
and ``figures/*.png`` next to the data. Everything in it is computed from the rows; the same
rows give the same bytes (no dates, figures without timestamps), so a committed report can be
checked by regenerating it.

Statistics: a cell's figure is the mean over its final seeds with a Student-t 95% interval
(clipped to [0, 1]); strategies are compared per subset on the seeds both ran (the final phase
uses the same seeds in every cell), with a paired t-test and Holm's correction over all the
comparisons in the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from study.report.figures import draw_all
from study.report.load import load_results
from study.report.summary import METRICS, REPORT_ACCURACY, Report, importances, paired, summarise
from wbc.layout import REPORT_TABLE1, WBC_CLASSES
from wbc.metrics import mean_interval

__all__ = ["table1", "terminal_table", "write_report"]

def _interval(values: Sequence[float], percent: bool = True) -> str:
    mean, low, high = mean_interval(list(values))
    if not math.isfinite(mean):
        return "–"
    scale, digits = (100.0, 2) if percent else (1.0, 3)
    text = f"{scale * mean:.{digits}f}"
    if math.isfinite(low):
        text += f" [{scale * max(low, 0.0):.{digits}f}, {scale * min(high, 1.0):.{digits}f}]"
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
    head = ["strategy", *report.subsets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strategy in report.strategies:
        cells = []
        for subset in report.subsets:
            cell = report.cells[(subset, strategy)]
            values = cell.finals[metric].tolist() if len(cell.finals) else []
            text = _interval(values)
            if with_report and metric == "test_accuracy":
                ref = REPORT_ACCURACY.get(strategy, {}).get(subset)
                if ref is not None:
                    text += f" (report {ref:.2f})"
            cells.append(text)
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def terminal_table(report: Report) -> str:
    """The main table (accuracy, %, mean [95% CI]) for the terminal."""
    width = max(12, *(len(s) for s in report.strategies)) + 2
    col = 24
    lines = ["test accuracy, % (mean [95% CI] over final seeds)",
             " " * width + "".join(f"{s:>{col}}" for s in report.subsets)]
    for strategy in report.strategies:
        row = f"{strategy:<{width}}"
        for subset in report.subsets:
            cell = report.cells[(subset, strategy)]
            row += f"{_interval(cell.finals['test_accuracy'].tolist() if len(cell.finals) else []):>{col}}"
        lines.append(row)
    return "\n".join(lines)


def _fmt_p(p: float) -> str:
    return "–" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _pm(x: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.{digits}f}"


def write_report(source: Path, out: Path | None = None) -> tuple[Path, Report]:
    """Write ``report.md`` and ``figures/`` into ``out`` (default: the results folder)."""
    results = load_results(source)
    out = Path(out) if out is not None else Path(source)
    out.mkdir(parents=True, exist_ok=True)
    report = summarise(results)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    drawn = draw_all(report, figures)
    text = _markdown(report, [p.name for p in drawn])
    (out / "report.md").write_text(text)
    return out / "report.md", report


def _markdown(report: Report, figures: list[str]) -> str:
    results, study = report.results, report.results.study
    trials = results.trials
    name = study.get("study", "study")
    on_report = _on_report_data(study)
    data = study.get("data", {})
    lines = [f"# Study `{name}`", ""]
    spec = study.get("spec", {})
    if spec:
        lines += [f"Preset `{study.get('preset')}`: {len(report.subsets)} subsets x "
                  f"{len(report.strategies)} strategies, {spec.get('search_trials')} search "
                  f"trials and {spec.get('final_seeds')} final seeds per cell, "
                  f"{spec.get('image_size')} px, {spec.get('epochs')} epochs. Read from the "
                  f"{results.source}.", ""]
    else:
        lines += [f"Read from the {results.source} (no study.json: the spec is inferred from "
                  "the trials).", ""]
    if report.missing:
        lines += ["**Incomplete study.** Missing or still running:", ""]
        lines += [f"- {m}" for m in report.missing] + [""]
    selection = trials["selection_split"].dropna().iloc[0] if "selection_split" in trials \
        and trials["selection_split"].notna().any() else "the selection split"
    reporting = trials["reporting_split"].dropna().iloc[0] if "reporting_split" in trials \
        and trials["reporting_split"].notna().any() else "the reporting split"
    lines += [
        "## Table 1: test figures by strategy and label budget", "",
        f"Mean over the final seeds with a Student-t 95% interval, in %. The best epoch was "
        f"chosen on {selection}; the figures are from {reporting}, which took no part in any "
        "choice.", ""]
    if on_report:
        lines += ["The study ran on the report's dataset (its WBC_100 counts match the report's "
                  "Table 1), so the report's own accuracy stands in brackets. The report scored "
                  "one run on the same validation set that picked its epoch; ours are several "
                  "seeds on a held-out split.", ""]
    else:
        source = "a synthetic tree" if data.get("source") == "synthetic" else \
            "a tree that is not the report's dataset"
        lines += [f"The study ran on {source}, so the report's numbers (97.05 ... 84.03) are "
                  "not shown beside ours: they measure other images.", ""]
    for metric, label in METRICS:
        lines += [f"### {label}", ""]
        lines += [*table1(report, metric, with_report=on_report), ""]
    lines += ["## Paired comparisons", "",
              "Differences of test accuracy in percentage points (first minus second strategy) "
              "on the seeds both ran, with a 95% interval; p from a paired t-test, Holm-adjusted "
              "over every row. With three seeds an interval is wide: a non-significant row says "
              "the study cannot tell, not that there is no effect.", ""]
    comparisons = paired(report)
    if len(comparisons):
        lines += ["| subset | comparison | seeds | difference [95% CI] | p | p (Holm) | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for row in comparisons.itertuples():
            verdict = ("better" if row.difference > 0 else "worse") if row.significant \
                else "cannot tell"
            interval = f"{_pm(row.difference)} [{_pm(row.low)}, {_pm(row.high)}]"
            lines.append(f"| {row.subset} | {row.comparison} | {row.seeds} | {interval} | "
                         f"{_fmt_p(row.p)} | {_fmt_p(row.p_holm)} | {verdict} |")
        lines.append("")
    else:
        lines += ["No subset has final runs of two strategies yet.", ""]
    lines += _background_section(report)
    lines += _recall_section(report)
    lines += _best_section(report)
    lines += _importance_section(report)
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f}](figures/{f})" for f in figures] + [""]
    lines += _provenance_section(report)
    return "\n".join(lines).rstrip() + "\n"


def _background_section(report: Report) -> list[str]:
    trials = report.results.trials
    if "background" not in trials:
        return []
    search = trials[(trials["phase"] == "search") & trials["val_macro_f1"].notna()
                    & trials["aug_factor"].fillna(0).gt(0)] if "aug_factor" in trials else \
        trials.iloc[:0]
    if not len(search):
        return []
    lines = ["## Which background won", "",
             "Search trials of the strategies that paste cells, by background mode: how many "
             "were tried, their mean and best selection macro-F1, and how many cells chose it.",
             "", "| background | trials | mean val macro-F1 | best | chosen by cells |",
             "|---|---|---|---|---|"]
    chosen: dict[str, int] = {}
    for cell in report.cells.values():
        if cell.best and cell.best.get("background") and cell.best.get("aug_factor"):
            chosen[cell.best["background"]] = chosen.get(cell.best["background"], 0) + 1
    for mode, group in search.groupby("background"):
        lines.append(f"| {mode} | {len(group)} | {group['val_macro_f1'].mean():.3f} | "
                     f"{group['val_macro_f1'].max():.3f} | {chosen.get(str(mode), 0)} |")
    return [*lines, ""]


def _recall_section(report: Report) -> list[str]:
    lines = ["## Per-class recall", "",
             "Test recall per class, mean over the final seeds, in % (Basophils are about 2% "
             "of the data).", "",
             "| cell | " + " | ".join(WBC_CLASSES) + " |", "|---|" + "---|" * len(WBC_CLASSES)]
    for cell in report.cells.values():
        if not len(cell.finals):
            continue
        values = []
        for c in WBC_CLASSES:
            column = f"test_recall_{c}"
            mean = cell.finals[column].mean() if column in cell.finals else math.nan
            values.append("–" if not math.isfinite(mean) else f"{100 * mean:.1f}")
        lines.append(f"| {cell.name} | " + " | ".join(values) + " |")
    return [*lines, ""]


def _pretrain_lines(pretrain: dict[str, Any]) -> list[str]:
    """One line per pretraining source; a study from before the SSL strategies stored the
    CAM16 record alone."""
    if "val_accuracy" in pretrain:
        pretrain = {"cam16": pretrain}
    lines = []
    for source, record in pretrain.items():
        if source == "prcc_ssl":
            lines.append(
                f"- pRCC self-supervised pretraining (SimCLR): loss "
                f"{record.get('ssl_loss', math.nan):.3f} after {record.get('epochs')} epochs on "
                f"{record.get('ssl_images', record.get('prcc_images'))} images; CAM16 probe "
                f"of the frozen backbone: k-NN {record.get('knn_accuracy', math.nan):.3f} "
                f"(random init {record.get('knn_accuracy_random', math.nan):.3f}), linear "
                f"{record.get('linear_probe_accuracy', math.nan):.3f} (random init "
                f"{record.get('linear_probe_accuracy_random', math.nan):.3f})")
        else:
            start = " from the pRCC SSL backbone" if source == "prcc_ssl+cam16" else ""
            lines.append(f"- CAM16 pretraining{start}: val accuracy "
                         f"{record.get('val_accuracy', 0):.3f}, test accuracy "
                         f"{record.get('test_accuracy', 0):.3f}, {record.get('epochs')} epochs")
    return lines


def _best_section(report: Report) -> list[str]:
    lines = ["## Best configuration per cell", "",
             "The search trial with the highest selection macro-F1 (what the final seeds "
             "re-ran).", "", "| cell | val macro-F1 | " + " | ".join(report.searched) + " |",
             "|---|---|" + "---|" * len(report.searched)]
    for cell in report.cells.values():
        if not cell.best:
            lines.append(f"| {cell.name} | – |" + " – |" * len(report.searched))
            continue
        values = []
        for name in report.searched:
            value = cell.best.get(name)
            if name in ("aug_factor", "background") and not cell.best.get("aug_factor"):
                value = None
            if isinstance(value, float) and math.isnan(value):
                value = None
            values.append("–" if value is None else f"{value:.3g}" if isinstance(value, float)
                          else str(value))
        lines.append(f"| {cell.name} | {cell.best['val_macro_f1']:.3f} | "
                     + " | ".join(values) + " |")
    return [*lines, ""]


def _importance_section(report: Report) -> list[str]:
    table = importances(report)
    lines = ["## Which hyperparameters mattered", ""]
    if not len(table):
        return [*lines, "Too few search trials to say (at least 4 per strategy).", ""]
    lines += ["fANOVA importance (Optuna) of each searched hyperparameter for the selection "
              "macro-F1, ranked within each cell, per strategy over all subsets. With few "
              "trials these are rough.", "", "| strategy | trials | " +
              " | ".join(report.searched) + " |", "|---|---|" + "---|" * len(report.searched)]
    for strategy, group in table.groupby("strategy", sort=False):
        scores = dict(zip(group["parameter"], group["importance"], strict=True))
        lines.append(f"| {strategy} | {int(group['trials'].iloc[0])} | " + " | ".join(
            f"{scores[n]:.2f}" if n in scores else "–" for n in report.searched) + " |")
    return [*lines, ""]


def _provenance_section(report: Report) -> list[str]:
    study = report.results.study
    trials = report.results.trials
    lines = ["## Provenance", ""]
    if not study:
        return [*lines, "No study.json next to the trials.", ""]
    prov = study.get("provenance", {})
    data = study.get("data", {})
    hardware = prov.get("hardware", {})
    versions = prov.get("versions", {})
    sessions = study.get("sessions", [])
    lines += [
        f"- status: {study.get('status')}; sessions: {len(sessions)}; wall time "
        f"{study.get('wall_seconds', 0):.0f} s",
        f"- data: {data.get('source')}"
        + (f" (scale {data.get('scale')}, seed {data.get('seed')})"
           if data.get("source") == "synthetic" else f" ({data.get('root')})")
        + f"; fingerprint `{data.get('fingerprint')}`; excluded files "
        f"{data.get('excluded_files', 0)}",
        f"- seeds: search trials train with seed {study.get('spec', {}).get('seed')}; final "
        f"seeds {sorted({int(s) for s in trials[trials['phase'] == 'final']['seed']})}"
        if len(trials) else "- seeds: –",
        f"- code: git {prov.get('git_commit')}, source digest `{prov.get('code_sha256')}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- hardware: {hardware.get('cpu')}, {hardware.get('cpu_count')} CPUs, "
        f"{hardware.get('memory_gib')} GiB, GPUs: {', '.join(hardware.get('gpus') or []) or 'none'}",
    ]
    lines += _pretrain_lines(study.get("pretrain") or {})
    for i, session in enumerate(sessions, 1):
        if "wall_seconds" not in session:
            lines.append(f"- session {i}: stopped before it finished (no timing recorded)")
            continue
        lines.append(
            f"- session {i}{' (resumed)' if session.get('resumed') else ''}: "
            f"{session['wall_seconds']:.0f} s = data {session.get('data_seconds', 0):.0f} + "
            f"Ray start-up {session.get('ray_startup_seconds', 0):.0f} + pretraining "
            f"{session.get('pretrain_seconds', 0):.0f} + trials "
            f"{session.get('tune_seconds', 0):.0f} s on {session.get('slots')} slots; "
            f"{session.get('trials_run')} trials; inside training loops "
            f"{100 * session.get('inside_training_loops_fraction', 0):.0f}% of the slot time; "
            f"per-trial overhead {session.get('per_trial_overhead_seconds') or 0:.1f} s")
    return [*lines, ""]
