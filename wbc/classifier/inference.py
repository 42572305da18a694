"""Using a trained classifier: predictions for image files, and its scores on a labelled tree.

Both paths see exactly the pixels training saw. ``predict_files`` decodes each file with
``wbc.datasets.imageio.decode_working``, the function the decode cache builds its rows with;
``evaluate_model`` reads the tree's images through the decode cache itself (the WBC cache of
the whole tree, as training does, so a trained tree's cache is reused) and scores them with
``wbc.training.loop.evaluate``, the training's own evaluation: on the same device, its predictions
are the run's, bit for bit.

Which images ``evaluate_model`` scores (``split``), on a tree in the report's layout:
``reporting`` and ``selection`` are the splits a training run reports on and selects its epoch
on, from ``wbc.training.inputs.evaluation_splits`` (the one definition training uses: the tree's
test split and val when it has a test split, else the fixed halves B and A of val); a run with
scaled selection selected on part of that split, which is scored whole here. ``val``, ``test``,
``train`` (WBC_100's) and a subset name (``WBC_10``: its training images) name the tree's own
splits. An ImageFolder tree (``<Class>/<image>``, class folders named after the model's classes,
any case or plural) has no splits and is scored whole.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from wbc.classifier.model_file import Card, Classifier
from wbc.datasets import (
    Problem,
    Sample,
    Tree,
    exclude_problem_files,
    find_class_folders,
    find_images,
    problems_from_decoding,
    scan_tree,
    verify_files,
)
from wbc.datasets.cache import decode_samples
from wbc.datasets.imageio import ImageError, decode_working
from wbc.datasets.layout import WBC_CLASSES, subset_name, subset_percent
from wbc.metrics import flatten_metrics, wilson_interval
from wbc.training.inputs import EvalData, NamedSplit, eval_data, evaluation_splits, wbc_decode_set
from wbc.training.loop import evaluate

__all__ = [
    "SPLITS",
    "InferenceError",
    "LoadedSplit",
    "Skipped",
    "collect_images",
    "evaluate_model",
    "evaluation_json",
    "format_evaluation",
    "load_split",
    "predict_files",
    "predictions_csv",
    "predictions_json",
    "score_split",
]

SPLITS = ("reporting", "selection", "test", "val", "train")  # besides subset names (WBC_10)
PROGRESS_SECONDS = 2.0  # between progress lines of a long prediction
EVAL_BATCH = 256  # wbc.training.loop.evaluate's batch: the same batches as the run's evaluation


class InferenceError(ValueError):
    """An input that cannot be predicted or scored: a missing path, a tree whose classes are
    not the model's, a split the tree lacks. The message names it and what to do."""


class Skipped(NamedTuple):
    """A file left out of the predictions, and why."""

    path: Path
    reason: str


def collect_images(inputs: Sequence[Path | str]) -> tuple[list[Path], list[Skipped]]:
    """The files to predict: a file as named (whatever its suffix: decoding decides), and a
    folder's image files at any depth (``.png .jpg .jpeg .bmp .tif .tiff``, sorted, hidden
    files left out), each once. Also returns the folders' other files, which are not read.
    Raises ``InferenceError`` naming an input that does not exist."""
    files: dict[Path, None] = {}
    ignored: list[Skipped] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            problems: list[Problem] = []
            files.update(dict.fromkeys(find_images(path, problems)))
            ignored += [Skipped(p.path, p.reason) for p in problems]
        elif path.exists():
            files[path] = None
        else:
            raise InferenceError(f"{path}: no such file or folder; give image files or folders "
                                 "of them")
    return list(files), ignored


def _decode(path: Path, size: int) -> np.ndarray | str:
    """The working-resolution image of ``path``, or why it cannot be read."""
    try:
        return decode_working(path, size)[0]
    except ImageError as err:
        return err.reason
    except Exception as err:  # a decoder's own failure is the file's fault: skip the file
        return f"cannot be decoded ({type(err).__name__}: {err})"


