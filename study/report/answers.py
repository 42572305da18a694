"""The report's opening: one plain sentence per question the study was run to answer.

Every word of judgement is derived from the numbers in the comparison tables
(``study.report.summary``): "strong evidence" when the 95% interval (with sequential seeds, the
repeated one that matches the sequential p) excludes zero after Holm's
correction over the whole table, "some evidence" when it does only before the correction, and
"no clear difference" otherwise, said together with the smallest difference the study could have
detected. A question the study did not run (no SSL strategy, no pasting strategy) is answered
with what to run.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.report.sections import histology_phrase
from study.report.summary import Report, budget_effects
from study.spec import no_search
from wbc.strategies import get_strategy

__all__ = ["answers", "segmenter_quality"]

QUESTIONS = (
    ("pretrain - scratch", "Does CAM16 pretraining help?"),
    ("pretrain_aug - pretrain", "Does the mask-based augmentation help?"),
    ("ssl - scratch", "Does self-supervised pretraining on pRCC help?"),
    ("ssl_wbc - scratch", "Does self-supervised pretraining on the study's own unlabelled "
                          "training images help?"),
)


def _points(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.1f}"


def _effect(row: Any) -> str:
    """``+3.1 points [-2.0, +8.2] at WBC_1 (P(improvement) 0.71)``."""
    text = f"{_points(row.difference)} [{_points(row.low)}, {_points(row.high)}] at {row.subset}"
    if row.difference == 0 and row.low == 0 and row.high == 0:
        # Every seed predicted alike: the first strategy added nothing here (the augmentation
        # with no image that has a mask at this budget ran as plain pretraining).
        return text + " (identical runs: nothing to paste, no training image here has a mask)" \
            if get_strategy(row.comparison.split(" - ")[0]).mask_augment \
            else text + " (identical runs)"
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
    """How well the pretraining a comparison rests on learnt: the CAM16 classifier its own task,
    the in-domain SimCLR backbone features a k-NN can use."""
    if "ssl_wbc" in strategies:
        ssl = (report.results.study.get("pretrain") or {}).get("wbc_ssl")
        if isinstance(ssl, dict) and "knn_accuracy" in ssl:
            return (f" (the SimCLR backbone's features: k-NN accuracy "
                    f"{ssl['knn_accuracy']:.3f} from the labelled training images to the "
                    f"selection images, {ssl.get('knn_accuracy_random', float('nan')):.3f} from "
                    f"random init, after {ssl.get('epochs')} epochs)")
    if "pretrain" not in strategies:
        return ""
    record = (report.results.study.get("pretrain") or {}).get("cam16")
    if not isinstance(record, dict) or "val_accuracy" not in record:
        return ""
    tissue = histology_phrase(report.results.study, "cam16", brief=True)
    return (f" (the CAM16 pretraining{' on ' + tissue if tissue else ''} reached val accuracy "
            f"{record['val_accuracy']:.3f} and "
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
        why = ("the study ran no search, every pasting run used the spec's one background "
               "(`--set search_trials=2` searches it)" if no_search(report.results.study.get(
                   "spec", {})) else "no search trial pasted cells")
        return f"- **Which background for the pasted cells?** Not answered: {why}."
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


_STRENGTH = {"strong": "strong evidence", "some": "some evidence"}


def _one(table: pd.DataFrame, comparison: str, subset: str) -> Any:
    if not len(table):
        return None
    rows = table[(table["comparison"] == comparison) & (table["subset"] == subset)]
    return next(rows.itertuples(), None)


def _stated(row: Any, what: str) -> str:
    strength = _STRENGTH.get(row.evidence, "no clear difference")
    return (f"{what} {_points(row.difference)} [{_points(row.low)}, {_points(row.high)}] "
            f"({strength})")


def segmenter_quality(study: dict[str, Any]) -> str:
    """``the segmenter's held-out IoU 0.93 (classical 0.87) on 42 masked images ...``."""
    record = study.get("segmentation") or {}
    heldout, truth = record.get("heldout") or {}, record.get("truth") or {}
    pseudo = record.get("pseudo_labels")
    if pseudo:  # no given mask: self-trained on the confident classical masks
        text = (f"the segmenter self-trained on {pseudo.get('kept')} of "
                f"{pseudo.get('candidates')} confident classical masks (the tree gave none)")
        if not truth:
            return text + "; no true masks to score its masks against"
    elif not heldout:
        return "the segmenter was not scored (fewer than 2 masked images)"
    else:
        text = (f"the segmenter's whole-cell IoU {heldout['model']['iou']:.3f} on held-out "
                f"masked images (classical baseline {heldout['classical']['iou']:.3f}; "
                f"{record.get('masked_images')} masked, {record.get('predicted_images')} "
                "predicted)")
    if truth:
        text += (f", {truth['model']['iou']:.3f} against the true masks of the predicted "
                 f"images (classical {truth['classical']['iou']:.3f})")
    return text


