"""Decode every image once: a memory-mapped uint8 array per (file set, working resolution).

A study touches each image in thousands of epochs across hundreds of trials; decoding JPEG/BMP
files each time would cost more than training a small model on the CPU and starve a GPU. So the
files are decoded once into

    <cache>/<name>-<size>px-<fingerprint>/images.npy    (N, S, S, 3) uint8
                                          masks.npy     (M, S, S) bool, one per row with a mask
                                          meta.npz      labels, mask row per image (-1: none)
                                          manifest.json paths, sizes, versions; written last

and every trial and process maps the same pages read-only (``np.load(mmap_mode="r")``): the OS
page cache holds one copy however many trials read it.

The fingerprint covers each file's path (relative to the files' common folder), size and
modification time, its mask's, its label, the resolution and the resize policy version. Change a
file and the fingerprint changes, so a new cache is built; the same tree loaded twice decodes
nothing the second time. Two processes building the same cache at once are serialised by a file
lock, and a build goes to a temporary folder renamed into place only when complete, so a reader
never sees a half-written cache and a killed build leaves only a temporary folder to sweep.

Images that are the same file (hard links, or copies with equal name, size and mtime, as
``cp -p`` and ``shutil.copy2`` make) share one row, so subset folders cost no extra decoding.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from wbc.datasets import Sample
from wbc.imageio import mask_to_working, read_mask, read_rgb, to_working

__all__ = ["CACHE_VERSION", "DecodedSet", "decode_samples", "default_cache_dir"]

# Bump when the decode or resize policy changes: old caches then no longer match.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$WBC_CACHE_DIR``, else ``~/.cache/wbc`` (a local disk: memory maps want one)."""
    env = os.environ.get("WBC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "wbc"


@dataclass(frozen=True)
class DecodedSet:
    """Decoded images of a file set, memory-mapped read-only, and the way back to samples."""

    images: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (M, S, S) bool
    mask_row: np.ndarray  # (N,) int32: row in ``masks``, -1 for an image without mask
    labels: np.ndarray  # (N,) int64, -1 for unlabelled
    directory: Path
    fingerprint: str
    decoded_now: int  # images decoded by this call: 0 when the cache was already there
    row_of: dict[str, int]  # image path -> row

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows(self, samples: Sequence[Sample]) -> np.ndarray:
        """Rows of ``samples`` in this set (a sample from outside it raises ``KeyError``)."""
        return np.fromiter((self.row_of[str(s.path)] for s in samples), dtype=np.int64,
                           count=len(samples))

    def mask_for(self, row: int) -> np.ndarray | None:
        """The working-resolution cell mask of ``row``, or None if it has none."""
        index = int(self.mask_row[row])
        return None if index < 0 else self.masks[index]


@dataclass(frozen=True)
class _Entry:
    path: Path
    label: int
    mask: Path | None


def _distinct_samples(samples: Sequence[Sample]) -> list[Sample]:
    """Samples by path, once each (derived subsets repeat WBC_100's samples)."""
    by_path: dict[Path, Sample] = {}
    for sample in samples:
        seen = by_path.get(sample.path)
        if seen is None or (seen.mask is None and sample.mask is not None):
            by_path[sample.path] = sample
    return list(by_path.values())


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "blake2b").digest()


def _unique_entries(samples: Sequence[Sample]) -> tuple[list[_Entry], dict[str, int]]:
    """One row per distinct image file: hard links, and copies with equal bytes, share a row.

    Only files that agree in name, size and label are compared by content, so a tree without
    copies reads no file here.
    """
    entries: list[_Entry] = []
    row_of: dict[str, int] = {}
    by_inode: dict[tuple[int, int], int] = {}
    by_key: dict[tuple[str, int, int], list[int]] = {}
    digests: dict[int, bytes] = {}
    for sample in samples:
        stat = sample.path.stat()
        row = by_inode.get((stat.st_dev, stat.st_ino))
        key = (sample.path.name, stat.st_size, sample.label)
        if row is None and key in by_key:
            digest = _file_digest(sample.path)
            for candidate in by_key[key]:
                if candidate not in digests:
                    digests[candidate] = _file_digest(entries[candidate].path)
                if digests[candidate] == digest:
                    row = candidate
                    break
        if row is None:
            row = len(entries)
            entries.append(_Entry(sample.path, sample.label, sample.mask))
            by_key.setdefault(key, []).append(row)
        elif entries[row].mask is None and sample.mask is not None:
            entries[row] = _Entry(entries[row].path, entries[row].label, sample.mask)
        by_inode[(stat.st_dev, stat.st_ino)] = row
        row_of[str(sample.path)] = row
    return entries, row_of


def _fingerprint(samples: Sequence[Sample], size: int) -> str:
    # Absolute (not resolved) paths: resolving every component of every file costs seconds on
    # a large tree, and a symlinked root is the same tree either way for this purpose.
    paths = [os.path.abspath(p) for s in samples for p in (s.path, s.mask) if p is not None]
    base = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    digest = hashlib.sha256(f"v{CACHE_VERSION} size={size}\n".encode())
    for sample in samples:
        for path in (sample.path, sample.mask):
            if path is None:
                digest.update(b"-\n")
                continue
            stat = os.stat(path)
            rel = os.path.relpath(os.path.abspath(path), base)
            digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\t".encode())
        digest.update(f"{sample.label}\n".encode())
    return digest.hexdigest()


