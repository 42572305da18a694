"""The report's sections after the tables: backgrounds, per-class recall, configurations,
importances, the method and the provenance."""

from __future__ import annotations

import math
from typing import Any

from study.report.summary import Report, importances
from study.spec import no_search
from study.trial_seeds import replicate_seed
from wbc.datasets.layout import WBC_CLASSES

__all__ = ["background_section", "best_section", "histology_phrase", "importance_section",
           "method_section", "provenance_section", "recall_section"]


def background_section(report: Report) -> list[str]:
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


def _learnt_from(record: dict[str, Any]) -> str:
    """What the segmenter trained on: the given masks, or (a tree with none) the confident
    classical masks it self-trained on (``wbc.segment.pseudo``)."""
    pseudo = record.get("pseudo_labels")
    if not pseudo:
        return f"the {record.get('masked_images')} masked images"
    kept = ", ".join(f"{name} {k}/{n}" for name, (k, n) in pseudo.get("per_class", {}).items())
    return (f"the confident masks of the classical segmenter, as the tree gave none "
            f"(self-training: {pseudo.get('kept')} of {pseudo.get('candidates')} kept, one "
            f"convex, central cell each; {kept})")


def segmentation_section(report: Report) -> list[str]:
    """How good the predicted masks are: the segmenter and the baselines, held out and (on a
    synthetic tree) against the true masks of the images it predicted."""
    from wbc.segment import METHOD_NAMES

    record = report.results.study.get("segmentation") or {}
    if not record:
        return []
    settings = record.get("settings", {})
    lines = ["## Masks for all data", "",
             "pretrain_aug_predicted pastes every training image's cell: "
             + (f"the {record.get('given_masks')} mask files given with the tree where there "
                f"is one, a predicted one for the {record.get('written')} other image files "
                if record.get("given_masks")
                else f"a predicted mask for each of the {record.get('written')} image files ") +
             f"({record.get('predicted_images')} distinct images; in `{record.get('masks')}/`). "
             f"The segmenter is a U-Net on a ResNet-18 encoder ({record.get('encoder')} start), "
             f"trained on {_learnt_from(record)} at "
             f"{settings.get('image_size')} px for {settings.get('steps')} steps with flips, "
             "quarter turns and colour jitter. Whole-cell IoU and Dice per image at the image's "
             "own size, mean over images (median and the 10th percentile of IoU beside them):",
             "", "| scored on | method | images | IoU | Dice | median IoU | 10th pct IoU |",
             "|---|---|---|---|---|---|---|"]
    groups = [(f"held-out masked images ({(record.get('heldout') or {}).get('folds')}-fold)",
               record.get("heldout")),
              ("withheld given masks and true masks" if record.get("withheld_masks")
               else "true masks of the predicted images", record.get("truth"))]
    scored = [f"| {where} | {name} | {row['n']} | {row['iou']:.3f} | {row['dice']:.3f} | "
              f"{row['iou_median']:.3f} | {row['iou_p10']:.3f} |"
              for where, scores in groups for method, name in METHOD_NAMES.items()
              if (row := (scores or {}).get(method))]
    if scored:
        lines += scored
    else:  # nothing to score against (a real tree without masks): no empty table
        lines[2] = lines[2].split(" Whole-cell IoU")[0]
        del lines[3:]
    if not record.get("truth"):
        lines += ["", "This tree has no true masks for its unmasked images (a real tree): "
                  + ("nothing here scores the predicted masks; look at them (`figures/"
                     "segmentation.png`, or the files in the masks folder)."
                     if record.get("pseudo_labels") else
                     "the held-out scores are the only measure of the predicted masks.")]
    seconds = record.get("seconds", {})
    scoring = (f" ({seconds.get('scoring', math.nan):.0f} s of it the k-fold scoring)"
               if not record.get("pseudo_labels") else "")
    lines += ["", f"Segmentation took {seconds.get('total', math.nan):.0f} s on "
              f"{record.get('device')}{scoring}"
              f"{' (reused from the cache)' if record.get('cached') else ''}; "
              f"cache key `{record.get('key')}`."
              + (" `figures/segmentation.png` outlines predicted masks on images that have "
                 "none." if report.results.root is not None
                 and (report.results.root / str(record.get("masks"))).is_dir() else ""), ""]
    return lines


