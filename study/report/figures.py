"""The report's figures (matplotlib, headless), drawn for print: 200 dpi PNG, and SVG or PDF on
request. Label budgets run from the smallest to the largest, left to right; the majority-class
baseline is a dashed line wherever a score is plotted; heat maps carry their colour scale. The
same rows draw the same bytes: no timestamps or software tags in the files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from study.report.summary import METRICS, Report, cell_estimate_of
from study.spec import no_search
from wbc.datasets import Sample
from wbc.datasets.layout import WBC_CLASSES, subset_percent

__all__ = ["FORMATS", "draw_all"]

DPI = 200
FORMATS = ("png", "svg", "pdf")
# Identical files for identical rows: no creation date, no software version.
_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None}, "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
                     "svg.hashsalt": "wbc-study"})


def _save(fig: Any, folder: Path, name: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI, metadata=_METADATA[fmt])
        paths.append(path)
    plt.close(fig)
    return paths


def _budgets(report: Report) -> list[str]:
    """Label budgets from the smallest to the largest: the reader's left-to-right."""
    return sorted(report.subsets, key=lambda s: subset_percent(s) or 0)


def _majority(report: Report, metric: str) -> float | None:
    return report.reporting.majority_scores().get(metric) if report.reporting else None


def _baseline(ax: Any, report: Report, metric: str) -> None:
    value = _majority(report, metric)
    if value is not None:
        ax.axhline(value, color="0.4", linestyle="--", linewidth=1,
                   label=f"always {report.reporting.majority}")  # type: ignore[union-attr]


def by_budget(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Macro-F1, balanced accuracy and accuracy per label budget: mean and 95% interval."""
    budgets = _budgets(report)
    percents = [subset_percent(s) or 100 for s in budgets]
    x = np.arange(len(budgets), dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), sharey=True, layout="constrained")
    for ax, (metric, label) in zip(axes, METRICS, strict=True):
        for k, strategy in enumerate(report.strategies):
            est = [cell_estimate_of(report, report.cells[(s, strategy)], metric)
                   for s in budgets]
            means = np.array([e.mean for e in est])
            low = np.array([e.mean - max(e.low, 0.0) if np.isfinite(e.low) else 0.0
                            for e in est])
            high = np.array([min(e.high, 1.0) - e.mean if np.isfinite(e.high) else 0.0
                             for e in est])
            shift = 0.06 * (k - (len(report.strategies) - 1) / 2)
            ax.errorbar(x + shift, means, yerr=[low, high], marker="o", capsize=3,
                        label=strategy)
        _baseline(ax, report, metric)
        ax.set_xticks(x, [f"{s}\n{p}%" for s, p in zip(budgets, percents, strict=True)])
        ax.set_xlim(-0.4, len(budgets) - 0.6)
        ax.set_xlabel("label budget (share of the training labels)")
        ax.set_ylabel(f"test {label}")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    replicates = report.results.study.get("spec", {}).get("final_config") == "replicates"
    fig.suptitle("Final seeds by label budget: mean and 95% interval ("
                 + ("each seed its own search; " if replicates else "") + "seeds and reporting "
                 "images)")
    return _save(fig, folder, "by_budget", formats)


def per_class_recall(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Mean test recall per class and cell, as a heat map with its colour scale."""
    cells = [report.cells[(s, t)] for s in _budgets(report) for t in report.strategies]
    values = np.full((len(cells), len(WBC_CLASSES)), np.nan)
    for r, cell in enumerate(cells):
        for c, cls in enumerate(WBC_CLASSES):
            column = f"test_recall_{cls}"
            if len(cell.finals) and column in cell.finals:
                values[r, c] = cell.finals[column].mean()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(cells) + 1.8), layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap="viridis",
                      aspect="auto")
    for (r, c), value in np.ndenumerate(values):
        ax.text(c, r, "–" if np.isnan(value) else f"{100 * value:.0f}", ha="center",
                va="center", fontsize=7, color="white" if value < 0.6 else "black")
    support = report.reporting.support if report.reporting else {}
    ax.set_xticks(range(len(WBC_CLASSES)),
                  [f"{c}\n(n={support[c]})" if c in support else c for c in WBC_CLASSES])
    ax.set_yticks(range(len(cells)), [c.name for c in cells], fontsize=8)
    ax.set_xlabel("true class (reporting images)")
    fig.colorbar(image, ax=ax, label="recall")
    ax.set_title("Test recall per class, % (mean over final seeds)")
    return _save(fig, folder, "per_class_recall", formats)


def _grid(report: Report, *, width: float, height: float) -> tuple[Any, Any, list[str]]:
    budgets = _budgets(report)
    fig, axes = plt.subplots(len(budgets), len(report.strategies),
                             figsize=(width * len(report.strategies), height * len(budgets)),
                             squeeze=False, layout="constrained")
    for i, subset in enumerate(budgets):
        for j, strategy in enumerate(report.strategies):
            axes[i][j].set_title(f"{subset} / {strategy}")
    return fig, axes, budgets


