"""Segmenting a tree: learn whole-cell masks from the given ones (or, with none, from confident
classical ones), predict every other WBC image, write the masks.

``segment_tree`` decodes the tree's WBC images once (the decode cache, at the segmenter's
resolution). Where some images have a mask ("given masks"), it splits them into ``folds`` folds
and, per fold, trains on the others and predicts the held-out ones; the classical baseline
(``wbc.segment.classical``), a centred disk of the training folds' mean cell area and the
all-foreground mask are scored on the same images. Scores are whole-cell IoU and Dice (nonzero
= cell, multi-level masks included) per image at the image's own resolution, averaged over
images. Then one model trains on every masked image and predicts every image. Where no image
has one (PBC, BCCD, Raabin: "self-trained from classical masks"), the classical segmenter
outlines every image, the confident outlines are kept as pseudo-labels
(``wbc.segment.pseudo``) and one model trains on those; there is nothing to hold out. Either
way, where the tree has true masks (``wbc synth``'s ``truth/``), the predictions of the images
without a given mask are scored against them, beside the classical baseline's.

The result is cached under ``<cache>/segment/<key>/`` (key: the decode fingerprint, every
setting, the encoder weights' digest, ``SEGMENT_VERSION``), so a second run on the same tree
and settings only writes the masks. ``write_masks`` writes one PNG (0 / 255, the image's size)
per WBC image without a mask at ``OUT/<its path below the root>.png``; it never writes inside
the tree and never over a file it did not write (``segment.json`` in OUT lists its run).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage as ndi

from wbc.datasets import DatasetError, Sample, Tree, true_mask
from wbc.datasets.cache import DecodedSet, decode_samples, default_cache_dir
from wbc.datasets.imageio import read_mask, read_rgb
from wbc.datasets.layout import WBC_CLASSES
from wbc.fileio import atomic_write_bytes, atomic_write_text, file_lock
from wbc.segment.classical import classical_mask
from wbc.segment.fit import SegmentSettings, fit_segmenter, predict_probabilities
from wbc.segment.pseudo import PSEUDO_RULE, classical_pseudo_labels

__all__ = [
    "METHOD_NAMES",
    "OUT_RECORD",
    "PATH_GIVEN",
    "PATH_SELF",
    "SEGMENT_VERSION",
    "Segmentation",
    "check_out",
    "iou_dice",
    "mask_map",
    "mask_path",
    "segment_key",
    "segment_tree",
    "to_original",
    "weights_digest",
    "with_predicted_masks",
    "write_masks",
]

SEGMENT_VERSION = 1  # bump when a change alters what a cached result would hold
OUT_RECORD = "segment.json"  # in a masks folder: the run that wrote it
PATH_GIVEN = "given masks"  # the record's "path": what the U-Net learnt from
PATH_SELF = "self-trained from classical masks"
METHODS = ("model", "classical", "disk", "all_foreground")
METHOD_NAMES = {"model": "U-Net (ResNet-18 encoder)", "classical": "classical (Otsu + morphology)",
                "disk": "centred disk of the mean area", "all_foreground": "all foreground"}


@dataclass
class Segmentation:
    """A segmentation run: its record (scores, counts, settings, seconds) and the predicted
    cell probability of every decoded WBC image (uint8, 255 = certain)."""

    record: dict[str, Any]
    probabilities: np.ndarray  # (N, S, S) uint8, one per row of ``decoded``
    decoded: DecodedSet
    samples: tuple[Sample, ...]


def iou_dice(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Whole-cell IoU and Dice of two bool masks (both empty: 1, 1)."""
    inter = float(np.count_nonzero(predicted & truth))
    total = float(np.count_nonzero(predicted) + np.count_nonzero(truth))
    if total == 0:
        return 1.0, 1.0
    return inter / (total - inter), 2 * inter / total


def _summary(pairs: Sequence[tuple[float, float]]) -> dict[str, float | int]:
    if not pairs:
        return {"n": 0, "iou": float("nan"), "dice": float("nan")}
    iou = np.array([p[0] for p in pairs])
    dice = np.array([p[1] for p in pairs])
    return {"n": len(pairs), "iou": float(iou.mean()), "dice": float(dice.mean()),
            "iou_median": float(np.median(iou)), "iou_p10": float(np.percentile(iou, 10))}