def recall_section(report: Report) -> list[str]:
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
        if source.endswith("_ssl"):
            what, probe = (("WBC self-supervised pretraining (SimCLR) on WBC_100's training "
                            "images, labels unused", "WBC") if source == "wbc_ssl"
                           else ("pRCC self-supervised pretraining (SimCLR)", "CAM16"))
            lines.append(
                f"- {what}: loss "
                f"{record.get('ssl_loss', math.nan):.3f} after {record.get('epochs')} epochs on "
                f"{record.get('ssl_images', record.get('prcc_images'))} images; {probe} probe "
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


_FROM = {"folder": "given apart from the WBC tree", "tree": "in the WBC tree",
         "synthetic tree": "in the study's synthetic tree"}


def histology_phrase(study: dict[str, Any], dataset: str, *, brief: bool = False) -> str:
    """The histology ``dataset`` ("cam16" or "prcc") of a study as its ``study.json`` records
    it (``data.histology``): "real tissue from /path, given apart from the WBC tree (248 train
    / 36 val / 72 test tiles)", or "real tissue" when ``brief``; "" when not recorded (a study
    from before the record)."""
    origin = ((study.get("data") or {}).get("histology") or {}).get(dataset)
    if not isinstance(origin, dict):
        return ""
    kind = ("synthetic tissue (wbc synth)" if origin.get("kind") == "synthetic"
            else "real tissue")
    if brief:
        return kind
    counts = origin.get("counts") or {}
    if dataset == "cam16":
        size = " / ".join(f"{sum(by_class.values())} {split}" for split, by_class
                          in counts.items() if isinstance(by_class, dict)) + " tiles"
    else:
        size = f"{origin.get('images')} images"
    where = _FROM.get(str(origin.get("source")), "")
    return f"{kind} from {origin.get('root')}{', ' + where if where else ''} ({size})"


def _histology_lines(study: dict[str, Any]) -> list[str]:
    """One line per histology the study's pretraining used (CAM16, pRCC), from its record."""
    pretrain = study.get("pretrain") or {}
    sources = {"cam16"} if "val_accuracy" in pretrain else set(pretrain)
    used = []
    if any("cam16" in source for source in sources):
        used.append(("cam16", "CAM16 tiles (supervised pretraining)"))
    if any(source.startswith("prcc_ssl") for source in sources):
        used.append(("prcc", "pRCC images (self-supervised pretraining)"))
    return [f"- {label}: {phrase}" for dataset, label in used
            if (phrase := histology_phrase(study, dataset))]


def _reran(report: Report) -> str:
    spec = report.results.study.get("spec", {})
    if spec.get("final_config") == "replicates":
        return ("Each final seed re-ran the best trial of its own independent search "
                "(`final_config = \"replicates\"`: the cell's search trials dealt in turn to "
                "the seeds, sampled at random and trained with the replicate's seed), so the "
                "final seeds are replicates of the whole experiment; the last column says which "
                "trials they re-ran.")
    if spec.get("final_config") == "resampled":
        return ("Each final seed re-ran the best trial of its own bootstrap resample of the "
                "cell's search trials (`final_config = \"resampled\"`), so the final seeds' "
                "spread includes the search's choice of configuration; the last column says "
                "which trials they re-ran.")
    return "The final seeds re-ran this configuration."


def _fixed_section(report: Report) -> list[str]:
    """A study without a search: the one configuration every seed trained."""
    trials = report.results.trials
    finals = trials[trials["phase"] == "final"] if len(trials) else trials
    if not len(finals):
        return []
    first = finals.sort_values("trial_id").iloc[0]
    shown = [f"{name} {first[name]:.3g}" if isinstance(first[name], float) else
             f"{name} {first[name]}" for name in ("lr", "weight_decay", "imbalance")
             if name in first and first[name] is not None]
    pasting = finals[finals["aug_factor"].notna()] if "aug_factor" in finals else finals[:0]
    if len(pasting):
        row = pasting.iloc[0]
        shown.append(f"and for the strategies that paste aug_factor {int(row['aug_factor'])}, "
                     f"background {row['background']}")
    return ["## The configuration", "",
            "No search (`search_trials = 0`): every seed of every cell trained the "
            f"spec's one configuration, {', '.join(shown)}.", ""]


def best_section(report: Report) -> list[str]:
    if no_search(report.results.study.get("spec", {})):
        return _fixed_section(report)
    lines = ["## Best configuration per cell", "",
             f"The search trial with the highest selection macro-F1. {_reran(report)}", "",
             "| cell | val macro-F1 | " + " | ".join(report.searched) + " | final seeds re-ran |",
             "|---|---|" + "---|" * (len(report.searched) + 1)]
    for cell in report.cells.values():
        if not cell.best:
            lines.append(f"| {cell.name} | – |" + " – |" * (len(report.searched) + 1))
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
                     + " | ".join(values) + f" | {_sources(cell)} |")
    return [*lines, ""]