def _each_cell(report: Report, draw: Callable[[Any, str, str], None], *, width: float,
               height: float) -> Any:
    """One panel per cell, budgets as rows (smallest first), strategies as columns; axis
    labels on the outer panels only, so that neighbours do not overlap."""
    fig, axes, budgets = _grid(report, width=width, height=height)
    for i, subset in enumerate(budgets):
        for j, strategy in enumerate(report.strategies):
            ax = axes[i][j]
            draw(ax, subset, strategy)
            if j > 0:
                ax.set_ylabel("")
            if i < len(budgets) - 1:
                ax.set_xlabel("")
    return fig


def confusion_matrices(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Per cell, the final seeds' confusion matrices summed, coloured by row share."""
    short = [c[:4] for c in WBC_CLASSES]
    images: list[Any] = []

    def draw(ax: Any, subset: str, strategy: str) -> None:
        finals = report.cells[(subset, strategy)].finals
        if not len(finals) or "test_confusion_matrix" not in finals:
            ax.axis("off")
            ax.text(0.5, 0.5, "no final runs", ha="center", va="center")
            return
        total = np.sum([np.array([list(r) for r in m], dtype=float)
                        for m in finals["test_confusion_matrix"]], axis=0)
        shares = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
        images.append(ax.imshow(shares, vmin=0, vmax=1, cmap="Blues"))
        for (r, c), value in np.ndenumerate(total):
            ax.text(c, r, f"{int(value)}", ha="center", va="center", fontsize=8,
                    color="white" if shares[r, c] > 0.5 else "black")
        ax.set_xticks(range(len(short)), short)
        ax.set_yticks(range(len(short)), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")

    fig = _each_cell(report, draw, width=3.0, height=3.0)
    if images:
        fig.colorbar(images[0], ax=fig.axes, shrink=0.5, label="share of the true class")
    fig.suptitle("Test confusion matrices, final seeds summed (counts; colour: share of the "
                 "true class)")
    return _save(fig, folder, "confusion_matrices", formats)


def _selection_axes(ax: Any, report: Report, xlabel: str) -> None:
    """A panel of selection macro-F1 over integer steps, with the majority baseline."""
    _baseline(ax, report, "test_macro_f1")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("selection macro-F1")
    ax.grid(alpha=0.3)


def learning_curves(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Selection macro-F1 per epoch: final seeds solid, search trials faint."""
    epochs = report.results.epochs

    def draw(ax: Any, subset: str, strategy: str) -> None:
        rows = epochs[epochs["cell"] == f"{subset}-{strategy}"] \
            if len(epochs) and "cell" in epochs else epochs.iloc[:0]
        for _trial, curve in (rows.groupby("trial_id") if len(rows) else ()):
            curve = curve.sort_values("epoch")
            final = (curve["phase"] == "final").any()
            ax.plot(curve["epoch"], curve["val_macro_f1"], marker="." if final else None,
                    alpha=0.9 if final else 0.35, color="C1" if final else "C0",
                    linewidth=1.5 if final else 1.0)
        if not len(rows):
            ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center",
                    transform=ax.transAxes)
        _selection_axes(ax, report, "epoch")

    fig = _each_cell(report, draw, width=3.2, height=2.6)
    searched = "" if no_search(report.results.study.get("spec", {})) else "blue: search trials; "
    fig.suptitle(f"Learning curves (orange: final seeds; {searched}dashed: always the majority "
                 "class)")
    return _save(fig, folder, "learning_curves", formats)


def search_history(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Each cell's search: the objective of every trial in order, and the best so far (per
    replicate under ``final_config = "replicates"``: trial i is replicate i mod final_seeds's)."""
    trials = report.results.trials
    spec = report.results.study.get("spec", {})
    if no_search(spec):
        return []  # no search to draw
    replicates = int(spec.get("final_seeds") or 1) \
        if spec.get("final_config") == "replicates" else 0

    def draw(ax: Any, subset: str, strategy: str) -> None:
        search = trials[(trials["subset"] == subset) & (trials["strategy"] == strategy)
                        & (trials["phase"] == "search")].sort_values("trial_id") \
            if len(trials) else trials
        values = search["val_macro_f1"].to_numpy(dtype=float) if len(search) else np.array([])
        order = np.arange(1, len(values) + 1)
        stopped = search["status"].to_numpy() != "completed" if len(search) else []
        ax.scatter(order, values, c=["C3" if s else "C0" for s in stopped], s=18)
        for own in ([np.arange(len(values))] if not replicates else
                    [np.arange(r, len(values), replicates) for r in range(replicates)]):
            if len(own) and (not replicates or len(own) > 1):
                best = np.fmax.accumulate(np.nan_to_num(values[own], nan=-np.inf))
                ax.step(order[own], np.where(np.isfinite(best), best, np.nan), where="post",
                        color="C2")
            if replicates and len(own) and np.isfinite(values[own]).any():
                pick = own[int(np.nanargmax(values[own]))]  # the trial its final seed re-ran
                ax.scatter([order[pick]], [values[pick]], s=90, facecolors="none",
                           edgecolors="C2", linewidths=1.8)
        _selection_axes(ax, report, "search trial")

    fig = _each_cell(report, draw, width=3.2, height=2.6)
    fig.suptitle("Search history (red: stopped early or failed; green: best so far"
                 + (", per replicate; green ring: the trial its final seed re-ran)"
                    if replicates else ")"))
    return _save(fig, folder, "search_history", formats)


def out_of_domain(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Per ``eval_data`` tree, the kept models' macro-F1 by budget: in domain (their own test
    figures, dashed) and on that tree (solid), one colour per strategy."""
    frame = report.results.evaluations
    if frame is None or not len(frame) or "macro_f1" not in frame:
        return []
    good = frame[frame["error"].isna()] if "error" in frame else frame
    trees = sorted(good["eval_data"].unique())
    if not trees:
        return []
    budgets = _budgets(report)
    x = np.arange(len(budgets), dtype=float)
    fig, axes = plt.subplots(1, len(trees), figsize=(4.6 * len(trees) + 1.6, 3.9),
                             sharey=True, layout="constrained", squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, tree in zip(axes[0], trees, strict=True):
        rows = good[good["eval_data"] == tree]
        for k, strategy in enumerate(report.strategies):
            mine = rows[rows["strategy"] == strategy].groupby("subset")
            inside = [mine["in_domain_macro_f1"].mean().get(b, np.nan) for b in budgets]
            outside = [mine["macro_f1"].mean().get(b, np.nan) for b in budgets]
            colour = colours[k % len(colours)]
            ax.plot(x, inside, linestyle="--", marker="o", color=colour, alpha=0.6,
                    label=f"{strategy}, in domain")
            ax.plot(x, outside, linestyle="-", marker="s", color=colour,
                    label=f"{strategy}, on this tree")
        ax.set_xticks(x, budgets)
        ax.set_xlim(-0.3, len(budgets) - 0.7)
        ax.set_title(f"{Path(str(tree)).name} ({int(rows['n'].iloc[0])} images)")
        ax.set_xlabel("label budget")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro-F1 of the kept models")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Out of domain: the kept models on other trees (solid) beside their own test "
                 "split (dashed)")
    return _save(fig, folder, "out_of_domain", formats)


def _segmentation_examples(report: Report, count: int) -> list[tuple[Path, Path, Path | None]]:
    """(image, predicted mask, true mask or None) of up to ``count`` WBC_100 images without a
    given mask, spread over the classes; none when the files are not where the record says."""
    from wbc.datasets import scan_tree, true_mask
    from wbc.segment import mask_path

    record = report.results.study.get("segmentation") or {}
    root = (report.results.study.get("data") or {}).get("root")
    if not record or not root or report.results.root is None:
        return []
    masks = report.results.root / record.get("masks", "masks")
    if not Path(root).is_dir() or not masks.is_dir():
        return []
    tree = scan_tree(Path(root), verify=False)
    by_class: dict[int, list[Sample]] = {}
    for sample in [*tree.wbc.subset(100), *tree.wbc.val]:
        if sample.mask is None and mask_path(masks, tree.root, sample.path).is_file():
            by_class.setdefault(sample.label, []).append(sample)
    chosen: list[Sample] = []
    while len(chosen) < count and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(chosen) < count:
                chosen.append(by_class[label].pop(len(by_class[label]) // 2))
    return [(s.path, mask_path(masks, tree.root, s.path), true_mask(tree.root, s.path))
            for s in chosen]


def segmentation(report: Report, folder: Path, formats: Sequence[str]) -> list[Path]:
    """Predicted masks of images that have none, outlined on the images (the true mask dashed
    where a synthetic tree has it)."""
    from PIL import Image

    from wbc.datasets.imageio import read_mask, read_rgb
    from wbc.segment import iou_dice

    examples = _segmentation_examples(report, 8)
    if not examples:
        return []
    fig, axes = plt.subplots(2, 4, figsize=(8, 4.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    truth_shown = False
    for ax, (image, predicted, truth) in zip(axes.flat, examples, strict=False):
        rgb = read_rgb(image)
        ax.imshow(rgb)
        mask = np.asarray(Image.open(predicted)) > 0
        ax.contour(mask, levels=[0.5], colors=["#00e5ff"], linewidths=1.2)
        title = image.parent.name
        if truth is not None:
            true = read_mask(truth)
            ax.contour(true, levels=[0.5], colors=["#ffea00"], linewidths=1.0,
                       linestyles="dashed")
            truth_shown = True
            if true.shape == mask.shape:
                title += f", IoU {iou_dice(mask, true)[0]:.2f}"
        ax.set_title(title, fontsize=8)
    legend = "predicted mask (solid)" + (", true mask (dashed)" if truth_shown else "")
    fig.suptitle(f"Masks for the images without one: {legend}")
    fig.tight_layout()
    return _save(fig, folder, "segmentation", formats)


def draw_all(report: Report, folder: Path, *, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Every figure in every format; ``ValueError`` naming an unknown format."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"figure format(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(FORMATS)}")
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for figure in (by_budget, per_class_recall, confusion_matrices, learning_curves,
                   search_history, out_of_domain, segmentation):
        paths += figure(report, folder, formats)
    return paths
