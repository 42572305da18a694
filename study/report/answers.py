"""The report's opening: one plain sentence per question the study was run to answer.

Every word of judgement is derived from the numbers in the comparison tables
(``study.report.summary``): "strong evidence" when the 95% interval excludes zero after Holm's
correction over the whole table, "some evidence" when it does only before the correction, and
"no clear difference" otherwise, said together with the smallest difference the study could have
detected. A question the study did not run (no SSL strategy, no pasting strategy) is answered
with what to run.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.report.summary import Report, budget_effects

__all__ = ["answers"]

QUESTIONS = (
    ("pretrain - scratch", "Does CAM16 pretraining help?"),
    ("pretrain_aug - pretrain", "Does the mask-based augmentation help?"),
    ("ssl - scratch", "Does self-supervised pretraining on pRCC help?"),
)


def _points(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.1f}"


def _effect(row: Any) -> str:
    """``+3.1 points [-2.0, +8.2] at WBC_1 (P(improvement) 0.71)``."""
    text = f"{_points(row.difference)} [{_points(row.low)}, {_points(row.high)}] at {row.subset}"
    if math.isfinite(row.prob_improvement):
        text += f" (P(improvement) {row.prob_improvement:.2f})"
    return text


def _detectable(rows: pd.DataFrame) -> str:
    values = rows["min_detectable"].dropna()
    if not len(values):
        return ""
    return (f"; with these seeds and reporting images it could only have detected differences "
            f"of about {100 * float(values.median()):.1f} points or more")


def _verdict(rows: pd.DataFrame, lead: str) -> str:
    strong = rows[rows["evidence"] == "strong"]
    some = rows[rows["evidence"] == "some"]
    if len(strong):
        helps = strong[strong["difference"] > 0]
        hurts = strong[strong["difference"] < 0]
        parts = []
        if len(helps):
            parts.append(f"yes at {', '.join(helps['subset'])}")
        if len(hurts):
            parts.append(f"it hurts at {', '.join(hurts['subset'])}")
        rest = rows[rows["evidence"] != "strong"]
        tail = f"; no clear difference at {', '.join(rest['subset'])}" if len(rest) else ""
        text = "; ".join(parts)
        return f"{text[0].upper()}{text[1:]} (strong evidence){tail}."
    if len(some):
        better = some[some["difference"] > 0]["subset"].tolist()
        worse = some[some["difference"] < 0]["subset"].tolist()
        looks = " and ".join(part for part in (
            f"better at {', '.join(better)}" if better else "",
            f"worse at {', '.join(worse)}" if worse else "") if part)
        return (f"Not clearly: {lead} looks {looks}, but not once corrected for the "
                f"{_family(rows)} comparisons of the table (some evidence only)"
                f"{_detectable(rows)}.")
    return f"The study cannot tell: no clear difference at any budget{_detectable(rows)}."


def _family(rows: pd.DataFrame) -> int:
    return int(rows.attrs.get("family", len(rows)))


def _question(table: pd.DataFrame, comparison: str, title: str, report: Report) -> str:
    a, b = comparison.split(" - ")
    rows = table[table["comparison"] == comparison] if len(table) else table
    if not len(rows):
        missing = [s for s in (a, b) if s not in report.strategies]
        hint = (f"this study did not run {' or '.join(missing)}; add it to `strategies` "
                "(`--preset quick-ssl` runs all five)" if missing
                else "no cell has final runs of both yet")
        return f"- **{title}** Not answered: {hint}."
    rows = rows.copy()
    rows.attrs["family"] = len(table)
    effects = "; ".join(_effect(r) for r in rows.itertuples()) + _pretraining(report, b, a)
    seeds = int(rows["seeds"].min())
    caveat = "" if seeds >= 2 else " With one seed per cell nothing here can be significant."
    return (f"- **{title}** {_verdict(rows, a)} Macro-F1 of {a} minus {b}, in points: "
            f"{effects}.{caveat}")


def _pretraining(report: Report, *strategies: str) -> str:
    """How well the CAM16 pretraining a comparison rests on learnt its own task."""
    if "pretrain" not in strategies:
        return ""
    record = (report.results.study.get("pretrain") or {}).get("cam16")
    if not isinstance(record, dict) or "val_accuracy" not in record:
        return ""
    return (f" (the CAM16 pretraining reached val accuracy {record['val_accuracy']:.3f} and "
            f"test accuracy {record.get('test_accuracy', float('nan')):.3f}; chance is 0.5)")


def _budget_sentence(report: Report) -> str:
    effects = budget_effects(report)
    if not len(effects):
        return "- **At which label budget?** Not answered: the study ran one budget."
    high, low = report.subsets[0], report.subsets[-1]
    parts = []
    for row in effects.itertuples():
        strength = {"strong": "strong evidence", "some": "some evidence"}.get(
            row.evidence, "no clear difference")
        parts.append(f"{row.strategy} {_points(row.difference)} [{_points(row.low)}, "
                     f"{_points(row.high)}] ({strength})")
    return (f"- **At which label budget?** Going from {low} to {high} changes macro-F1 by "
            f"{'; '.join(parts)} points. The strategy effects above are read per budget; "
            "where none is clear, the budget decides more than the strategy does.")


def _background_sentence(report: Report) -> str:
    trials = report.results.trials
    if not len(trials) or "background" not in trials or "aug_factor" not in trials:
        return ""
    search = trials[(trials["phase"] == "search") & trials["val_macro_f1"].notna()
                    & trials["aug_factor"].fillna(0).gt(0)]
    if not len(search):
        return ("- **Which background for the pasted cells?** Not answered: no search trial "
                "pasted cells.")
    chosen: dict[str, int] = {}
    for cell in report.cells.values():
        if cell.best and cell.best.get("background") and cell.best.get("aug_factor"):
            chosen[cell.best["background"]] = chosen.get(cell.best["background"], 0) + 1
    means = search.groupby("background")["val_macro_f1"].agg(["mean", "count"])
    parts = ", ".join(f"{mode} {100 * row['mean']:.1f} (n={int(row['count'])})"
                      for mode, row in means.iterrows())
    picks = ", ".join(f"{mode} in {n}" for mode, n in sorted(chosen.items())) or "none"
    return (f"- **Which background for the pasted cells?** The cells that paste chose {picks}; "
            f"their search trials' mean selection macro-F1 by background: {parts}. The search "
            "compares backgrounds on single runs, so this ranks them only loosely.")


def answers(report: Report, table: pd.DataFrame) -> list[str]:
    """The "Answers" section's lines, from the macro-F1 comparison ``table``."""
    lines = [_question(table, comparison, title, report) for comparison, title in QUESTIONS[:2]]
    lines.append(_budget_sentence(report))
    background = _background_sentence(report)
    if background:
        lines.append(background)
    comparison, title = QUESTIONS[2]
    lines.append(_question(table, comparison, title, report))
    return lines