def _decoded_batches(paths: Sequence[Path], size: int, batch_size: int, workers: int
                     ) -> Iterator[tuple[Sequence[Path], list[np.ndarray | str]]]:
    """``paths`` in batches with their decoded images, the next batch decoding in worker
    processes while the caller runs the model on this one."""
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    decode = partial(_decode, size=size)
    if workers <= 1 or len(batches) <= 1:
        for batch in batches:
            yield batch, [decode(p) for p in batch]
        return
    # fork, as the decode cache does: the children run only Pillow and numpy code.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    chunk = max(1, batch_size // (4 * workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        ahead = pool.map(decode, batches[0], chunksize=chunk)
        for index, batch in enumerate(batches):
            current = ahead
            if index + 1 < len(batches):
                ahead = pool.map(decode, batches[index + 1], chunksize=chunk)
            yield batch, list(current)


def predict_files(classifier: Classifier, paths: Sequence[Path | str], *, batch_size: int = 256,
                  workers: int | None = None, progress: Callable[[str], None] | None = None
                  ) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """Predict every readable file of ``paths``: one record per image in order (``path``,
    ``predicted`` class, its ``probability``, ``p_<Class>`` for each class of the card), and
    the files that could not be decoded with the reason. ``workers``: decoding processes
    (default: all cores). ``progress`` hears ``predict: done/total images`` every few
    seconds of a long list."""
    classes = classifier.card.classes
    files = [Path(p) for p in paths]
    workers = workers or os.cpu_count() or 1
    records: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    done, last, said = 0, time.monotonic(), False
    for batch, decoded in _decoded_batches(files, classifier.card.image_size, batch_size,
                                           workers):
        good = [(p, d) for p, d in zip(batch, decoded, strict=True) if not isinstance(d, str)]
        skipped += [Skipped(p, d) for p, d in zip(batch, decoded, strict=True)
                    if isinstance(d, str)]
        if good:
            images = torch.from_numpy(np.stack([d for _, d in good]))
            logits = classifier.logits(images, batch_size=batch_size)
            # The class is the logits' argmax, as evaluation takes it.
            predicted = logits.argmax(1).tolist()
            for (path, _), index, row in zip(good, predicted, torch.softmax(logits, 1).tolist(),
                                             strict=True):
                records.append({"path": str(path), "predicted": classes[index],
                                "probability": row[index],
                                **{f"p_{c}": v for c, v in zip(classes, row, strict=True)}})
        done += len(batch)
        if progress is not None and (time.monotonic() - last >= PROGRESS_SECONDS
                                     or (said and done == len(files))):
            progress(f"predict: {done}/{len(files)} images")
            last, said = time.monotonic(), True
    return records, skipped


