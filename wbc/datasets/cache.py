"""Decode every image once: a memory-mapped uint8 array per (file set, working resolution).

A study touches each image in thousands of epochs across hundreds of trials; decoding JPEG/BMP
files each time would cost more than training a small model on the CPU and starve a GPU. So the
files are decoded once into

    <cache>/<name>-<size>px-<key>/images.npy    (N, S, S, 3) uint8
                                  masks.npy     (M, S, S) bool, one per row with a mask
                                  meta.npz      labels, mask row per image (-1: none)
                                  manifest.json paths, sizes, checksums; written last

and every trial and process maps the same pages read-only (``np.load(mmap_mode="r")``): the OS
page cache holds one copy however many trials read it.

The fingerprint covers each file's path (relative to the files' common folder), size and
content digest (blake2b), its mask's, its label, the resolution and the resize policy version;
the folder's key adds where the files are, since rows are found by path. Content, not
modification time: a file replaced by other bytes of the same size with its mtime
put back must not keep its old pixels. Not the inode and change time either, though those give
such a replacement away for free: on a cluster each node computes the fingerprint and compares
it with the driver's, and nodes holding their own copies of the data (``rsync -a`` to local
disks) have other inodes and change times for the same bytes. Reading every file for each
fingerprint would cost as much as decoding, so the digests are kept in a side file
(``<cache>/<name>.digests.json``) keyed by path, inode, size, mtime and ctime; a file is read
again only when one of those changed, which no edit can avoid (ctime cannot be set back; a
chmod or a new hard link changes it too, which costs one read of that file, not a rebuild).

A cache checks itself when opened: the manifest, the size of each array file, its ``.npy``
header and shape, and the digests of a sample of its 1 MiB chunks (the first, the last and six
drawn at random) against those recorded when it was built; ``verify="full"`` (``wbc decode``)
checks every chunk. A sample is a trade-off: a full check of a multi-GB array on every open of
every trial would cost seconds each, while a sample costs milliseconds and catches a deleted,
truncated, zeroed or rewritten array at once, and damage to a few chunks at some later open.
A cache that fails is rebuilt, said through ``progress``.

Two processes building the same cache at once are serialised by a file lock, and a build goes
to a temporary folder renamed into place only when complete, so a reader never sees a
half-written cache. A build sweeps the temporary folders of killed builds (its own name's, which
no live process can own while it holds the lock, and any other whose process is gone).

Images that are the same file (hard links, or copies with equal name, content and label, as
``cp -p`` and ``shutil.copy2`` make) share one row, so subset folders cost no extra decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.lib.format import open_memmap

from wbc.datasets import Sample, file_digest
from wbc.datasets.imageio import decode_working, mask_to_working, read_mask
from wbc.fileio import file_lock

__all__ = ["CACHE_VERSION", "DecodedSet", "Verify", "decode_samples", "default_cache_dir"]

# Bump when the decode or resize policy or the cache's files change: old caches no longer match.
CACHE_VERSION = 2
CHUNK_BYTES = 1 << 20  # unit of the payload checksums
SAMPLED_CHUNKS = 8  # checked on every open, the first and last among them
PAYLOAD = ("images.npy", "masks.npy", "meta.npz")

Verify = Literal["sampled", "full"]


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


class _Damaged(Exception):
    """A cache on disk that is not what its build wrote; the message says what is wrong."""


def _distinct_samples(samples: Sequence[Sample]) -> list[Sample]:
    """Samples by path, once each (derived subsets repeat WBC_100's samples)."""
    by_path: dict[Path, Sample] = {}
    for sample in samples:
        seen = by_path.get(sample.path)
        if seen is None or (seen.mask is None and sample.mask is not None):
            by_path[sample.path] = sample
    return list(by_path.values())


def _unique_entries(samples: Sequence[Sample], digests: dict[str, tuple[int, str]]
                    ) -> tuple[list[_Entry], dict[str, int]]:
    """One row per distinct image file: hard links, and copies with equal name, bytes and
    label, share a row."""
    entries: list[_Entry] = []
    row_of: dict[str, int] = {}
    by_inode: dict[tuple[int, int], int] = {}
    by_key: dict[tuple[str, str, int], int] = {}
    for sample in samples:
        stat = sample.path.stat()
        key = (sample.path.name, digests[os.path.abspath(sample.path)][1], sample.label)
        row = by_inode.get((stat.st_dev, stat.st_ino), by_key.get(key))
        if row is None:
            row = len(entries)
            entries.append(_Entry(sample.path, sample.label, sample.mask))
            by_key[key] = row
        elif entries[row].mask is None and sample.mask is not None:
            entries[row] = _Entry(entries[row].path, entries[row].label, sample.mask)
        by_inode[(stat.st_dev, stat.st_ino)] = row
        row_of[str(sample.path)] = row
    return entries, row_of


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _read_store(store: Path) -> dict[str, list[Any]]:
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_store(store: Path, known: dict[str, list[Any]], fresh: dict[str, list[Any]],
                 current: set[str]) -> None:
    """Merge ``fresh`` into the side file; a lost write only costs reading those files again."""
    merged = {**known, **fresh}
    if len(merged) > max(100_000, 4 * len(current)):  # mostly files long gone: forget them
        merged = {p: v for p, v in merged.items() if p in current}
    temporary = store.with_name(f"{store.name}.{os.getpid()}.tmp")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(merged))
        temporary.replace(store)
    except OSError:
        temporary.unlink(missing_ok=True)


