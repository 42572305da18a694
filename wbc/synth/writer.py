"""Writing a synthetic tree in the report's layout: plan the jobs, render them in a pool, link
the subsets, record ``synth.json``.

Every image is drawn from its own random stream, ``SeedSequence([seed, dataset, split, class,
index])``, so an image's bytes depend only on the seed, the image size, the stain shift and its
place in the tree: not on the number of workers, and not on the scale (a smaller scale's images
are the first ones of a larger scale's; which of them carry masks is drawn per scale). The stain
shift changes only the look: masks, and which images carry them, do not depend on it.

Besides the ``mask/`` files of the report's layout (about 10% of the images), every WBC_100 and
CAM16 image's true mask is written to ``truth/`` (:mod:`wbc.datasets.truth`), a folder the
scanners ignore, so that segmentation can be scored against all images.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from wbc.datasets.importer import link_or_copy
from wbc.datasets.layout import CAM16_CLASSES, WBC_CLASSES, subset_name
from wbc.datasets.subsets import derive_subsets
from wbc.datasets.truth import TRUTH_DIR, truth_path
from wbc.fileio import atomic_write_bytes
from wbc.synth.cells import render_wbc
from wbc.synth.counts import SUBSETS, Counts, planned_counts
from wbc.synth.stain import check_stain_shift
from wbc.synth.tissue import render_cam16, render_prcc

__all__ = ["SynthSummary", "synthesize"]

_DATASET_ID = {"WBC_100": 0, "CAM16": 1, "pRCC": 2}
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
# A separate stream for choosing which images carry a mask, so that the choice cannot shift any
# image's own stream.
_MASK_STREAM = 7
# Top-level folders this module writes; overwrite=True removes exactly these.
_OWNED = ("WBC_100", *(subset_name(p) for p in SUBSETS), "CAM16", "pRCC", TRUTH_DIR,
          "synth.json")
# The datasets whose renderer draws a mask for every image; pRCC has none.
_TRUTH_DATASETS = ("WBC_100", "CAM16")

_CountDict = dict[str, dict[str, dict[str, tuple[int, int]]]]


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out: Path
    counts: Counts  # dataset -> split -> class -> (data, mask) files, subsets included
    images: int  # image files rendered (WBC_100, CAM16, pRCC); subset links not counted
    masks: int  # mask files rendered
    linked: int  # subset files hard-linked (or copied where linking failed)
    seconds: float
    seed: int
    scale: float
    image_size: int
    val_scale: float  # WBC_100/val's scale, ``scale`` unless given
    tissue_scale: float  # CAM16's and pRCC's scale, ``scale`` unless given
    test_scale: float | None = None  # WBC_100/test's scale; None: no test split
    stain_shift: float = 0.0  # another lab's stain and microscope; 0 is the usual look
    truth: int = 0  # true masks written to ``truth/`` (every WBC_100 and CAM16 image)

    @property
    def images_per_second(self) -> float:
        """Rendered images (links not counted) per second of the whole run."""
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Job:
    dataset: str
    split: str
    cls: str
    class_id: int
    index: int
    data: str
    mask: str | None
    truth: str | None = None


def _stream(seed: int, job: _Job) -> np.random.SeedSequence:
    return np.random.SeedSequence(
        [seed, _DATASET_ID[job.dataset], _SPLIT_ID[job.split], job.class_id, job.index]
    )


def _encode(array: np.ndarray, fmt: str, **options: int) -> bytes:
    buf = BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    # Atomic, so an interrupted run never leaves a truncated JPEG under its final name; not
    # fsynced, because a file lost to a power cut is redrawn by rerunning with the same seed, and
    # an fsync per image would cost more than drawing it.
    atomic_write_bytes(path, data, fsync=False)


def _render_job(seed: int, image_size: int, stain_shift: float, job: _Job) -> None:
    draw, encode = _stream(seed, job).spawn(2)
    rng = np.random.default_rng(draw)
    mask: np.ndarray | None
    if job.dataset == "WBC_100":
        image, mask = render_wbc(job.cls, rng, image_size, stain_shift=stain_shift)
    elif job.dataset == "CAM16":
        image, mask = render_cam16(job.cls, rng, image_size, stain_shift=stain_shift)
    else:
        image, mask = render_prcc(rng, image_size, stain_shift=stain_shift), None
    quality = int(np.random.default_rng(encode).integers(72, 96))
    _write(Path(job.data), _encode(image, "JPEG", quality=quality))
    if job.mask is None and job.truth is None:
        return
    assert mask is not None
    # Encoded once: a truth file is byte-identical to the image's mask/ file where it has one.
    png = _encode(mask, "PNG", compress_level=6)
    for path in (job.mask, job.truth):
        if path is not None:
            _write(Path(path), png)


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread: the matrices here are small, and BLAS threads on top of the
    workers oversubscribe the cores (a two-worker run measured slower than one without this)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _init_worker() -> None:
    _one_blas_thread().__enter__()


def _render_chunk(args: tuple[int, int, float, list[_Job]]) -> int:
    seed, image_size, stain_shift, jobs = args
    for job in jobs:
        _render_job(seed, image_size, stain_shift, job)
    return len(jobs)


def _plan_jobs(out: Path, counts: Counts, seed: int, truth: bool
               ) -> tuple[list[_Job], list[_Job]]:
    """All render jobs, and the WBC_100 train jobs in the order subsets index them."""
    jobs: list[_Job] = []
    wbc_train: list[_Job] = []
    for dataset, classes in (("WBC_100", WBC_CLASSES), ("CAM16", CAM16_CLASSES), ("pRCC", ("",))):
        for split, per_class in counts[dataset].items():
            for class_id, cls in enumerate(classes):
                n_data, n_mask = per_class[cls]
                pick = np.random.default_rng(
                    np.random.SeedSequence([seed, _MASK_STREAM, _DATASET_ID[dataset], class_id])
                )
                with_mask = set(pick.choice(n_data, n_mask, replace=False).tolist())
                folder = out / dataset / split
                prefix = "_".join(p for p in (dataset.split("_")[0], cls, split) if p)
                for i in range(n_data):
                    stem = f"{prefix}_{i:06d}"
                    job = _Job(
                        dataset, split, cls, class_id, i,
                        str(folder / "data" / cls / f"{stem}.jpg"),
                        str(folder / "mask" / cls / f"{stem}.png") if i in with_mask else None,
                        str(truth_path(out, dataset, split, Path(cls) / f"{stem}.png"))
                        if truth and dataset in _TRUTH_DATASETS else None,
                    )
                    jobs.append(job)
                    if dataset == "WBC_100" and split == "train":
                        wbc_train.append(job)
    return jobs, wbc_train


def _link_subsets(out: Path, wbc_train: list[_Job], seed: int) -> tuple[_CountDict, int]:
    labels = np.array([job.class_id for job in wbc_train], dtype=np.int64)
    has_mask = np.array([job.mask is not None for job in wbc_train], dtype=bool)
    chosen = derive_subsets(labels, has_mask, SUBSETS, seed=seed)
    counts: _CountDict = {}
    linked = 0
    for p, indices in chosen.items():
        name = subset_name(p)
        per_class = {cls: [0, 0] for cls in WBC_CLASSES}
        for i in indices.tolist():
            job = wbc_train[i]
            pairs = [(Path(job.data), "data")]
            if job.mask is not None:
                pairs.append((Path(job.mask), "mask"))
            for src, kind in pairs:
                dst = out / name / "train" / kind / job.cls / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(src, dst)
                linked += 1
            per_class[job.cls][0] += 1
            per_class[job.cls][1] += job.mask is not None
        counts[name] = {"train": {c: (d, m) for c, (d, m) in per_class.items()}}
    return counts, linked


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; choose a folder to write the tree in")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out} is not empty; choose an empty or new folder, or pass overwrite=True "
                f"(CLI: --overwrite) to replace its {', '.join(_OWNED)}"
            )
        for name in _OWNED:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _chunks(jobs: list[_Job], size: int) -> Iterator[list[_Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def _report(say: Callable[[str], None], done: int, total: int, next_report: float) -> float:
    # Roughly every 10%, and at the end.
    if done >= total or done >= next_report:
        say(f"{done}/{total} images")
        return done + total / 10
    return next_report


def _render_all(
    jobs: list[_Job],
    seed: int,
    image_size: int,
    stain_shift: float,
    workers: int,
    say: Callable[[str], None],
) -> None:
    """Render every job, in this process (``workers == 1``) or in a pool of ``workers``."""
    # Small chunks keep every worker busy to the end; 32 images are ~0.5 s of work. The chunk
    # carries everything a worker draws with: it shares no state with this process.
    chunks = [(seed, image_size, stain_shift, chunk) for chunk in _chunks(jobs, 32)]
    done, next_report = 0, 0.0
    if workers == 1:
        with _one_blas_thread():
            for chunk in chunks:
                done += _render_chunk(chunk)
                next_report = _report(say, done, len(jobs), next_report)
        return
    methods = mp.get_all_start_methods()
    # forkserver/spawn: forking a parent that already runs threads (torch, Ray) can hang.
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        for k in pool.imap_unordered(_render_chunk, chunks):
            done += k
            next_report = _report(say, done, len(jobs), next_report)


def synthesize(
    out: Path,
    *,
    scale: float = 1.0,
    image_size: int = 128,
    seed: int = 0,
    val_scale: float | None = None,
    tissue_scale: float | None = None,
    test_scale: float | None = None,
    stain_shift: float = 0.0,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    truth: bool = True,
) -> SynthSummary:
    """Write a synthetic WBC + CAM16 + pRCC tree in the report's layout under ``out``.

    Counts follow :func:`planned_counts` (``scale=1.0`` is the report's Tables 1 and 2). WBC_50,
    WBC_10 and WBC_1 are hard links to WBC_100 train files chosen by
    :func:`wbc.datasets.subsets.derive_subsets` with the same ``seed``. Files are byte-identical for
    the same ``seed``, ``scale`` and ``image_size`` whatever ``workers`` is. Raises ValueError if
    ``out`` is not empty, unless ``overwrite`` (which replaces only the folders written here).

    ``val_scale`` (WBC_100/val) and ``tissue_scale`` (CAM16, pRCC) default to ``scale``; they
    change how many images those splits hold, never the bytes of an image nor WBC_100/train and
    its subsets. ``synth.json`` records them when given. ``test_scale`` adds a WBC_100/test
    split (:func:`planned_counts`; None, the default: none), recorded likewise; the other
    splits' files are the same with or without it.

    ``stain_shift`` (S) draws the tree as another lab's stain and microscope would show it, for
    cross-domain evaluation: every image, smears and tissue alike, gets the same fixed change of
    acquisition (:func:`wbc.synth.stain.shift_look`, the ``SHIFT_*`` directions there): a
    fixed hue change of every stain vector, another lamp's white point, and stain strength, blur
    and sensor noise offsets, all proportional to S. S = 1 is a warmer, yellower lamp with
    purple-magenta nuclei, pinker cytoplasm and redder red cells, a little darker and softer;
    S = -1 a colder, bluer, paler and sharper one. The cells, the tissue, the masks and which
    images carry masks stay those of ``stain_shift=0``, which is today's look byte for byte.
    ``synth.json`` records it when not 0. Raises ValueError if it is not finite.

    ``truth`` also writes every WBC_100 and CAM16 image's true mask to
    ``out/truth/<dataset>/<split>/<Class>/<stem>.png`` (:func:`wbc.datasets.true_mask` finds
    it; the scanners ignore the folder), encoded as the ``mask/`` files and byte-identical to
    them where an image has both; the subsets' images are WBC_100's, so their truth is too.
    ``synth.json`` records it under ``"truth"``; with ``truth=False`` neither is written.
    """
    stain_shift = check_stain_shift(stain_shift)
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    counts = planned_counts(scale, val_scale=val_scale, tissue_scale=tissue_scale,
                            test_scale=test_scale)
    out = Path(out)
    _prepare_out(out, overwrite)
    start = time.perf_counter()
    say = progress or (lambda _msg: None)

    jobs, wbc_train = _plan_jobs(out, counts, seed, truth)
    for folder in sorted({str(Path(p).parent) for j in jobs for p in (j.data, j.mask, j.truth)
                          if p}):
        Path(folder).mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 16))
    say(f"rendering {len(jobs)} images with {workers} worker(s) into {out}")
    _render_all(jobs, seed, image_size, stain_shift, workers, say)

    say("linking WBC_50/10/1")
    subset_counts, linked = _link_subsets(out, wbc_train, seed)
    all_counts: _CountDict = dict(counts)
    all_counts.update(subset_counts)
    provenance: dict[str, object] = {"generator": "wbc.synth", "seed": seed, "scale": scale}
    # Recorded only when given, so that a tree made without them keeps its synth.json bytes;
    # absent means ``scale``.
    provenance.update({k: v for k, v in (("val_scale", val_scale),
                                         ("tissue_scale", tissue_scale),
                                         ("test_scale", test_scale)) if v is not None})
    if stain_shift:
        provenance["stain_shift"] = stain_shift
    provenance["image_size"] = image_size
    if truth:
        provenance["truth"] = {
            "folder": TRUTH_DIR,
            "layout": f"{TRUTH_DIR}/<dataset>/<split>/<Class>/<stem>.png",
            "datasets": list(_TRUTH_DATASETS),
            "subsets": "their images are WBC_100/train's: see truth/WBC_100/train",
        }
    provenance["counts"] = {d: {s: {c: list(v) for c, v in pc.items()} for s, pc in sp.items()}
                            for d, sp in all_counts.items()}
    atomic_write_bytes(out / "synth.json", json.dumps(provenance, indent=1).encode())
    seconds = time.perf_counter() - start
    summary = SynthSummary(
        out=out, counts=all_counts, images=len(jobs),
        masks=sum(j.mask is not None for j in jobs), linked=linked, seconds=seconds,
        seed=seed, scale=scale, image_size=image_size,
        val_scale=scale if val_scale is None else val_scale,
        tissue_scale=scale if tissue_scale is None else tissue_scale, test_scale=test_scale,
        stain_shift=stain_shift, truth=sum(j.truth is not None for j in jobs),
    )
    true = f" (and {summary.truth} true masks in {TRUTH_DIR}/)" if truth else ""
    say(f"wrote {summary.images} images and {summary.masks} masks{true} in {seconds:.1f} s "
        f"({summary.images_per_second:.0f} images/s), linked {linked} subset files")
    return summary
