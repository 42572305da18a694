"""The report's figures (matplotlib, headless). The same rows draw the same bytes: no timestamps
or software tags in the files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wbc.layout import WBC_CLASSES
from wbc.metrics import mean_interval

if TYPE_CHECKING:
    from study.report.summary import Report

__all__ = ["draw_all"]

DPI = 90


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _grid(report: Report, *, width: float = 3.2, height: float = 2.6) -> tuple[Any, Any]:
    rows, cols = len(report.subsets), len(report.strategies)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for i, subset in enumerate(report.subsets):
        for j, strategy in enumerate(report.strategies):
            axes[i][j].set_title(f"{subset} / {strategy}", fontsize=9)
    return fig, axes


def by_budget(report: Report, folder: Path) -> Path:
    """Mean test accuracy, macro-F1 and balanced accuracy per label budget, with 95% CIs."""
    metrics = (("test_accuracy", "accuracy"), ("test_macro_f1", "macro-F1"),
               ("test_balanced_accuracy", "balanced accuracy"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(report.subsets))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for k, strategy in enumerate(report.strategies):
            means, lows, highs = [], [], []
            for subset in report.subsets:
                finals = report.cells[(subset, strategy)].finals
                mean, low, high = mean_interval(finals[metric].tolist() if len(finals) else [])
                means.append(mean)
                lows.append(mean - max(low, 0.0) if math.isfinite(low) else 0.0)
                highs.append(min(high, 1.0) - mean if math.isfinite(high) else 0.0)
            offset = (k - (len(report.strategies) - 1) / 2) * 0.08
            ax.errorbar(x + offset, means, yerr=[lows, highs], marker="o", capsize=3,
                        label=strategy)
        ax.set_xticks(x, report.subsets)
        ax.set_ylabel(f"test {label}")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Final seeds: mean and 95% interval per label budget")
    fig.tight_layout()
    return _save(fig, folder / "by_budget.png")


def confusion_matrices(report: Report, folder: Path) -> Path:
    """Per cell, the final seeds' confusion matrices summed, shown as row shares."""
    fig, axes = _grid(report, height=3.0)
    short = [c[:4] for c in WBC_CLASSES]
    for i, subset in enumerate(report.subsets):
        for j, strategy in enumerate(report.strategies):
            ax = axes[i][j]
            finals = report.cells[(subset, strategy)].finals
            if not len(finals) or "test_confusion_matrix" not in finals:
                ax.axis("off")
                ax.text(0.5, 0.5, "no final runs", ha="center", va="center")
                continue
            total = np.sum([np.array([list(r) for r in m], dtype=float)
                            for m in finals["test_confusion_matrix"]], axis=0)
            shares = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
            ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
            for (r, c), value in np.ndenumerate(total):
                ax.text(c, r, f"{int(value)}", ha="center", va="center", fontsize=7,
                        color="white" if shares[r, c] > 0.5 else "black")
            ax.set_xticks(range(len(short)), short, fontsize=7)
            ax.set_yticks(range(len(short)), short, fontsize=7)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
    fig.suptitle("Test confusion matrices, final seeds summed (colour: share of the true class)")
    fig.tight_layout()
    return _save(fig, folder / "confusion_matrices.png")


def learning_curves(report: Report, folder: Path) -> Path:
    """Selection macro-F1 per epoch: final seeds solid, search trials faint."""
    epochs = report.results.epochs
    fig, axes = _grid(report)
    for i, subset in enumerate(report.subsets):
        for j, strategy in enumerate(report.strategies):
            ax = axes[i][j]
            cell = f"{subset}-{strategy}"
            rows = epochs[epochs["cell"] == cell] if len(epochs) and "cell" in epochs else \
                epochs.iloc[:0]
            for _trial_id, curve in rows.groupby("trial_id"):
                curve = curve.sort_values("epoch")
                final = (curve["phase"] == "final").any()
                ax.plot(curve["epoch"], curve["val_macro_f1"], marker="." if final else None,
                        alpha=0.9 if final else 0.3, color="C1" if final else "C0",
                        linewidth=1.5 if final else 1.0)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_ylabel("val macro-F1", fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("Learning curves (orange: final seeds; blue: search trials)")
    fig.tight_layout()
    return _save(fig, folder / "learning_curves.png")


def search_history(report: Report, folder: Path) -> Path:
    """Each cell's search: the objective of every trial in order, and the best so far."""
    trials = report.results.trials
    fig, axes = _grid(report)
    for i, subset in enumerate(report.subsets):
        for j, strategy in enumerate(report.strategies):
            ax = axes[i][j]
            search = trials[(trials["subset"] == subset) & (trials["strategy"] == strategy)
                            & (trials["phase"] == "search")].sort_values("trial_id") \
                if len(trials) else trials
            values = search["val_macro_f1"].to_numpy(dtype=float) if len(search) else \
                np.array([])
            order = np.arange(1, len(values) + 1)
            stopped = search["status"].to_numpy() != "completed" if len(search) else []
            ax.scatter(order, values, c=["C3" if s else "C0" for s in stopped], s=18)
            if len(values):
                best = np.fmax.accumulate(np.nan_to_num(values, nan=-np.inf))
                ax.step(order, np.where(np.isfinite(best), best, np.nan), where="post",
                        color="C2")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("search trial", fontsize=8)
            ax.set_ylabel("val macro-F1", fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("Search history (red: stopped early or failed; green: best so far)")
    fig.tight_layout()
    return _save(fig, folder / "search_history.png")


def per_class_recall(report: Report, folder: Path) -> Path:
    """Mean test recall per class and cell, as a heat map."""
    names = [c.name for c in report.cells.values()]
    values = np.full((len(names), len(WBC_CLASSES)), np.nan)
    for r, cell in enumerate(report.cells.values()):
        for c, cls in enumerate(WBC_CLASSES):
            column = f"test_recall_{cls}"
            if len(cell.finals) and column in cell.finals:
                values[r, c] = cell.finals[column].mean()
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(names) + 1.5))
    ax.imshow(np.nan_to_num(values, nan=0.0), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for (r, c), value in np.ndenumerate(values):
        ax.text(c, r, "–" if np.isnan(value) else f"{100 * value:.0f}", ha="center",
                va="center", fontsize=7)
    ax.set_xticks(range(len(WBC_CLASSES)), WBC_CLASSES, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("Test recall per class, %, mean over final seeds")
    fig.tight_layout()
    return _save(fig, folder / "per_class_recall.png")


def draw_all(report: Report, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [by_budget(report, folder), per_class_recall(report, folder),
            confusion_matrices(report, folder), learning_curves(report, folder),
            search_history(report, folder)]