def _sources(cell: Any) -> str:
    """Which search trials the final seeds re-ran: ``search-02 (seeds 1, 3), search-00 (2)``."""
    if not len(cell.finals) or "config_from" not in cell.finals:
        return "–"
    groups: dict[str, list[int]] = {}
    for source, seed in zip(cell.finals["config_from"], cell.finals["seed"], strict=True):
        groups.setdefault(str(source).rsplit("/", 1)[-1], []).append(int(seed))
    return ", ".join(f"{k} ({', '.join(map(str, v))})" for k, v in groups.items())


def importance_section(report: Report) -> list[str]:
    if no_search(report.results.study.get("spec", {})):
        return []  # nothing was searched
    table = importances(report)
    lines = ["## Which hyperparameters mattered", ""]
    if not len(table):
        return [*lines, "Too few search trials to say (at least 4 per strategy).", ""]
    sources = " and ".join(f"`{s}`" for s in dict.fromkeys(table["source"]))
    lines += ["fANOVA importance (Optuna) of each searched hyperparameter for the selection "
              "macro-F1, ranked within each cell, per strategy over all subsets, from the "
              f"search trials in {sources}. With few trials these are rough.", "", "| strategy | trials | " +
              " | ".join(report.searched) + " |", "|---|---|" + "---|" * len(report.searched)]
    for strategy, group in table.groupby("strategy", sort=False):
        scores = dict(zip(group["parameter"], group["importance"], strict=True))
        lines.append(f"| {strategy} | {int(group['trials'].iloc[0])} | " + " | ".join(
            f"{scores[n]:.2f}" if n in scores else "–" for n in report.searched) + " |")
    return [*lines, ""]


def _search_seeds(spec: dict[str, Any]) -> str:
    """The search trials' training seeds as ``study.tune.search.search_seed`` gives them."""
    seed = spec.get("seed")
    if no_search(spec):
        return "no search"
    if spec.get("final_config") != "replicates" or not isinstance(seed, int):
        return f"search trials train with seed {seed}"
    seeds = [replicate_seed(seed, r) for r in range(int(spec.get("final_seeds") or 0))]
    return f"search trials train with seed {', '.join(map(str, seeds))} (one per replicate)"


def _precision_lines(trials: Any) -> list[str]:
    """What the trials computed in (the setting, and what it meant on their machines)."""
    if "precision_used" not in trials or trials["precision_used"].isna().all():
        return []  # rows from before the record kept it
    used = trials["precision_used"].dropna().value_counts()
    setting = ", ".join(sorted(set(trials["precision"].dropna()))) if "precision" in trials \
        else "unrecorded"
    return [f"- precision: {setting} setting; trials ran in "
            + ", ".join(f"{name} ({count})" for name, count in sorted(used.items()))]


def provenance_section(report: Report) -> list[str]:
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
        f"- seeds: {_search_seeds(study.get('spec', {}))}; final "
        f"seeds {sorted({int(s) for s in trials[trials['phase'] == 'final']['seed']})}"
        if len(trials) else "- seeds: –",
        f"- code: git {prov.get('git_commit')}, source digest `{prov.get('code_sha256')}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- hardware: {hardware.get('cpu')}, {hardware.get('cpu_count')} CPUs, "
        f"{hardware.get('memory_gib')} GiB, GPUs: {', '.join(hardware.get('gpus') or []) or 'none'}",
    ]
    lines += _precision_lines(trials)
    lines += _pretrain_lines(study.get("pretrain") or {})
    lines += _histology_lines(study)
    for i, session in enumerate(sessions, 1):
        if "wall_seconds" not in session:
            lines.append(f"- session {i}: stopped before it finished (no timing recorded)")
            continue
        lines.append(
            f"- session {i}{' (resumed)' if session.get('resumed') else ''}: "
            f"{session['wall_seconds']:.0f} s = data {session.get('data_seconds', 0):.0f} + "
            f"Ray start-up {session.get('ray_startup_seconds', 0):.0f} + pretraining "
            f"{session.get('pretrain_seconds', 0):.0f} + "
            + (f"segmentation {session['segmentation_seconds']:.0f} + "
               if session.get("segmentation_seconds") else "")
            + f"trials "
            f"{session.get('tune_seconds', 0):.0f} s on {session.get('slots')} slots; "
            f"{session.get('trials_run')} trials; inside training loops "
            f"{100 * session.get('inside_training_loops_fraction', 0):.0f}% of the slot time; "
            f"per-trial overhead {session.get('per_trial_overhead_seconds') or 0:.1f} s")
    return [*lines, ""]