def predictions_csv(records: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> str:
    """``path,predicted,probability,p_<Class>...``, one row per record, 8 significant
    digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["path", "predicted", "probability", *(f"p_{c}" for c in classes)]
    writer.writerow(columns)
    for record in records:
        writer.writerow([f"{v:.8g}" if isinstance(v, float) else v
                         for v in (record[c] for c in columns)])
    return buffer.getvalue()


def predictions_json(records: Sequence[Mapping[str, Any]], skipped: Sequence[Skipped], *,
                     classifier: Classifier) -> str:
    """The records and the skipped files as one JSON document, with the model and classes."""
    return json.dumps({"model": str(classifier.path), "classes": list(classifier.card.classes),
                       "image_size": classifier.card.image_size, "predictions": list(records),
                       "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped]},
                      indent=1) + "\n"


@dataclass(frozen=True)
class LoadedSplit:
    """An evaluation split as the model sees it: decoded images and labels in the model's class
    order, the files they came from, and what identifies the data."""

    data: EvalData  # name: "WBC_100/val half B (reporting)", "WBC_100/test", ...
    paths: tuple[Path, ...]
    root: Path
    kind: str  # what was asked: "reporting", "val", "WBC_10", ...; "all" for an ImageFolder
    layout: str  # "report" or "imagefolder"
    classes: tuple[str, ...]
    fingerprint: str  # the decode cache's: a card's data_fingerprint when it is the same data
    excluded_files: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def image_size(self) -> int:
        return int(self.data.images.shape[1])


def _is_report_tree(root: Path) -> bool:
    return any(child.is_dir() and subset_percent(child.name) == 100 for child in root.iterdir())


def _report_samples(tree: Tree, split: str) -> NamedSplit:
    """The samples of ``split`` (see the module docstring) of a tree in the report's layout."""
    wbc = tree.wbc
    if split in ("reporting", "selection"):
        selection, reporting = evaluation_splits(wbc.val, wbc.test)
        return reporting if split == "reporting" else selection
    if split == "val":
        return NamedSplit("WBC_100/val", wbc.val)
    if split == "test":
        if not wbc.test:
            raise InferenceError(f"{tree.root}: no WBC_100/test split; use --split reporting "
                                 "(the half of val a run reports on) or val")
        return NamedSplit("WBC_100/test", wbc.test)
    percent = 100 if split == "train" else subset_percent(split)
    if percent is None:
        raise InferenceError(f"split {split!r}: use one of {', '.join(SPLITS)} or a subset name "
                             "(WBC_50, WBC_10, WBC_1)")
    if not wbc.has(percent):
        have = ", ".join(subset_name(p) for p in wbc.percents)
        raise InferenceError(f"{tree.root}: no {subset_name(percent)} (it has {have})")
    return NamedSplit(f"{subset_name(percent)}/train", wbc.subset(percent))


def _unusable(root: Path, errors: Sequence[Problem], fix: str) -> InferenceError:
    more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
    return InferenceError(f"{root}: not usable: {errors[0]}{more}; {fix}")


def _report_split(root: Path, classes: tuple[str, ...], image_size: int, split: str, *,
                  cache_dir: Path | str | None, exclude_bad: bool, workers: int | None,
                  progress: Callable[[str], None] | None) -> LoadedSplit:
    if classes != WBC_CLASSES:
        raise InferenceError(f"the model's classes ({', '.join(classes)}) are not those of "
                             f"{root}, a tree in the report's layout ({', '.join(WBC_CLASSES)}, "
                             "in this order): it was trained on other data")
    tree = scan_tree(root, exclude_bad=exclude_bad, workers=workers, progress=progress)
    if not tree.usable:
        raise _unusable(root, tree.errors, f"run `wbc check {root}`, fix the files or add "
                                           "--exclude-bad")
    chosen = _report_samples(tree, split)
    # The tree's whole WBC cache, as training decodes it: the same rows, found by path.
    decoded = decode_samples(wbc_decode_set(tree), image_size, name="WBC", cache_dir=cache_dir,
                             workers=workers, progress=progress)
    return LoadedSplit(eval_data(decoded, chosen.samples, chosen.name),
                       tuple(s.path for s in chosen.samples), root, split, "report", classes,
                       decoded.fingerprint, len(tree.excluded_files),
                       tuple(str(p) for p in tree.warnings))


def _imagefolder_samples(root: Path, classes: tuple[str, ...], problems: list[Problem]
                         ) -> list[Sample]:
    folders = find_class_folders(root, classes, problems, kind=str(root))
    if errors := [p for p in problems if p.severity == "error"]:
        raise InferenceError(f"{errors[0].path}: {errors[0].reason} (the model's classes)")
    if not folders:
        raise InferenceError(f"{root}: neither a tree in the report's layout (no WBC_100/) nor "
                             "an ImageFolder tree (no folder named after a class of the model: "
                             f"{', '.join(classes)})")
    return [Sample(path, label) for label, cls in enumerate(classes)
            for folder in folders.get(cls, []) for path in find_images(folder, problems)]


def _imagefolder_split(root: Path, classes: tuple[str, ...], image_size: int, split: str, *,
                       cache_dir: Path | str | None, exclude_bad: bool, workers: int | None,
                       progress: Callable[[str], None] | None) -> LoadedSplit:
    if split not in ("reporting", "all"):
        raise InferenceError(f"{root}: an ImageFolder tree has no {split!r} split; it is "
                             "scored whole (leave out --split)")
    problems: list[Problem] = []
    groups = {"all": _imagefolder_samples(root, classes, problems)}
    problems_from_decoding(groups, verify_files([s.path for s in groups["all"]],
                                                workers=workers), problems)
    excluded: list[Problem] = []
    if exclude_bad:
        problems, excluded = exclude_problem_files(groups, problems)
    if errors := [p for p in problems if p.severity == "error"]:
        raise _unusable(root, errors, "fix or remove the files, or add --exclude-bad")
    samples = groups["all"]
    if not samples:
        raise InferenceError(f"{root}: no readable images in its class folders")
    decoded = decode_samples(samples, image_size, name="WBC", cache_dir=cache_dir,
                             workers=workers, progress=progress)
    return LoadedSplit(eval_data(decoded, samples, "all images (ImageFolder)"),
                       tuple(s.path for s in samples), root, "all", "imagefolder", classes,
                       decoded.fingerprint, len(excluded),
                       tuple(str(p) for p in problems if p.severity == "warning"))


def load_split(tree_root: Path | str, classes: Sequence[str], image_size: int, *,
               split: str = "reporting", cache_dir: Path | str | None = None,
               exclude_bad: bool = False, workers: int | None = None,
               progress: Callable[[str], None] | None = None) -> LoadedSplit:
    """Decode ``split`` of the tree at ``tree_root`` (see the module docstring) for a model of
    ``classes`` at ``image_size``. Load once and :func:`score_split` many models on it.
    Raises ``InferenceError`` (or ``wbc.datasets.DatasetError``) naming what is wrong."""
    root = Path(tree_root)
    if not root.is_dir():
        raise InferenceError(f"{root}: no such folder; give a tree in the report's layout "
                             "(holding WBC_100/) or an ImageFolder tree (<Class>/<image>)")
    load = _report_split if _is_report_tree(root) else _imagefolder_split
    return load(root, tuple(classes), image_size, split, cache_dir=cache_dir,
                exclude_bad=exclude_bad, workers=workers, progress=progress)


def _training_figure(card: Card, loaded: LoadedSplit, same_data: bool | None) -> float | None:
    """The accuracy the model's run reported on this very split, when it is that split."""
    if not same_data:
        return None
    for split_name, key in ((card.reporting_split, "test_accuracy"),
                            (card.selection_split, "val_accuracy")):
        if split_name == loaded.data.name and isinstance(card.figures.get(key), int | float):
            return float(card.figures[key])
    return None


def score_split(classifier: Classifier, loaded: LoadedSplit) -> dict[str, Any]:
    """``classifier`` scored on ``loaded`` through ``wbc.training.loop.evaluate`` (the card's
    precision and memory format, on the classifier's device). Keys as
    ``wbc.metrics.flatten_metrics`` names them (``accuracy``, ``macro_f1``, ``balanced_accuracy``,
    ``recall_<Class>``, ``n``, ``loss``), with Wilson 95% intervals (``accuracy_low``/``_high``,
    ``recall_<Class>_low``/ ``_high``; NaN for a class with no images), ``n_<Class>``,
    ``confusion_matrix`` (rows true, columns predicted), per-image ``predictions``, ``targets`` and
    ``paths``, and what was scored (``model``, ``data``, ``split``, ``data_fingerprint``,
    ``same_data``)."""
    card = classifier.card
    if loaded.classes != card.classes or loaded.image_size != card.image_size:
        raise InferenceError(f"{classifier.path}: a model of {', '.join(card.classes)} at "
                             f"{card.image_size} px cannot score a split loaded for "
                             f"{', '.join(loaded.classes)} at {loaded.image_size} px")
    if loaded.data.labels.numel() == 0:
        raise InferenceError(f"{loaded.root}: {loaded.data.name} holds no images")
    scores = evaluate(classifier.model, loaded.data.to(classifier.device),
                      class_names=card.classes, batch_size=EVAL_BATCH, precision=card.precision,
                      channels_last=card.channels_last)
    matrix = np.asarray(scores["confusion_matrix"])
    n = int(scores["n"])
    result: dict[str, Any] = {
        "model": str(classifier.path), "data": str(loaded.root), "layout": loaded.layout,
        "split": loaded.data.name, "split_kind": loaded.kind, "classes": list(card.classes),
        **flatten_metrics("", scores),
    }
    result["accuracy_low"], result["accuracy_high"] = wilson_interval(int(np.trace(matrix)), n)
    for index, name in enumerate(card.classes):
        count = int(matrix[index].sum())
        low, high = (wilson_interval(int(matrix[index, index]), count) if count
                     else (math.nan, math.nan))
        result[f"recall_{name}_low"], result[f"recall_{name}_high"] = low, high
        result[f"n_{name}"] = count
    same = card.data_fingerprint == loaded.fingerprint if card.data_fingerprint else None
    result.update(
        confusion_matrix=scores["confusion_matrix"], device=str(classifier.device),
        data_fingerprint=loaded.fingerprint, model_data_fingerprint=card.data_fingerprint,
        same_data=same, training_accuracy=_training_figure(card, loaded, same),
        excluded_files=loaded.excluded_files, warnings=list(loaded.warnings),
        predictions=scores["predictions"], targets=loaded.data.labels.tolist(),
        paths=[str(p) for p in loaded.paths])
    return result


def evaluate_model(classifier: Classifier, tree_root: Path | str, *, split: str = "reporting",
                   cache_dir: Path | str | None = None, exclude_bad: bool = False,
                   workers: int | None = None, progress: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """``classifier`` scored on ``split`` of the tree at ``tree_root``: :func:`load_split`
    then :func:`score_split` (which says what the result holds)."""
    card = classifier.card
    loaded = load_split(tree_root, card.classes, card.image_size, split=split,
                        cache_dir=cache_dir, exclude_bad=exclude_bad, workers=workers,
                        progress=progress)
    return score_split(classifier, loaded)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"{100 * low:.1f}-{100 * high:.1f}%"


def _data_line(result: Mapping[str, Any]) -> str | None:
    """What the card's data fingerprint says about the data scored, if the card has one."""
    theirs, ours = result["model_data_fingerprint"], result["data_fingerprint"]
    if not theirs:
        return None
    if result["same_data"]:
        line = f"training data: these very files (fingerprint {ours[:12]})"
        if result["training_accuracy"] is not None:
            line += f"; its run reported accuracy {_pct(result['training_accuracy'])} here"
        return line
    return (f"training data: other files (fingerprint {theirs[:12]}; these give {ours[:12]}: "
            "other images, or the same ones in another layout or resolution)")


def evaluation_json(result: Mapping[str, Any]) -> str:
    """:func:`score_split`'s result as JSON, NaN (the recall of a class without images) as
    null: JSON has no NaN."""
    def plain(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return json.dumps({k: plain(v) for k, v in result.items()}, indent=1, allow_nan=False) + "\n"


def format_evaluation(result: Mapping[str, Any]) -> str:
    """:func:`score_split`'s result as a text table: the figures with their 95% intervals and
    counts, and the confusion matrix."""
    classes = result["classes"]
    matrix = result["confusion_matrix"]
    n = result["n"]
    lines = [f"model: {result['model']}",
             f"data: {result['data']}: {result['split']}, {n} images on {result['device']}"]
    if (line := _data_line(result)) is not None:
        lines.append(line)
    correct = sum(matrix[i][i] for i in range(len(classes)))
    lines += [f"{'':22}{'':>9}  {'95% interval':<14}count",
              f"{'accuracy':22}{_pct(result['accuracy']):>9}  "
              f"{_interval(result['accuracy_low'], result['accuracy_high']):<14}{correct}/{n}",
              f"{'macro-F1':22}{_pct(result['macro_f1']):>9}",
              f"{'balanced accuracy':22}{_pct(result['balanced_accuracy']):>9}"]
    for index, name in enumerate(classes):
        interval = _interval(result[f"recall_{name}_low"], result[f"recall_{name}_high"])
        lines.append(f"{'recall ' + name:22}{_pct(result[f'recall_{name}']):>9}  "
                     f"{interval:<14}{matrix[index][index]}/{result[f'n_{name}']}")
    width = max(6, *(len(c) for c in classes)) + 1
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    lines.append(" " * width + "".join(f"{c[:5]:>7}" for c in classes))
    for name, row in zip(classes, matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>7}" for v in row))
    return "\n".join(lines)
