"""The report's parts on the study's classifiers: the models it kept, and how they do out of
domain (``eval.parquet``, ``study.evaluation``)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from study.report.summary import Report
from wbc.metrics import mean_interval, wilson_interval

__all__ = ["kept_models_section", "out_of_domain_section"]


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{100 * value:.1f}"


def kept_models_section(report: Report) -> list[str]:
    models = report.results.models
    if not models:
        return []
    keep = report.results.study.get("spec", {}).get("keep_models", "best")
    rule = ("each cell's final seed with the best selection macro-F1 (never a test figure)"
            if keep == "best" else "every final seed")
    lines = ["## Kept models", "",
             f"The study kept {len(models)} classifier(s) (`keep_models = \"{keep}\"`: {rule}), "
             "each a `model.safetensors` with its card (classes, preprocessing, cell, seed, "
             "data fingerprint, figures) in `models/<cell>/seed-<seed>/`. Use one with "
             "`wbc predict --model <folder> IMAGES...`; `wbc evaluate --model <folder> --data "
             "TREE` scores it on any tree; `wbc export --model <folder> --format onnx` carries "
             "it elsewhere.", "",
             "| cell | seed | test accuracy | test macro-F1 | best epoch | folder |",
             "|---|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate(report.subsets)}
    for model in sorted(models, key=lambda m: (order.get(str(m["cell"]).split("-")[0], 99),
                                               str(m["cell"]), m["seed"])):
        figures = model.get("figures") or {}
        lines.append(f"| {model['cell']} | {model['seed']} | "
                     f"{_pct(figures.get('test_accuracy'))} | "
                     f"{_pct(figures.get('test_macro_f1'))} | {model.get('best_epoch')} | "
                     f"`{model['folder']}` |")
    return [*lines, ""]


def _cell_figures(rows: pd.DataFrame) -> dict[str, str]:
    """One cell on one tree: in-domain and out-of-domain figures over its kept models."""
    n = int(rows["n"].iloc[0]) if len(rows) else 0
    if len(rows) == 1:
        row = rows.iloc[0]
        low, high = wilson_interval(round(float(row["accuracy"]) * int(row["n"])), int(row["n"]))
        acc = f"{_pct(row['accuracy'])} [{_pct(low)}, {_pct(high)}]"
    else:
        mean, low, high = mean_interval(rows["accuracy"])
        acc = f"{_pct(mean)} [{_pct(low)}, {_pct(high)}]"
    return {"in_f1": _pct(rows["in_domain_macro_f1"].mean()),
            "out_f1": _pct(rows["macro_f1"].mean()), "out_acc": acc,
            "drop": _pct(rows["in_domain_macro_f1"].mean() - rows["macro_f1"].mean()),
            "models": str(len(rows)), "n": str(n)}


def _strategy_gaps(frame: pd.DataFrame, strategies: list[str]) -> list[str]:
    """Per budget: each strategy minus scratch, in domain and out of domain (macro-F1)."""
    if "scratch" not in strategies or len(strategies) < 2:
        return []
    lines = ["Each strategy minus scratch, macro-F1 in points (in domain -> out of domain):", "",
             "| budget | " + " | ".join(s for s in strategies if s != "scratch") + " |",
             "|---|" + "---|" * (len(strategies) - 1)]
    for subset, group in frame.groupby("subset", sort=False):
        base = group[group["strategy"] == "scratch"]
        if not len(base):
            continue
        cells = []
        for strategy in strategies:
            if strategy == "scratch":
                continue
            other = group[group["strategy"] == strategy]
            if not len(other):
                cells.append("–")
                continue
            inside = other["in_domain_macro_f1"].mean() - base["in_domain_macro_f1"].mean()
            outside = other["macro_f1"].mean() - base["macro_f1"].mean()
            cells.append(f"{100 * inside:+.1f} -> {100 * outside:+.1f}")
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def out_of_domain_section(report: Report) -> list[str]:
    frame = report.results.evaluations
    if frame is None or not len(frame):
        return []
    lines = ["## Out of domain", "",
             "Every kept model scored on other trees (`eval_data`; `eval.parquet`), on each "
             "tree's reporting split, through the training's decode and preprocessing. "
             "In-domain figures are the same models' own test figures (a kept model's, not "
             "Table 1's mean over seeds). A classifier can lose "
             "much of its accuracy on another microscope's images (Tsutsui et al., ICASSP 2023: "
             "98.5% in domain, 34.6% on another's), and whether pretraining helps more there is "
             "what this part asks.", ""]
    failed = frame[frame["error"].notna()] if "error" in frame else frame.iloc[:0]
    good = frame[frame["error"].isna()] if "error" in frame else frame
    models_per_cell = good.groupby(["eval_data", "cell"]).size()
    if len(models_per_cell) and int(models_per_cell.max()) == 1:
        lines += ["One model per cell (`keep_models = \"best\"`): accuracy intervals are the "
                  "images' (Wilson 95%) and the differences between strategies are single "
                  "runs, with no seed spread; `keep_models = \"all\"` scores every final seed.",
                  ""]
    order = {s: i for i, s in enumerate(report.subsets)}
    strategies = [s for s in report.strategies if s in set(good.get("strategy", []))]
    for tree, rows in good.groupby("eval_data", sort=True):
        rows = rows.assign(_order=rows["subset"].map(order)).sort_values(["_order", "strategy"])
        lines += [f"### {Path(str(tree)).name}", "",
                  f"`{tree}`, {rows['eval_split'].iloc[0]} split, {int(rows['n'].iloc[0])} "
                  "images.", "",
                  "| cell | models | in-domain macro-F1 | out-of-domain macro-F1 | drop "
                  "(points) | out-of-domain accuracy [95%] |", "|---|---|---|---|---|---|"]
        for cell, group in rows.groupby("cell", sort=False):
            f = _cell_figures(group)
            lines.append(f"| {cell} | {f['models']} | {f['in_f1']} | {f['out_f1']} | "
                         f"{f['drop']} | {f['out_acc']} |")
        lines += ["", *_strategy_gaps(rows, strategies)]
    for row in failed.itertuples():
        lines.append(f"- {row.cell} seed {row.seed} on `{row.eval_data}` could not be scored: "
                     f"{row.error}")
    return [*lines, ""] if len(failed) else lines
