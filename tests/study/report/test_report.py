"""``study report`` on handmade results with known numbers: answers first, intervals that
include the reporting images, the majority-class baseline, and figures with data in them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from study.cli import main
from study.report import load_results, paired, summarise, write_report
from study.report.stats import cell_estimate
from study.results import ResultsStore
from wbc.datasets.layout import WBC_CLASSES
from wbc.metrics import classification_metrics

# The reporting split: 60 images, Neutrophil the commonest (24, 40%).
TARGETS = np.repeat(np.arange(5), [4, 8, 16, 8, 24])
SEEDS = (1, 2, 3)


def _predictions(quality: str, seed: int, strategy: str = "scratch") -> list[int]:
    """``perfect``: every image right; ``good``: 6 of 60 wrong (which ones depends on the seed
    and the strategy); ``poor``: half wrong, mostly called Neutrophil."""
    rng = np.random.default_rng([seed, len(quality), len(strategy)])
    pred = TARGETS.copy()
    wrong = {"perfect": 0, "good": 6, "poor": 30}[quality]
    index = rng.choice(TARGETS.size, wrong, replace=False)
    pred[index] = np.where(TARGETS[index] == 4, 2, 4)
    return pred.tolist()


QUALITY = {("WBC_100", "scratch"): "good", ("WBC_100", "pretrain"): "perfect",
           ("WBC_1", "scratch"): "poor", ("WBC_1", "pretrain"): "poor"}


def _row(subset: str, strategy: str, phase: str, index: int, seed: int, pred: list[int],
         **extra: Any) -> dict[str, Any]:
    key = f"{subset}-{strategy}/" + (f"final-seed{seed}" if phase == "final"
                                     else f"search-{index:02d}")
    scores = classification_metrics(TARGETS, pred, num_classes=5, class_names=WBC_CLASSES)
    return {"study": "hand", "cell": f"{subset}-{strategy}", "subset": subset,
            "strategy": strategy, "phase": phase, "trial_id": key, "seed": seed,
            "status": "completed", "lr": 0.01 * (index + 1), "weight_decay": 1e-4,
            "imbalance": ["none", "weighted", "balanced"][index % 3], "aug_factor": 0,
            "background": "none", "best_epoch": 2, "epochs_run": 2,
            "val_macro_f1": 0.5 + 0.1 * index, "val_accuracy": 0.8,
            "test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"],
            "test_balanced_accuracy": scores["balanced_accuracy"], "test_n": TARGETS.size,
            **{f"test_recall_{c}": v for c, v in scores["recall"].items()},
            "test_confusion_matrix": scores["confusion_matrix"], "test_predictions": pred,
            "test_targets": TARGETS.tolist(), "selection_split": "val half A",
            "reporting_split": "val half B", "train_loop_seconds": 1.0,
            "config_from": f"{subset}-{strategy}/search-01" if phase == "final" else None,
            **extra}


def _study(root: Path, *, drop_final: tuple[str, str] | None = None,
           seeds: tuple[int, ...] = SEEDS, epochs: bool = True,
           cells: dict[tuple[str, str], str] = QUALITY, **record: Any) -> Path:
    store = ResultsStore(root)
    for (subset, strategy), quality in cells.items():
        for index in range(4):
            row = _row(subset, strategy, "search", index, 0, _predictions(quality, 0, strategy))
            store.write_trial(row, [{"epoch": e, "val_macro_f1": 0.2 * e} for e in (1, 2)]
                              if epochs else [])
        if (subset, strategy) == drop_final:
            continue
        for seed in seeds:
            row = _row(subset, strategy, "final", 1, seed, _predictions(quality, seed, strategy))
            store.write_trial(row, [{"epoch": e, "val_macro_f1": 0.3 * e} for e in (1, 2)]
                              if epochs else [])
    store.write_study({"study": "hand", "preset": "quick", "status": "complete",
                       "spec": {"subsets": ["WBC_1", "WBC_100"],
                                "strategies": sorted({s for _, s in cells}), "search_trials": 4,
                                "final_seeds": len(seeds), "image_size": 32, "epochs": 2,
                                "seed": 0},
                       "data": {"source": "synthetic", "scale": 0.05, "seed": 0,
                                "fingerprint": "abc"},
                       "provenance": {"versions": {"torch": "x"}, "hardware": {}},
                       "sessions": [], "wall_seconds": 1.0, **record})
    return root


def _headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_the_report_opens_with_answers_and_macro_f1_leads(tmp_path: Path) -> None:
    path, report = write_report(_study(tmp_path / "r"))
    text = path.read_text()
    assert report.subsets == ["WBC_100", "WBC_1"]  # largest budget first, as the report
    assert _headings(text)[0] == "## Answers"
    answers = text.split("## Answers")[1].split("\n## ")[0]
    assert "**Does CAM16 pretraining help?** Yes at WBC_100 (strong evidence)" in answers
    assert "no clear difference at WBC_1" in answers
    assert "**At which label budget?**" in answers
    assert "Not answered: this study did not run ssl" in answers
    tables = text.split("## Table 1")[1]
    assert tables.index("### macro-F1") < tables.index("### balanced accuracy") \
        < tables.index("### accuracy")
    for heading in ("## The reporting split", "## Paired comparisons", "## Per-class recall",
                    "## Method", "## Provenance"):
        assert heading in text
    # The method says what the intervals leave out, in the spec's numbers.
    method = text.split("## Method")[1].split("\n## ")[0]
    assert "every final seed re-ran the best of the 4 configurations" in method.lower()
    assert "no interval includes what another search would have tried" in method


def test_table_1_intervals_include_the_reporting_images(tmp_path: Path) -> None:
    text = write_report(_study(tmp_path / "r"))[0].read_text()
    runs = np.array([_predictions("good", s) for s in SEEDS])
    est = cell_estimate(TARGETS, runs, "macro_f1", 5, replicates=2000)
    assert f"| scratch | {100 * est.estimate:.1f} [{100 * est.low:.1f}, {100 * est.high:.1f}]" \
        in text
    # The images' sampling is in it: at least as wide as that part alone.
    assert est.image_sd > 0 and (est.high - est.low) / 2 >= 1.96 * est.image_sd


def test_the_reporting_split_and_the_majority_baseline_are_stated(tmp_path: Path) -> None:
    text = write_report(_study(tmp_path / "r"))[0].read_text()
    assert ("60 images (Basophil 4, Eosinophil 8, Lymphocyte 16, Monocyte 8, Neutrophil 24)"
            in text)
    share = 24 / 60
    majority_f1 = 2 * share / (1 + share) / 5
    assert f"Always answering Neutrophil scores macro-F1 {100 * majority_f1:.1f}" in text
    assert f"| *always Neutrophil* | {100 * majority_f1:.1f} | {100 * majority_f1:.1f} |" in text
    assert f"| *always Neutrophil* | {100 * share:.1f} |" in text  # the accuracy table


def test_paired_comparisons_separate_a_real_gain_from_noise(tmp_path: Path) -> None:
    report = summarise(load_results(_study(tmp_path / "r")))
    table = paired(report).set_index(["subset", "comparison"])
    gain = table.loc[("WBC_100", "pretrain - scratch")]
    assert gain["seeds"] == 3 and gain["difference"] > 0.05
    assert gain["low"] > 0 and gain["evidence"] == "strong"
    assert gain["prob_improvement"] > 0.95
    noise = table.loc[("WBC_1", "pretrain - scratch")]
    assert noise["low"] < 0 < noise["high"] and noise["evidence"] == "none"
    assert noise["p_holm"] >= noise["p"]
    assert math.isfinite(noise["min_detectable"]) and noise["min_detectable"] > 0


def test_one_seed_claims_nothing(tmp_path: Path) -> None:
    path, _ = write_report(_study(tmp_path / "r", seeds=(1,)))
    text = path.read_text()
    assert "1 final seed per cell" in text and "1 final seeds" not in text
    assert "strong evidence" not in text.split("## Answers")[1].split("\n## ")[0]
    assert "With one seed per cell nothing here can be significant" in text


def test_a_partial_study_says_what_is_missing(tmp_path: Path) -> None:
    root = _study(tmp_path / "r", drop_final=("WBC_1", "pretrain"))
    path, report = write_report(root)
    assert report.missing == ["WBC_1-pretrain: 0 of 3 final seeds (4 of 4 search trials)"]
    text = path.read_text()
    assert "Incomplete study" in text and "WBC_1-pretrain: 0 of 3 final seeds" in text
    assert "| pretrain | 100.0" in text  # the cells that are there are still reported


def _coloured(path: Path, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels of ``path`` within ``tolerance`` of ``rgb``: how much of a colour was drawn."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= tolerance).sum())


ORANGE = (255, 127, 14)  # matplotlib's C1: the final seeds' learning curves


def test_learning_curves_draw_the_epochs(tmp_path: Path) -> None:
    with_epochs = _study(tmp_path / "with")
    write_report(with_epochs)
    drawn = _coloured(with_epochs / "figures" / "learning_curves.png", ORANGE)
    without = _study(tmp_path / "without", epochs=False)
    write_report(without)
    empty = _coloured(without / "figures" / "learning_curves.png", ORANGE)
    assert drawn > 500 and empty < 50, (drawn, empty)


def test_figures_are_print_quality_pngs_and_reproducible(tmp_path: Path) -> None:
    root = _study(tmp_path / "r")
    path, _ = write_report(root, formats=("png", "svg"))
    figures = sorted((root / "figures").glob("*.png"))
    assert len(figures) == 5
    assert sorted(p.stem for p in (root / "figures").glob("*.svg")) == [p.stem for p in figures]
    first = {p.name: p.read_bytes() for p in [path, *figures]}
    for figure in figures:
        with Image.open(figure) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 1000
        with Image.open(figure) as image:
            assert round(image.info["dpi"][0]) == 200
        assert f"figures/{figure.name}" in path.read_text()
    write_report(root)
    assert {p.name: p.read_bytes() for p in [path, *figures]} == first


def test_report_command_prints_the_table_and_names_bad_folders(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _study(tmp_path / "r")
    assert main(["report", str(root), "--out", str(tmp_path / "out"), "--format", "png,pdf"]) == 0
    out = capsys.readouterr().out
    assert "WBC_100" in out and "macro-F1" in out and "always Neutrophil" in out
    assert (tmp_path / "out" / "report.md").exists()
    assert (tmp_path / "out" / "figures" / "by_budget.pdf").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "neither trials.parquet nor a Ray Tune experiment" in capsys.readouterr().err
    assert main(["report", str(root), "--format", "gif"]) == 2
    assert "gif" in capsys.readouterr().err


def test_the_committed_reference_report_is_reproduced(tmp_path: Path) -> None:
    """``study report results/quick`` on a fresh clone writes the committed report.md."""
    import shutil

    committed = Path(__file__).resolve().parents[3] / "results" / "quick"
    for name in ("trials.parquet", "epochs.parquet", "study.json"):
        shutil.copy(committed / name, tmp_path / name)
    path, report = write_report(tmp_path)
    assert not report.missing
    assert path.read_text() == (committed / "report.md").read_text()
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == sorted(
        p.name for p in (committed / "figures").glob("*.png"))


def test_on_the_reports_dataset_its_numbers_stand_beside_ours(tmp_path: Path) -> None:
    from wbc.datasets.layout import REPORT_TABLE1

    root = _study(tmp_path / "r")
    store = ResultsStore(root)
    record = store.read_study()
    counts = {"train": {c: n for c, (n, _, _) in REPORT_TABLE1.items()},
              "val": {c: v for c, (_, _, v) in REPORT_TABLE1.items()}}
    record["data"] = {"source": "tree", "root": "/data/wbc", "wbc100_counts": counts}
    store.write_study(record)
    text = write_report(root)[0].read_text()
    assert "(report 97.05)" in text and "(report 84.03)" in text
    assert "the report's own accuracy stands in brackets" in text
    counts["val"]["Basophil"] += 1  # another tree of the same shape is not the report's
    store.write_study({**record, "data": {**record["data"], "wbc100_counts": counts}})
    assert "(report 97.05)" not in write_report(root)[0].read_text()


def test_a_real_tree_study_is_asked_its_own_questions(tmp_path: Path) -> None:
    """No pRCC and no given masks: in-domain SSL is asked with its backbone's probe, the
    augmentation with the predicted masks, and the pRCC question is not raised."""
    cells = {(subset, strategy): quality
             for subset, quality in (("WBC_100", "good"), ("WBC_1", "poor"))
             for strategy in ("scratch", "pretrain", "ssl_wbc", "pretrain_aug_predicted")}
    probe = {"knn_accuracy": 0.686, "knn_accuracy_random": 0.598, "epochs": 12,
             "ssl_loss": 3.8, "ssl_images": 1663}
    text = write_report(_study(tmp_path / "r", cells=cells,
                               pretrain={"wbc_ssl": probe}))[0].read_text()
    answers = text.split("## Answers")[1].split("\n## ")[0]
    assert ("**Does self-supervised pretraining on the study's own unlabelled training images "
            "help?**") in answers
    assert "k-NN accuracy 0.686 from the labelled training images" in answers
    assert "0.598 from random init, after 12 epochs" in answers
    assert "on pRCC" not in answers
    assert "Macro-F1 of pretrain_aug_predicted minus pretrain" in answers
    assert "did not run pretrain_aug;" not in answers
    assert "- WBC self-supervised pretraining (SimCLR) on WBC_100's training images" in text


def test_a_sequential_study_says_per_comparison_its_seeds_and_why_it_stopped(
        tmp_path: Path) -> None:
    """WBC_100 ran 6 seeds (its budget looked again), WBC_1 the planned 3: the perfect-vs-poor
    comparison at WBC_100 is decided at the first look, the poor-vs-poor one at WBC_1 out of
    reach."""
    cells = {**QUALITY, ("WBC_100", "scratch"): "poor"}
    root = _study(tmp_path / "r", seeds=(1, 2, 3), cells=cells)
    store = ResultsStore(root)
    for seed in (4, 5, 6):
        for strategy in ("scratch", "pretrain"):
            quality = cells[("WBC_100", strategy)]
            store.write_trial(_row("WBC_100", strategy, "final", 1, seed,
                                   _predictions(quality, seed, strategy)), [])
    study = json.loads((root / "study.json").read_text())
    study["spec"].update(search_trials=0, final_seeds=3, max_final_seeds=6, seeds_per_look=3)
    store.write_study(study)
    text = write_report(root)[0].read_text()
    assert "no search (one fixed configuration) and 3 final seeds per cell (6 at a label " \
           "budget still undecided after them)" in text
    paired_section = text.split("## Paired comparisons")[1].split("\n## ")[0]
    assert "Seeds were spent where they decide" in paired_section
    rows = {line.split(" | ")[0].strip("| "): line for line in paired_section.splitlines()
            if line.startswith("| WBC")}
    assert rows["WBC_100"].endswith("| decided at 3 seeds |")  # its figures: that look's
    # Each interval is the repeated one that matches its sequential p: it excludes 0 exactly
    # where the evidence is at least "some".
    assert "| difference [repeated 95% CI] |" in paired_section
    for line in rows.values():
        cells = [c.strip() for c in line.strip("|").split("|")]
        low, high = (float(x) for x in cells[3].split("[")[1].rstrip("]").split(","))
        assert (low > 0 or high < 0) == (cells[7] != "none"), line
    assert "| 3 |" in rows["WBC_100"]
    assert rows["WBC_1"].endswith("| out of reach of the seed budget |")
    assert "## Best configuration per cell" not in text and "## The configuration" in text
    assert "seeds: no search; final seeds [1, 2, 3, 4, 5, 6]" in text