def method_section(report: Report) -> list[str]:
    """How the figures were computed, in the words the tables use."""
    spec = report.results.study.get("spec", {})
    selection = spec.get("selection", "full")
    chosen = ("on the whole selection split for every budget" if selection == "full" else
              "on a stratified part of the selection split as large as the budget "
              "(`selection = \"scaled\"`: WBC_1 selects on 1% of it, as a researcher with 1% "
              "of the labels would)")
    return ["## Method", "",
            f"Each run picked its best epoch, and each cell its configuration, {chosen}. Every "
            "figure comes from the reporting split, which took no part in any choice.", "",
            "Intervals are 95%"
            + (" (a strategy comparison's over all its looks together: see Paired "
               "comparisons)" if report.plan.sequential else "")
            + " and cover two sources of variance: the training seeds and the "
            "sampling of the reporting images (Bouthillier et al. 2021, *Accounting for "
            "variance in machine learning benchmarks*). The image part is a "
            "paired, class-stratified bootstrap over the reporting images (2,000 replicates, "
            "the same draw for both strategies and every seed); the seed part is the variance "
            "of the per-seed values; the interval is a t interval on their sum with "
            "Welch-Satterthwaite degrees of freedom, so that three seeds are not mistaken for "
            "thirty. p-values are Holm-adjusted over each table. P(improvement) is the chance "
            "that a run of the first strategy beats the same-seed run of the second on a "
            "resampled reporting set (Agarwal et al. 2021). *Detectable* is the smallest "
            "difference this design finds with 80% power; *seeds for 0.5 pt* is how many final "
            "seeds a half-point difference would need on this reporting split (\"–\" where "
            "image noise alone is larger: that needs more reporting images, not more seeds).",
            "", _search_caveat(spec), ""]


def _search_caveat(spec: dict[str, Any]) -> str:
    """What the intervals leave out: the search itself, in the spec's own numbers."""
    trials = spec.get("search_trials")
    tried = f"the {trials} configurations" if isinstance(trials, int) else "the configurations"
    if no_search(spec):
        return ("There was no search: every seed trained the spec's fixed configuration, which "
                "another run of the study trains too, so what varies between two runs (the "
                "training seeds) is in every interval. What no interval says is whether another "
                "configuration would change a verdict; a searched design asks that "
                "(`--set final_config=replicates --set search_trials=1 --set "
                "max_final_seeds=0`).")
    if spec.get("final_config") == "replicates":
        seeds = spec.get("final_seeds")
        return ("Every final seed re-ran the best of its own independent search, so the "
                "intervals include what another search would have tried. What they do not "
                "include: another sample of cells, and the settings every trial shares. With "
                f"{seeds} replicates a cell the intervals are wide; a verdict found by two "
                "studies with different seeds is still worth more than one (`--set seed=1`).")
    if spec.get("final_config") == "resampled":
        part = (f"The final seeds re-ran configurations drawn from a resample of {tried} each "
                "cell's search tried, so the seed part includes the choice among them; ")
    else:
        part = (f"Every final seed re-ran the best of {tried} each cell's search tried, so the "
                "seed part leaves out the choice among them; ")
    return (part + "no interval includes what another search would have tried. A study with "
            "another `seed` searches anew and can move a cell's mean, or a difference, by more "
            "than its interval, the more so with few search trials. A verdict found by two "
            "studies with different seeds is worth more than one: run the study again with "
            "`--set seed=1` and read both reports.")