def _decode_rows(args: tuple[str, int, int, int, list[tuple[str, str | None, int]]]) -> int:
    """Worker: decode rows ``start..stop`` straight into the memory-mapped outputs."""
    directory, size, start, stop, jobs = args
    images = np.load(Path(directory) / "images.npy", mmap_mode="r+")
    masks = np.load(Path(directory) / "masks.npy", mmap_mode="r+")
    for row, (path, mask_path, mask_index) in zip(range(start, stop), jobs, strict=True):
        rgb = read_rgb(Path(path), draft_size=size)
        images[row] = to_working(rgb, size)
        if mask_path is not None:
            masks[mask_index] = mask_to_working(read_mask(Path(mask_path)), size,
                                                image_shape=rgb.shape[:2])
    images.flush()
    masks.flush()
    return stop - start


def _build(directory: Path, entries: Sequence[_Entry], row_of: dict[str, int], size: int,
           workers: int, progress: Callable[[str], None] | None) -> None:
    n = len(entries)
    mask_row = np.full(n, -1, dtype=np.int32)
    with_mask = [i for i, e in enumerate(entries) if e.mask is not None]
    mask_row[with_mask] = np.arange(len(with_mask), dtype=np.int32)
    open_memmap(directory / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    open_memmap(directory / "masks.npy", mode="w+", dtype=np.bool_,
                shape=(len(with_mask), size, size))
    jobs = [(str(e.path), str(e.mask) if e.mask else None, int(mask_row[i]))
            for i, e in enumerate(entries)]
    chunk = max(32, min(512, n // max(1, workers * 4) + 1))
    tasks = [(str(directory), size, s, min(s + chunk, n), jobs[s:s + chunk])
             for s in range(0, n, chunk)]
    started = time.perf_counter()
    done = 0
    if workers > 1 and len(tasks) > 1:
        # fork, as torch's DataLoader does on Linux: the children only run numpy and Pillow
        # code already imported, and spawn would re-run a user's unguarded script.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for count in pool.map(_decode_rows, tasks):
                done += count
                if progress is not None:
                    progress(f"decoded {done}/{n} images")
    else:
        for task in tasks:
            done += _decode_rows(task)
    np.savez(directory / "meta.npz", labels=np.array([e.label for e in entries], np.int64),
             mask_row=mask_row)
    manifest = {
        "version": CACHE_VERSION,
        "image_size": size,
        "count": n,
        "masks": len(with_mask),
        "paths": [str(e.path) for e in entries],
        "mask_paths": [str(e.mask) if e.mask else None for e in entries],
        "rows": row_of,
        "decode_seconds": round(time.perf_counter() - started, 3),
        "resize": "pad to square with the border's median colour, bilinear antialiased resize",
    }
    # The manifest is written last: its presence marks a complete cache.
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _open(directory: Path, fingerprint: str, decoded_now: int) -> DecodedSet:
    meta = np.load(directory / "meta.npz")
    manifest = json.loads((directory / "manifest.json").read_text())
    return DecodedSet(
        images=np.load(directory / "images.npy", mmap_mode="r"),
        masks=np.load(directory / "masks.npy", mmap_mode="r"),
        mask_row=meta["mask_row"],
        labels=meta["labels"],
        directory=directory,
        fingerprint=fingerprint,
        decoded_now=decoded_now,
        row_of={str(k): int(v) for k, v in manifest["rows"].items()},
    )


def decode_samples(
    samples: Sequence[Sample],
    image_size: int,
    *,
    name: str = "images",
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    fingerprint: str | None = None,
) -> DecodedSet:
    """Decode ``samples`` at ``image_size`` once, or open the cache made earlier.

    ``name`` only labels the cache folder (``WBC``, ``CAM16``). ``fingerprint``: the set's
    fingerprint as the caller computed it earlier; a cache of it opens without a stat of every
    file, and files that no longer match it raise ``ValueError``. Raises
    ``wbc.imageio.ImageError`` naming the file if one cannot be decoded; check trees with
    ``scan_tree`` first.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if fingerprint is not None:
        known = root / f"{name}-{image_size}px-{fingerprint[:20]}"
        if (known / "manifest.json").exists():
            return _open(known, fingerprint, 0)
    distinct = _distinct_samples(samples)
    expected, fingerprint = fingerprint, _fingerprint(distinct, image_size)
    if expected is not None and expected != fingerprint:
        raise ValueError(f"the {len(distinct)} {name} files are not the ones checked earlier "
                         f"(fingerprint {fingerprint[:20]}, expected {expected[:20]}): files "
                         "changed (or a node sees other files at the same paths); start again "
                         "on the files as they are now")
    directory = root / f"{name}-{image_size}px-{fingerprint[:20]}"
    if (directory / "manifest.json").exists():
        return _open(directory, fingerprint, 0)
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{directory.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building it: wait, then reuse
        if (directory / "manifest.json").exists():
            return _open(directory, fingerprint, 0)
        entries, row_of = _unique_entries(distinct)
        staging = directory.with_name(f"{directory.name}.building-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _build(staging, entries, row_of, image_size, workers or os.cpu_count() or 1,
                   progress)
            shutil.rmtree(directory, ignore_errors=True)  # a crashed build's leftovers
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return _open(directory, fingerprint, len(entries))