def _clean(mask: np.ndarray) -> np.ndarray:
    """The largest connected component, holes filled: one cell per crop."""
    labels, count = ndi.label(mask)
    if count > 1:
        sizes = ndi.sum(mask, labels, np.arange(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size  # (width, height), from the header


def to_original(probability: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    """A working-resolution probability map (uint8) as the bool mask of an image of ``size``
    (width, height): the inverse of ``wbc.datasets.imageio.to_working``'s pad-to-square and resize,
    thresholded and cleaned."""
    width, height = size
    side = max(width, height)
    image = Image.fromarray(probability, "L").resize((side, side), Image.Resampling.BILINEAR)
    left, top = (side - width) // 2, (side - height) // 2
    image = image.crop((left, top, left + width, top + height))
    return _clean(np.asarray(image) >= round(threshold * 255))


def _disk(size: tuple[int, int], area_fraction: float) -> np.ndarray:
    width, height = size
    radius = (area_fraction * width * height / np.pi) ** 0.5
    yy, xx = np.mgrid[:height, :width]
    return np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2) <= radius


def weights_digest(path: Path | str | None) -> str | None:
    """The SHA-256 of an encoder weights file (None for none): part of the cache key."""
    if path is None:
        return None
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def segment_key(fingerprint: str, settings: SegmentSettings, encoder_sha256: str | None) -> str:
    text = json.dumps({"version": SEGMENT_VERSION, "fingerprint": fingerprint,
                       "settings": settings.to_dict(), "encoder": encoder_sha256},
                      sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


class _Rows:
    """The decoded set's rows with the files they came from: masked rows and the others."""

    def __init__(self, decoded: DecodedSet, samples: Sequence[Sample]) -> None:
        self.image: dict[int, Path] = {}
        self.mask: dict[int, Path] = {}
        for sample, row in zip(samples, decoded.rows(samples), strict=True):
            self.image.setdefault(int(row), sample.path)
            if sample.mask is not None:
                self.mask.setdefault(int(row), sample.mask)
        self.unmasked = np.array(sorted(set(self.image) - set(self.mask)), dtype=np.int64)
        self.withheld: dict[int, Path] = {}  # given masks kept from training, scored as truth
        self.masked = np.array(sorted(self.mask), dtype=np.int64)

    def withhold(self, fraction: float, labels: np.ndarray, seed: int) -> None:
        """Keep ``fraction`` of each class's masked images out of training and scoring, to be
        scored like true masks (a tree with a mask for every image measures the segmenter as
        if it had only the rest; withheld from a small tree's every class, as if it had none)."""
        if fraction <= 0:
            return
        rng = np.random.default_rng([seed, 1])
        for label in np.unique(labels[self.masked]):
            members = rng.permutation(self.masked[labels[self.masked] == label])
            for row in members[:round(fraction * len(members))]:
                self.withheld[int(row)] = self.mask.pop(int(row))
        self.masked = np.array(sorted(self.mask), dtype=np.int64)


def _folds(masked: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(masked)
    return [f for f in np.array_split(order, min(folds, len(order))) if len(f)]


def _score_folds(decoded: DecodedSet, rows: _Rows, settings: SegmentSettings, *,
                 encoder_weights: Path | str | None, device: str,
                 say: Callable[[str], None]) -> dict[str, Any]:
    folds = _folds(rows.masked, settings.folds, settings.seed)
    scores: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    images = np.asarray(decoded.images)
    for k, held in enumerate(folds):
        train = np.setdiff1d(rows.masked, held)
        train_masks = np.asarray(decoded.masks[decoded.mask_row[train]])
        started = time.perf_counter()
        model = fit_segmenter(torch.from_numpy(images[train]), torch.from_numpy(train_masks),
                              settings, seed=settings.seed + 1 + k,
                              encoder_weights=encoder_weights, device=device)
        probs = (predict_probabilities(model, images[held]) * 255).round().astype(np.uint8)
        fraction = float(train_masks.mean())  # the disk's area, from the training folds
        for row, prob in zip(held, probs, strict=True):
            truth = read_mask(rows.mask[int(row)])
            size = (truth.shape[1], truth.shape[0])
            scores["model"].append(iou_dice(to_original(prob, size, settings.threshold), truth))
            rgb = read_rgb(rows.image[int(row)])
            if rgb.shape[:2] != truth.shape:  # checked trees match; be safe for odd files
                rgb = np.asarray(Image.fromarray(rgb).resize(size))
            scores["classical"].append(iou_dice(classical_mask(rgb), truth))
            scores["disk"].append(iou_dice(_disk(size, fraction), truth))
            scores["all_foreground"].append(iou_dice(np.ones_like(truth), truth))
        say(f"segmentation fold {k + 1}/{len(folds)}: trained on {len(train)} masked images, "
            f"held-out IoU {np.mean([s[0] for s in scores['model'][-len(held):]]):.3f} "
            f"({time.perf_counter() - started:.0f} s)")
    return {"folds": len(folds), **{m: _summary(s) for m, s in scores.items()}}


def _score_truth(root: Path, rows: _Rows, probabilities: np.ndarray, threshold: float
                 ) -> dict[str, Any] | None:
    """The predictions of the unmasked images against their true masks, where the tree has
    them (a synthetic tree's ``truth/``), beside the classical baseline's."""
    scores: dict[str, list[tuple[float, float]]] = {"model": [], "classical": []}
    for row in [*rows.unmasked, *rows.withheld]:
        found = rows.withheld.get(int(row))
        if found is None:
            try:
                found = true_mask(root, rows.image[int(row)])
            except ValueError:
                found = None
        if found is None:
            continue
        truth = read_mask(found)
        size = (truth.shape[1], truth.shape[0])
        scores["model"].append(iou_dice(to_original(probabilities[row], size, threshold), truth))
        rgb = read_rgb(rows.image[int(row)])
        if rgb.shape[:2] == truth.shape:
            scores["classical"].append(iou_dice(classical_mask(rgb), truth))
    if not scores["model"]:
        return None
    return {m: _summary(s) for m, s in scores.items()}


def _load_cached(folder: Path, key: str) -> tuple[dict[str, Any], np.ndarray] | None:
    try:
        record = json.loads((folder / "result.json").read_text())
        probabilities = np.load(folder / "probabilities.npy")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    return record, probabilities


def _from_given(decoded: DecodedSet, rows: _Rows, settings: SegmentSettings, *,
                encoder_weights: Path | str | None, device: str,
                say: Callable[[str], None]) -> tuple[np.ndarray, dict[str, Any]]:
    """The given-mask path: k-fold scores, then one model on every masked image; the
    probabilities of every row and the record's part of this path."""
    started = time.perf_counter()
    say(f"segmentation: {len(rows.masked)} masked WBC images to learn from, "
        f"{len(rows.unmasked)} to predict ({settings.image_size} px, {settings.steps} "
        f"steps, {min(settings.folds, len(rows.masked))}-fold scoring)")
    heldout = (_score_folds(decoded, rows, settings, encoder_weights=encoder_weights,
                            device=device, say=say)
               if len(rows.masked) >= 2 else None)
    scoring_seconds = time.perf_counter() - started
    images = np.asarray(decoded.images)
    masks = np.asarray(decoded.masks[decoded.mask_row[rows.masked]])
    model = fit_segmenter(torch.from_numpy(images[rows.masked]), torch.from_numpy(masks),
                          settings, encoder_weights=encoder_weights, device=device)
    final_seconds = time.perf_counter() - started - scoring_seconds
    probabilities = (predict_probabilities(model, images) * 255).round().astype(np.uint8)
    return probabilities, {"path": PATH_GIVEN, "heldout": heldout,
                           "seconds": {"scoring": round(scoring_seconds, 2),
                                       "final_training": round(final_seconds, 2)}}


def _self_trained(decoded: DecodedSet, rows: _Rows, settings: SegmentSettings, *,
                  encoder_weights: Path | str | None, device: str,
                  say: Callable[[str], None]) -> tuple[np.ndarray, dict[str, Any]]:
    """No given mask to learn from: the classical mask of every image, the confident ones kept
    as pseudo-labels (``wbc.segment.pseudo``), one model trained on those predicts every
    image. No held-out scores: only true masks, where the tree has them, measure it."""
    started = time.perf_counter()
    images = np.asarray(decoded.images)
    candidates = np.array(sorted(rows.image), dtype=np.int64)
    say(f"segmentation: no WBC image has a mask; the classical segmenter outlines all "
        f"{len(candidates)} at {settings.image_size} px, the confident ones train the U-Net")
    masks, keep = classical_pseudo_labels(images[candidates])
    kept = candidates[keep]
    labels = decoded.labels[candidates]
    if not len(kept):
        raise DatasetError(f"the classical segmenter gave no confident whole-cell mask on any of "
                           f"{len(candidates)} WBC images (one compact cell near the centre); "
                           "there is nothing to learn from: give some masks "
                           "(WBC_100/train/mask/<Class>/)")
    pseudo_seconds = time.perf_counter() - started
    say(f"segmentation: kept {len(kept)} of {len(candidates)} classical masks as pseudo-labels; "
        f"training the U-Net on them ({settings.steps} steps)")
    model = fit_segmenter(torch.from_numpy(images[kept]), torch.from_numpy(masks[keep]),
                          settings, encoder_weights=encoder_weights, device=device)
    final_seconds = time.perf_counter() - started - pseudo_seconds
    probabilities = (predict_probabilities(model, images) * 255).round().astype(np.uint8)
    per_class = {name: [int(np.count_nonzero(keep & (labels == k))),
                        int(np.count_nonzero(labels == k))]
                 for k, name in enumerate(WBC_CLASSES) if np.any(labels == k)}
    return probabilities, {
        "path": PATH_SELF, "heldout": None,
        "pseudo_labels": {"kept": len(kept), "candidates": len(candidates),
                          "per_class": per_class, "rule": PSEUDO_RULE.to_dict()},
        "seconds": {"pseudo_labels": round(pseudo_seconds, 2), "scoring": 0.0,
                    "final_training": round(final_seconds, 2)}}


def segment_tree(tree: Tree, settings: SegmentSettings | None = None, *,
                 cache_dir: Path | str | None = None, encoder_weights: Path | str | None = None,
                 device: str = "cpu", workers: int | None = None,
                 say: Callable[[str], None] | None = None) -> Segmentation:
    """Learn from the given masks or, with none, self-train from classical ones; predict every
    image (see the module docstring); cached by key. Raises ``DatasetError`` when there is
    nothing to learn from (no given mask and no confident classical one)."""
    settings = settings or SegmentSettings()
    say = say or (lambda message: None)
    samples = tuple(tree.wbc.samples())
    decoded = decode_samples(list(samples), settings.image_size, name="WBC",
                             cache_dir=cache_dir, workers=workers)
    encoder_sha = weights_digest(encoder_weights)
    key = segment_key(decoded.fingerprint, settings, encoder_sha)
    folder = Path(cache_dir or default_cache_dir()) / "segment" / key
    rows = _Rows(decoded, samples)
    rows.withhold(settings.withhold, decoded.labels, settings.seed)
    with file_lock(folder.parent / f"{key}.lock"):
        cached = _load_cached(folder, key)
        if cached is not None:
            say(f"segmentation {key}: cached in {folder}")
            record, probabilities = cached
            if record.get("truth") is None:  # true masks added to the tree since: score them
                record["truth"] = _score_truth(tree.root, rows, probabilities,
                                               settings.threshold)
                if record["truth"] is not None:
                    atomic_write_text(folder / "result.json", json.dumps(record, indent=2))
            return Segmentation({**record, "cached": True}, probabilities, decoded, samples)
        started = time.perf_counter()
        learn = _from_given if len(rows.masked) else _self_trained
        probabilities, part = learn(decoded, rows, settings, encoder_weights=encoder_weights,
                                    device=device, say=say)
        truth = _score_truth(tree.root, rows, probabilities, settings.threshold)
        record = {
            "version": SEGMENT_VERSION, "key": key, "fingerprint": decoded.fingerprint,
            "settings": settings.to_dict(),
            "encoder": str(encoder_weights) if encoder_weights is not None else "random",
            "encoder_sha256": encoder_sha, "device": device,
            "masked_images": len(rows.masked), "predicted_images": len(rows.unmasked),
            "withheld_masks": len(rows.withheld), **part, "truth": truth,
            "seconds": {**part["seconds"], "total": round(time.perf_counter() - started, 2)},
        }
        folder.mkdir(parents=True, exist_ok=True)
        buffer = _npy_bytes(probabilities)
        atomic_write_bytes(folder / "probabilities.npy", buffer)
        atomic_write_text(folder / "result.json", json.dumps(record, indent=2))
    return Segmentation({**record, "cached": False}, probabilities, decoded, samples)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    handle = io.BytesIO()
    np.save(handle, array)
    return handle.getvalue()


def _relative(root: Path, path: Path) -> Path:
    for p, base in ((path, root), (path.absolute(), root.absolute())):
        if p.is_relative_to(base):
            return p.relative_to(base)
    raise ValueError(f"{path} is not inside {root}")


def mask_path(out: Path, root: Path, image: Path) -> Path:
    """Where ``write_masks`` puts the predicted mask of ``image``: ``OUT/<rel>.png``, the
    image's own name with ``.png`` appended (``a.jpg`` and ``a.png`` of one folder, which the
    scanner allows, get masks of their own)."""
    relative = _relative(root, image)
    return out / relative.parent / f"{relative.name}.png"


def check_out(out: Path, root: Path) -> None:
    """Refuse an OUT inside the tree, holding it, a file, or a folder of other files."""
    out_abs, root_abs = out.resolve(), root.resolve()
    if out_abs == root_abs or out_abs.is_relative_to(root_abs):
        raise DatasetError(f"--out {out}: inside the tree {root}; the predicted masks would sit "
                           "among its files. Give a folder outside it")
    if root_abs.is_relative_to(out_abs):
        raise DatasetError(f"--out {out}: holds the tree {root}; give a folder of its own")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / OUT_RECORD).is_file():
        raise DatasetError(f"--out {out}: not empty and not written by `wbc segment` (no "
                           f"{OUT_RECORD}); give a new or empty folder")


def write_masks(segmentation: Segmentation, root: Path, out: Path) -> dict[str, Any]:
    """Write the predicted mask of every WBC image without a mask under ``out`` (see the
    module docstring); returns what ``OUT/segment.json`` records."""
    root, out = Path(root), Path(out)
    check_out(out, root)
    record = segmentation.record
    threshold = float(record["settings"]["threshold"])
    rows = segmentation.decoded.rows(segmentation.samples)
    out.mkdir(parents=True, exist_ok=True)
    # Claimed first: a run cut short leaves a folder that a second run may write over (and
    # that with_predicted_masks refuses), not one that looks like nobody's.
    atomic_write_text(out / OUT_RECORD, json.dumps({"key": record["key"], "complete": False}))
    written, seen = 0, set[Path]()
    for sample, row in zip(segmentation.samples, rows, strict=True):
        if sample.mask is not None or sample.path in seen:  # derived subsets repeat samples
            continue
        seen.add(sample.path)
        target = mask_path(out, root, sample.path)
        mask = to_original(segmentation.probabilities[int(row)], _image_size(sample.path),
                           threshold)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(target)
        written += 1
    given = len({s.path for s in segmentation.samples if s.mask is not None})
    summary = {"root": str(root.absolute()), "key": record["key"], "complete": True,
               "written": written,
               "given_masks": given, "segmentation": {k: v for k, v in record.items()
                                                      if k != "cached"}}
    atomic_write_text(out / OUT_RECORD, json.dumps(summary, indent=2))
    return summary


def mask_map(tree: Tree, out: Path) -> dict[Path, Path]:
    """Image -> predicted mask file under ``out`` for every WBC image without a mask whose
    mask ``write_masks`` wrote: what ``Tree.with_masks`` takes."""
    found: dict[Path, Path] = {}
    for sample in _unmasked(tree.wbc.samples()):
        target = mask_path(out, tree.root, sample.path)
        if target.is_file():
            found[sample.path] = target
    return found


def with_predicted_masks(tree: Tree, out: Path | str) -> Tree:
    """``tree`` with the masks ``wbc segment`` wrote to ``out`` for its images without one.
    Raises ``DatasetError`` when ``out`` is no such folder, or lacks the mask of an image (it
    was made for another tree, or the tree changed since): the message says what to run."""
    out = Path(out)
    if not (out / OUT_RECORD).is_file():
        raise DatasetError(f"{out}: not a folder of predicted masks (no {OUT_RECORD}); make "
                           f"one with `wbc segment {tree.root} --out {out}`")
    try:
        complete = json.loads((out / OUT_RECORD).read_text()).get("complete", False)
    except (OSError, ValueError, AttributeError):
        complete = False
    if not complete:
        raise DatasetError(f"{out}: `wbc segment` did not finish writing these masks; run "
                           f"`wbc segment {tree.root} --out {out}` again")
    found = mask_map(tree, out)
    missing = [s.path for s in _unmasked(tree.wbc.samples()) if s.path not in found]
    if missing:
        raise DatasetError(f"{out}: no predicted mask for {len(missing)} image(s) of {tree.root} "
                           f"without a mask (first: {missing[0]}); it was made for another "
                           f"tree or before the tree changed: run `wbc segment {tree.root} "
                           f"--out {out}` again")
    return tree.with_masks(found, out)


def _unmasked(samples: Iterable[Sample]) -> Iterable[Sample]:
    return (s for s in samples if s.mask is None)