def _content_digests(paths: Sequence[str], store: Path, workers: int
                     ) -> dict[str, tuple[int, str]]:
    """Path -> (size, blake2b of its bytes), read only for files whose side-file entry is
    stale."""
    known = _read_store(store)
    found: dict[str, tuple[int, str]] = {}
    todo: dict[tuple[int, int], list[str]] = {}
    stamps: dict[str, list[int]] = {}
    for path in dict.fromkeys(paths):
        stat = os.stat(path)
        stamps[path] = _stamp(stat)
        entry = known.get(path)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == stamps[path]:
            found[path] = (stat.st_size, str(entry[4]))
        else:
            todo.setdefault((stat.st_dev, stat.st_ino), []).append(path)
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(8, workers))) as pool:
            digests = list(pool.map(file_digest, (Path(group[0]) for group in todo.values())))
        fresh: dict[str, list[Any]] = {}
        for group, digest in zip(todo.values(), digests, strict=True):
            for path in group:
                fresh[path] = [*stamps[path], digest]
                found[path] = (stamps[path][1], digest)
        _write_store(store, known, fresh, set(stamps))
    return found


def _base(paths: Sequence[str]) -> str:
    """The deepest folder holding every one of ``paths`` (absolute)."""
    return os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""


def _directory(root: Path, name: str, image_size: int, fingerprint: str,
               samples: Sequence[Sample]) -> Path:
    """The cache folder of a fingerprint for files at this place. The fingerprint says which
    data (the same files moved elsewhere keep it); the folder adds where they are, since rows
    are looked up by path: an identical copy elsewhere has its own cache."""
    where = _base([os.path.abspath(s.path) for s in samples])
    key = hashlib.sha256(f"{fingerprint}\n{where}".encode()).hexdigest()
    return root / f"{name}-{image_size}px-{key[:20]}"


def _fingerprint(samples: Sequence[Sample], size: int, store: Path, workers: int
                 ) -> tuple[str, dict[str, tuple[int, str]]]:
    """The set's fingerprint (see the module docstring), and each file's size and digest."""
    # Absolute (not resolved) paths: resolving every component of every file costs seconds on
    # a large tree, and a symlinked root is the same tree either way for this purpose.
    paths = [os.path.abspath(p) for s in samples for p in (s.path, s.mask) if p is not None]
    digests = _content_digests(paths, store, workers)
    base = _base(paths)
    digest = hashlib.sha256(f"v{CACHE_VERSION} size={size}\n".encode())
    for sample in samples:
        for path in (sample.path, sample.mask):
            if path is None:
                digest.update(b"-\n")
                continue
            absolute = os.path.abspath(path)
            size_bytes, content = digests[absolute]
            digest.update(f"{os.path.relpath(absolute, base)}\t{size_bytes}\t{content}\t".encode())
        digest.update(f"{sample.label}\n".encode())
    return digest.hexdigest(), digests


