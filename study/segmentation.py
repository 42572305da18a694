"""Masks for all data, once per study: the segmenter of the strategies that paste predicted
masks (``mask_source = "predicted"``: ``pretrain_aug_predicted``).

``ensure_masks`` runs ``wbc.segment.segment_tree`` (k-fold scores of the U-Net and the
baselines on the masked images, then every other WBC image predicted; on a tree with no masks,
the U-Net self-trained on the confident classical masks) in a Ray task on one node,
with that node's CPUs (a GPU when trials use GPUs), and writes the masks to
``<results>/masks/`` (shared storage on a cluster: every node's trials read them). A resume
whose masks folder was written for the same data and settings reuses it without training. The
tree with the predicted masks filled in is decoded once more (its fingerprint differs: its
masks do), so that the predicted-mask trials only map the cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from study.train.reports import progress_lines
from wbc.config import SegmentSettings
from wbc.datasets import Tree
from wbc.datasets.cache import decode_samples
from wbc.segment.pipeline import (
    OUT_RECORD,
    PATH_SELF,
    segment_key,
    weights_digest,
    with_predicted_masks,
)
from wbc.training.inputs import wbc_decode_set

__all__ = ["MASKS_DIR", "PredictedMasks", "ensure_masks"]

MASKS_DIR = "masks"


@dataclass(frozen=True)
class PredictedMasks:
    tree: Tree  # the study's tree with the predicted masks filled in
    fingerprint: str  # its WBC decode set's
    record: dict[str, Any]  # for study.json: scores, counts, settings, seconds


def _segment_task(tree: Tree, settings: dict[str, Any], out: str, encoder: str | None,
                  threads: int, use_gpu: bool, cache_dir: str | None, lines: Any = None
                  ) -> dict[str, Any]:
    """The segmentation in a Ray task; its progress lines put on the ``lines`` queue."""
    import contextlib

    import torch

    from wbc.segment import segment_tree, write_masks
    from wbc.training.hardware import require_cuda

    def say(message: str) -> None:
        if lines is not None:
            with contextlib.suppress(Exception):  # a lost progress line never fails the run
                lines.put_nowait(message)

    torch.set_num_threads(max(1, threads))
    device = require_cuda("the segmentation") if use_gpu else "cpu"
    segmentation = segment_tree(tree, SegmentSettings(**settings), cache_dir=cache_dir,
                                encoder_weights=encoder, device=device, say=say)
    return write_masks(segmentation, tree.root, Path(out))


def _reusable(out: Path, fingerprint: str, settings: SegmentSettings,
              encoder_sha: str | None) -> dict[str, Any] | None:
    try:
        summary = json.loads((out / OUT_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not summary.get("complete") or summary.get(
            "key") != segment_key(
            fingerprint, settings, encoder_sha):
        return None
    return summary


def ensure_masks(tree: Tree, settings: SegmentSettings, results: Path, *, image_size: int,
                 encoder: Path | None, cpus: int, use_gpu: bool, cache_dir: str | None,
                 say: Callable[[str], None]) -> PredictedMasks:
    """The study's predicted masks (trained and written, or reused; see the module docstring).
    ``image_size``: the study's working resolution, at which the filled tree is decoded."""
    out = results / MASKS_DIR
    started = time.perf_counter()
    fingerprint = decode_samples(list(tree.wbc.samples()), settings.image_size, name="WBC",
                                 cache_dir=cache_dir).fingerprint
    summary = _reusable(out, fingerprint, settings, weights_digest(encoder))
    if summary is not None:
        say(f"segmentation: reusing the masks in {out} ({summary['written']} predicted)")
    else:
        what = (f"on the masked images ({settings.steps} steps, {settings.folds}-fold "
                "scoring, then the final model)"
                if any(s.mask is not None for s in tree.wbc.samples()) else
                f"on the confident classical masks (self-trained: no image has a mask; "
                f"{settings.steps} steps)")
        say(f"segmentation: training the segmenter {what}, on {cpus} CPUs"
            f"{' and a GPU' if use_gpu else ''}")
        task = ray.remote(_segment_task).options(num_cpus=cpus, num_gpus=1 if use_gpu else 0)
        with progress_lines(say) as lines:  # type: ignore[arg-type]  # lines, not reports
            summary = ray.get(task.remote(tree, settings.to_dict(), str(out),
                                          str(encoder) if encoder else None, cpus, use_gpu,
                                          cache_dir, lines))
    filled = with_predicted_masks(tree, out)
    decoded = decode_samples(list(wbc_decode_set(filled)), image_size, name="WBC",
                             cache_dir=cache_dir)
    record = {**summary["segmentation"], "masks": MASKS_DIR, "written": summary["written"],
              "given_masks": summary["given_masks"], "fingerprint_with_masks": decoded.fingerprint,
              "wall_seconds_this_session": round(time.perf_counter() - started, 2)}
    say(f"segmentation: {summary['written']} masks predicted; {_scores(record)}")
    return PredictedMasks(filled, decoded.fingerprint, record)


def _scores(record: dict[str, Any]) -> str:
    """What the segmenter learnt from and how it scored, for the study's progress line."""
    heldout, truth = record.get("heldout") or {}, record.get("truth") or {}
    pseudo = record.get("pseudo_labels")
    parts = [f"held-out IoU {heldout['model']['iou']:.3f} (classical "
             f"{heldout['classical']['iou']:.3f})"] if heldout else []
    if record.get("path") == PATH_SELF and pseudo:
        parts.insert(0, f"{PATH_SELF} (no given masks; {pseudo['kept']} of "
                        f"{pseudo['candidates']} kept as pseudo-labels)")
    if truth:
        parts.append(f"IoU against the true masks {truth['model']['iou']:.3f} (classical "
                     f"{truth['classical']['iou']:.3f})")
    elif not heldout:
        parts.append("no true masks to score against")
    return "; ".join(parts)