def _masks_verdict(given: Any, predicted: Any, change: Any) -> str:
    """The plain answer, from the evidence of the three comparisons at the smallest budget."""
    hurt = given is not None and given.evidence in ("strong", "some") and given.difference < 0
    premise = ("" if given is None or hurt else
               "With the given masks the augmentation did not clearly hurt here in the first "
               "place, so this study cannot test the report's explanation of its drop. ")
    if predicted is not None and predicted.evidence == "strong":
        if predicted.difference < 0:
            tail = (": the missing masks do not explain the drop on their own." if hurt
                    else ".")
            return f"{premise}With a mask for every image it hurts (strong evidence){tail}"
        return f"{premise}With a mask for every image it helps (strong evidence)."
    if change is not None and change.evidence == "strong":
        better = change.difference > 0
        reading = (": the report's explanation, too few masked cells, holds at least in part."
                   if better and hurt else ".")
        return (f"{premise}Masks for every image make the augmentation "
                f"{'better' if better else 'worse'} than the given ones (strong "
                f"evidence){reading}")
    if change is not None and change.evidence == "some":
        direction = "better" if change.difference > 0 else "worse"
        return (f"{premise}Predicted masks for every image look {direction} than the given "
                "ones here, but not once corrected for the comparisons of the table (some "
                "evidence only).")
    detectable = (f"; it could only have detected a change of about "
                  f"{100 * change.min_detectable:.1f} points or more"
                  if change is not None and math.isfinite(change.min_detectable) else "")
    return (f"{premise}Whether masks for every image change what the augmentation does here, "
            f"the study cannot tell{detectable}.")


def _masks_sentence(report: Report, table: pd.DataFrame) -> str:
    """The report's own hypothesis: the augmentation hurt at the smallest budget because only
    about 10% of the images had masks. With predicted masks for every image, does it still?"""
    low = report.subsets[-1]
    title = f"**With masks for every image, does the augmentation still hurt at {low}?**"
    if "pretrain_aug_predicted" not in report.strategies:
        return (f"- {title} Not answered: this study did not run pretrain_aug_predicted "
                "(every training image's cell pasted, with predicted masks where none is "
                "given); `--preset quick-masks` runs it beside pretrain_aug.")
    given = _one(table, "pretrain_aug - pretrain", low)
    predicted = _one(table, "pretrain_aug_predicted - pretrain", low)
    change = _one(table, "pretrain_aug_predicted - pretrain_aug", low)
    if predicted is None and change is None:
        missing = [s for s in ("pretrain", "pretrain_aug") if s not in report.strategies]
        hint = (f"this study did not run {' or '.join(missing)}, which it is compared with; "
                "`--preset quick-masks` runs all of them" if len(missing) == 2
                else f"no final runs of pretrain_aug_predicted and the others at {low} yet")
        return f"- {title} Not answered: {hint}."
    parts = []
    if given is not None:
        parts.append(_stated(given, "with the given masks, pretrain_aug minus pretrain"))
    if predicted is not None:
        parts.append(_stated(predicted, "with predicted masks for every image, "
                                        "pretrain_aug_predicted minus pretrain"))
    if change is not None:
        parts.append(_stated(change, "predicted minus given"))
    quality = segmenter_quality(report.results.study)
    verdict = _masks_verdict(given, predicted, change)
    others = [_stated(r, f"at {r.subset}") for r in table[
        (table["comparison"] == "pretrain_aug_predicted - pretrain_aug")
        & (table["subset"] != low)].itertuples()] if len(table) else []
    if others:
        parts.append("predicted minus given at the other budgets: " + ", ".join(others))
    seeds = int((predicted if predicted is not None else change).seeds)
    caveat = "" if seeds >= 2 else " With one seed per cell nothing here can be significant."
    return (f"- {title} {verdict} Macro-F1 in points at {low}: {'; '.join(parts)}; "
            f"{quality}.{caveat}")


def answers(report: Report, table: pd.DataFrame) -> list[str]:
    """The "Answers" section's lines, from the macro-F1 comparison ``table``."""
    asked = list(QUESTIONS[:2])
    if "pretrain_aug" not in report.strategies and "pretrain_aug_predicted" in report.strategies:
        # A tree without masks: its augmentation pastes the predicted ones only.
        asked[1] = ("pretrain_aug_predicted - pretrain", "Does the mask-based augmentation help "
                    "(every image's cell pasted, with predicted masks)?")
    lines = [_question(table, comparison, title, report) for comparison, title in asked]
    lines.append(_masks_sentence(report, table))
    lines.append(_budget_sentence(report))
    background = _background_sentence(report)
    if background:
        lines.append(background)
    # The self-supervised questions a study ran (pRCC's is asked when none ran, with what to
    # run): a real tree has no pRCC, and its in-domain SSL question stands alone.
    ran = [q for q in QUESTIONS[2:] if q[0].split(" - ")[0] in report.strategies]
    for comparison, title in ran or QUESTIONS[2:3]:
        lines.append(_question(table, comparison, title, report))
    return lines