def _decode_rows(args: tuple[str, int, int, int, list[tuple[str, str | None, int]]]) -> int:
    """Worker: decode rows ``start..stop`` straight into the memory-mapped outputs."""
    directory, size, start, stop, jobs = args
    images = np.load(Path(directory) / "images.npy", mmap_mode="r+")
    masks = np.load(Path(directory) / "masks.npy", mmap_mode="r+")
    for row, (path, mask_path, mask_index) in zip(range(start, stop), jobs, strict=True):
        images[row], shape = decode_working(path, size)
        if mask_path is not None:
            masks[mask_index] = mask_to_working(read_mask(Path(mask_path)), size,
                                                image_shape=shape)
    images.flush()
    masks.flush()
    return stop - start


def _chunk_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _payload_record(path: Path) -> dict[str, Any]:
    """Size and chunk digests of a file as its build left it (read back after the flush)."""
    chunks = []
    with path.open("rb") as handle:
        while data := handle.read(CHUNK_BYTES):
            chunks.append(_chunk_digest(data))
    return {"bytes": path.stat().st_size, "chunks": chunks}


def _decode_all(directory: Path, jobs: list[tuple[str, str | None, int]], size: int,
                workers: int, progress: Callable[[str], None] | None) -> None:
    n = len(jobs)
    chunk = max(32, min(512, n // max(1, workers * 4) + 1))
    tasks = [(str(directory), size, s, min(s + chunk, n), jobs[s:s + chunk])
             for s in range(0, n, chunk)]
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
    started = time.perf_counter()
    _decode_all(directory, jobs, size, workers, progress)
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
        "payload": {name: _payload_record(directory / name) for name in PAYLOAD},
    }
    # The manifest is written last: its presence marks a complete cache.
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _check_payload(directory: Path, payload: dict[str, Any], verify: Verify) -> None:
    """Raise ``_Damaged`` unless each array file has its built size and chunk digests."""
    for name in PAYLOAD:
        record, path = payload[name], directory / name
        try:
            size = path.stat().st_size
        except OSError as err:
            raise _Damaged(f"{name} is missing ({err.strerror or err})") from err
        if size != record["bytes"]:
            raise _Damaged(f"{name} is {size} bytes, {record['bytes']} when built")
        chunks = record["chunks"]
        picks = set(range(len(chunks))) if verify == "full" or len(chunks) <= SAMPLED_CHUNKS \
            else {0, len(chunks) - 1, *random.sample(range(1, len(chunks) - 1),
                                                     SAMPLED_CHUNKS - 2)}
        with path.open("rb") as handle:
            for index in sorted(picks):
                handle.seek(index * CHUNK_BYTES)
                if _chunk_digest(handle.read(CHUNK_BYTES)) != chunks[index]:
                    raise _Damaged(f"{name} differs from what was written at byte "
                                   f"{index * CHUNK_BYTES} (checksum)")


def _load(directory: Path, fingerprint: str, decoded_now: int, verify: Verify) -> DecodedSet:
    """Open a complete cache, or raise ``_Damaged`` saying what is wrong with it."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest.get("version") != CACHE_VERSION or "payload" not in manifest:
            raise _Damaged(f"made by another version ({manifest.get('version')})")
        _check_payload(directory, manifest["payload"], verify)
        size, count = int(manifest["image_size"]), int(manifest["count"])
        images = np.load(directory / "images.npy", mmap_mode="r")
        masks = np.load(directory / "masks.npy", mmap_mode="r")
        with np.load(directory / "meta.npz") as meta:
            mask_row, labels = meta["mask_row"], meta["labels"]
        if images.shape != (count, size, size, 3) or masks.shape != (
                int(manifest["masks"]), size, size) or labels.shape != (count,):
            raise _Damaged(f"arrays of shapes {images.shape}, {masks.shape}, {labels.shape} "
                           f"for {count} images at {size} px")
        rows = {str(k): int(v) for k, v in manifest["rows"].items()}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise _Damaged(f"unreadable ({type(err).__name__}: {err})") from err
    return DecodedSet(images=images, masks=masks, mask_row=mask_row, labels=labels,
                      directory=directory, fingerprint=fingerprint, decoded_now=decoded_now,
                      row_of=rows)


def _existing(directory: Path, fingerprint: str, verify: Verify,
              say: Callable[[str], None]) -> DecodedSet | None:
    """The cache in ``directory`` if it is complete and sound; None (said why) otherwise."""
    if not (directory / "manifest.json").exists():
        return None
    try:
        return _load(directory, fingerprint, 0, verify)
    except _Damaged as err:
        say(f"decode cache {directory} is damaged: {err}; rebuilding it")
        return None


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_STAGING_HOURS = 24.0  # another host's staging folder this old is a build that died


def _staging_name(directory: Path) -> str:
    return f"{directory.name}.building-{socket.gethostname()}-{os.getpid()}"


def _sweep_staging(root: Path, directory: Path) -> None:
    """Remove the temporary folders of killed builds (called holding ``directory``'s lock):
    this name's (no live process builds it while we hold its lock), this host's whose process
    is gone, and another host's (a cache shared by several machines) after a day."""
    host = socket.gethostname()
    for stale in root.glob("*.building-*"):
        name, _, owner = stale.name.rpartition(".building-")
        other, _, pid = owner.rpartition("-")
        if not stale.is_dir():
            continue
        dead = False
        if other == host:
            dead = not _pid_alive(pid)
        else:
            with contextlib.suppress(OSError):
                dead = time.time() - stale.stat().st_mtime > _STAGING_HOURS * 3600
        if name == directory.name or dead:
            shutil.rmtree(stale, ignore_errors=True)


def _build_locked(root: Path, directory: Path, distinct: Sequence[Sample], fingerprint: str,
                  digests: dict[str, tuple[int, str]], image_size: int, workers: int,
                  progress: Callable[[str], None] | None, verify: Verify) -> DecodedSet:
    """Build the cache in ``directory`` unless another process did while we waited (checked
    as thoroughly as the caller asked: a sample could pass the damage a full check found)."""
    # Another process building it: wait, then reuse.
    with file_lock(root / f"{directory.name}.lock"):
        done = _existing(directory, fingerprint, verify, lambda _: None)
        if done is not None:
            return done
        _sweep_staging(root, directory)
        entries, row_of = _unique_entries(distinct, digests)
        staging = directory.with_name(_staging_name(directory))
        staging.mkdir(parents=True)
        try:
            _build(staging, entries, row_of, image_size, workers, progress)
            shutil.rmtree(directory, ignore_errors=True)  # a crashed or damaged build
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return _load(directory, fingerprint, len(entries), "sampled")


def decode_samples(
    samples: Sequence[Sample],
    image_size: int,
    *,
    name: str = "images",
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    fingerprint: str | None = None,
    verify: Verify = "sampled",
) -> DecodedSet:
    """Decode ``samples`` at ``image_size`` once, or open the cache made earlier.

    ``name`` only labels the cache folder (``WBC``, ``CAM16``). ``fingerprint``: the set's
    fingerprint as the caller computed it earlier; a cache of it opens without a stat of every
    file, and files that no longer match it raise ``ValueError``. ``verify``: how much of an
    existing cache to check against its checksums (see the module docstring); a damaged cache
    is rebuilt. Raises ``wbc.datasets.imageio.ImageError`` naming the file if one cannot be decoded;
    check trees with ``scan_tree`` first.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    damaged: list[str] = []  # what a check found: the rebuild's own re-check must not miss it

    def say(message: str) -> None:
        damaged.append(message)
        if progress is not None:
            progress(message)

    distinct = _distinct_samples(samples)
    known = None
    if fingerprint is not None:
        known = _directory(root, name, image_size, fingerprint, distinct)
        if (found := _existing(known, fingerprint, verify, say)) is not None:
            return found
    workers = workers or os.cpu_count() or 1
    expected, (fingerprint, digests) = fingerprint, _fingerprint(
        distinct, image_size, root / f"{name}.digests.json", workers)
    if expected is not None and expected != fingerprint:
        raise ValueError(f"the {len(distinct)} {name} files are not the ones checked earlier "
                         f"(fingerprint {fingerprint[:20]}, expected {expected[:20]}): files "
                         "changed (or a node sees other files at the same paths); start again "
                         "on the files as they are now")
    directory = _directory(root, name, image_size, fingerprint, distinct)
    if directory != known and (found := _existing(directory, fingerprint, verify, say)) is not None:
        return found
    return _build_locked(root, directory, distinct, fingerprint, digests, image_size, workers,
                         progress, "full" if damaged else verify)
