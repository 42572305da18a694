"""``study report`` on handmade results with known numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from study.cli import main
from study.report import load_results, paired, summarise, write_report
from study.results import ResultsStore
from wbc.layout import WBC_CLASSES

# Final test accuracies per (subset, strategy) and seed.
KNOWN = {
    ("WBC_100", "scratch"): [0.90, 0.92, 0.94],
    ("WBC_100", "pretrain"): [0.93, 0.95, 0.97],  # +3 points on every seed
    ("WBC_1", "scratch"): [0.60, 0.70, 0.80],
    ("WBC_1", "pretrain"): [0.65, 0.70, 0.90],
}
T975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def _row(subset: str, strategy: str, phase: str, index: int, seed: int, accuracy: float,
         **extra: Any) -> dict[str, Any]:
    key = f"{subset}-{strategy}/" + (f"final-seed{seed}" if phase == "final"
                                     else f"search-{index:02d}")
    matrix = [[0] * 5 for _ in range(5)]
    for c in range(5):
        matrix[c][c] = 10
    return {"study": "hand", "cell": f"{subset}-{strategy}", "subset": subset,
            "strategy": strategy, "phase": phase, "trial_id": key, "seed": seed,
            "status": "completed", "lr": 0.01 * (index + 1), "weight_decay": 1e-4,
            "imbalance": ["none", "weighted", "balanced"][index % 3], "aug_factor": 0,
            "background": "none", "best_epoch": 2, "epochs_run": 2,
            "val_macro_f1": 0.5 + 0.1 * index, "val_accuracy": 0.8,
            "test_accuracy": accuracy, "test_macro_f1": accuracy - 0.1,
            "test_balanced_accuracy": accuracy - 0.05, "test_n": 50,
            **{f"test_recall_{c}": 0.5 for c in WBC_CLASSES},
            "test_confusion_matrix": matrix, "selection_split": "val half A",
            "reporting_split": "val half B", "train_loop_seconds": 1.0, **extra}


def _study(root: Path, *, drop_final: tuple[str, str] | None = None) -> Path:
    store = ResultsStore(root)
    for (subset, strategy), accuracies in KNOWN.items():
        for index in range(4):
            row = _row(subset, strategy, "search", index, 0, 0.5)
            store.write_trial(row, [{"epoch": e, "val_macro_f1": 0.2 * e, "cell": row["cell"],
                                     "phase": "search"} for e in (1, 2)])
        if (subset, strategy) == drop_final:
            continue
        for seed, accuracy in enumerate(accuracies, start=1):
            row = _row(subset, strategy, "final", 1, seed, accuracy)
            store.write_trial(row, [{"epoch": e, "val_macro_f1": 0.3 * e, "cell": row["cell"],
                                     "phase": "final"} for e in (1, 2)])
    store.write_study({"study": "hand", "preset": "quick", "status": "complete",
                       "spec": {"subsets": ["WBC_1", "WBC_100"],
                                "strategies": ["scratch", "pretrain"], "search_trials": 4,
                                "final_seeds": 3, "image_size": 32, "epochs": 2, "seed": 0},
                       "data": {"source": "synthetic", "scale": 0.05, "seed": 0,
                                "fingerprint": "abc"},
                       "provenance": {"versions": {"torch": "x"}, "hardware": {}},
                       "sessions": [], "wall_seconds": 1.0})
    return root


def test_table_has_the_known_means_and_t_intervals(tmp_path: Path) -> None:
    path, report = write_report(_study(tmp_path / "r"))
    assert report.subsets == ["WBC_100", "WBC_1"]  # largest budget first
    text = path.read_text()
    half = T975_2 * 0.02 / math.sqrt(3)
    assert f"| scratch | {92:.2f} [{100 * (0.92 - half):.2f}, {100 * (0.92 + half):.2f}]" in text
    # WBC_1 scratch: mean 0.70, sd 0.10
    half = T975_2 * 0.10 / math.sqrt(3)
    assert f"70.00 [{100 * (0.70 - half):.2f}, {100 * (0.70 + half):.2f}]" in text
    # Synthetic data: the report's own numbers are not put beside ours, and the reader is told.
    assert "(report 97.05)" not in text and "not shown beside ours" in text
    for heading in ("### accuracy", "### macro-F1", "### balanced accuracy",
                    "## Paired comparisons", "## Per-class recall", "## Provenance"):
        assert heading in text


def test_paired_comparison_finds_a_constant_gain_and_not_a_noisy_one(tmp_path: Path) -> None:
    report = summarise(load_results(_study(tmp_path / "r")))
    table = paired(report).set_index(["subset", "comparison"])
    gain = table.loc[("WBC_100", "pretrain - scratch")]
    assert gain["seeds"] == 3
    assert gain["difference"] == pytest.approx(0.03)
    assert gain["low"] == pytest.approx(0.03) and gain["high"] == pytest.approx(0.03)
    assert bool(gain["significant"])
    noisy = table.loc[("WBC_1", "pretrain - scratch")]  # +5, 0, +10 points
    assert noisy["difference"] == pytest.approx(0.05)
    assert noisy["low"] < 0 < noisy["high"]
    assert not bool(noisy["significant"])
    assert noisy["p_holm"] >= noisy["p"]


def test_a_partial_study_says_what_is_missing(tmp_path: Path) -> None:
    root = _study(tmp_path / "r", drop_final=("WBC_1", "pretrain"))
    path, report = write_report(root)
    assert report.missing == ["WBC_1-pretrain: 0 of 3 final seeds (4 of 4 search trials)"]
    text = path.read_text()
    assert "Incomplete study" in text and "WBC_1-pretrain: 0 of 3 final seeds" in text
    assert "| pretrain | 95.00" in text  # the cells that are there are still reported


def test_figures_are_valid_pngs_and_the_report_is_reproducible(tmp_path: Path) -> None:
    root = _study(tmp_path / "r")
    path, _ = write_report(root)
    figures = sorted((root / "figures").glob("*.png"))
    assert len(figures) == 5
    first = {p.name: p.read_bytes() for p in [path, *figures]}
    for figure in figures:
        with Image.open(figure) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300
        assert f"figures/{figure.name}" in path.read_text()
    write_report(root)
    assert {p.name: p.read_bytes() for p in [path, *figures]} == first


def test_report_command_prints_the_table_and_names_bad_folders(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _study(tmp_path / "r")
    assert main(["report", str(root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "WBC_100" in out and "92.00" in out
    assert (tmp_path / "out" / "report.md").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "neither trials.parquet nor a Ray Tune experiment" in capsys.readouterr().err


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
    from wbc.layout import REPORT_TABLE1

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
