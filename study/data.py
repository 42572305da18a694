"""A study's data before Ray starts: the tree (made synthetic when none is given), checked,
and decoded once into the shared cache so that trials only map it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wbc.cache import decode_samples, default_cache_dir
from wbc.config import TrainConfig
from wbc.data import plan_cam16, plan_wbc, wbc_decode_set
from wbc.datasets import TRUTH_DIR, DatasetError, Tree, class_counts
from wbc.fileio import atomic_write_text, file_lock
from wbc.layout import WBC_CLASSES
from wbc.strategies import get_strategy

__all__ = ["StudyError", "check_tree", "synthetic_tree", "warm_caches", "wbc100_counts"]


class StudyError(Exception):
    """A problem the user can fix (bad data, an occupied results folder); the message says how."""


def synthetic_tree(scale: float, image_size: int, *, seed: int = 0,
                   val_scale: float | None = None, tissue_scale: float | None = None,
                   cache_dir: Path | str | None = None,
                   say: Callable[[str], None] | None = None) -> Path:
    """The synthetic tree for (scales, resolution, seed, generator version), made once per
    cache and reused; two processes asking at once make it once. ``val_scale`` and
    ``tissue_scale`` (WBC_100/val; CAM16 and pRCC) default to ``scale``."""
    from wbc.synth import GENERATOR_VERSION, synthesize

    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    size = max(64, image_size)  # drawn at 64 px at least: small cells need the detail
    scales = f"scale{scale:g}" + (f"-val{val_scale:g}" if val_scale is not None else "") + (
        f"-tissue{tissue_scale:g}" if tissue_scale is not None else "")
    root = base / "synth" / f"v{GENERATOR_VERSION}-{scales}-{size}px-seed{seed}"
    with file_lock(root.parent / f"{root.name}.lock"):
        if not (root / "synth.json").exists():
            if say is not None:
                say(f"making a synthetic tree ({scales}, {size} px, seed {seed}) in {root}; "
                    "it is cached for later runs")
            synthesize(root, scale=scale, val_scale=val_scale, tissue_scale=tissue_scale,
                       image_size=size, seed=seed, overwrite=True)
        elif not (root / TRUTH_DIR).is_dir():
            _add_truth(root, say, scale=scale, val_scale=val_scale, tissue_scale=tissue_scale,
                       image_size=size, seed=seed)
    return root


def _add_truth(root: Path, say: Callable[[str], None] | None, **params: Any) -> None:
    """Give a tree cached before ``wbc synth`` kept true masks its ``truth/`` folder: the same
    generator draws the same tree again aside, and its truth moves in if its masks are the
    cached tree's byte for byte (else the cached tree is left as it is)."""
    import json
    import shutil

    from wbc.synth import synthesize

    if say is not None:
        say(f"adding the true masks to the cached synthetic tree {root} (made before they "
            "were kept)")
    staging = root.parent / f"{root.name}.truth-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        synthesize(staging, overwrite=True, **params)
        ours, theirs = sorted((root / "WBC_100").rglob("*.png")), sorted(
            (staging / "WBC_100").rglob("*.png"))
        if [p.relative_to(root) for p in ours] != [p.relative_to(staging) for p in theirs] or any(
                a.read_bytes() != b.read_bytes() for a, b in zip(ours, theirs, strict=True)):
            return  # another generator drew the cached tree: its truth is unknown
        (staging / TRUTH_DIR).rename(root / TRUTH_DIR)
        record = json.loads((root / "synth.json").read_text())
        record["truth"] = json.loads((staging / "synth.json").read_text()).get("truth")
        atomic_write_text(root / "synth.json", json.dumps(record, indent=1))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_tree(tree: Tree, cells: tuple[tuple[str, str], ...], base_config: TrainConfig
               ) -> None:
    """Refuse a tree that cannot run every cell, naming the problem and the fix."""
    if not tree.usable:
        problems = "\n".join(f"  {p}" for p in tree.errors[:10])
        more = f"\n  ... and {len(tree.errors) - 10} more" if len(tree.errors) > 10 else ""
        raise StudyError(f"{tree.root}: the tree is not usable:\n{problems}{more}\nrun "
                         f"`wbc check {tree.root}` for the full list; fix or remove the files, "
                         "or set exclude_bad=true to leave them out")
    for subset, strategy in cells:
        # A predicted-mask strategy is checked as it will run: on the tree with the masks the
        # study predicts before its trials (none yet, so every given-mask check still applies).
        checked = (tree.with_masks({}, Path("masks")) if get_strategy(strategy).mask_source
                   == "predicted" else tree)
        try:
            plan_wbc(checked, base_config.replace(subset=subset, strategy=strategy))
        except DatasetError as err:
            raise StudyError(f"cell {subset} x {strategy}: {err}") from err


def warm_caches(tree: Tree, image_size: int, *, cam16: bool, cache_dir: str | None) -> str:
    """Decode every WBC image (and CAM16's when ``cam16``) once; the WBC fingerprint."""
    decoded = decode_samples(list(wbc_decode_set(tree)), image_size, name="WBC",
                             cache_dir=cache_dir)
    if cam16:
        plan = plan_cam16(tree, image_size=image_size)
        decode_samples([*plan.train, *plan.val, *plan.test], image_size, name="CAM16",
                       cache_dir=cache_dir)
    return decoded.fingerprint


def wbc100_counts(tree: Tree) -> dict[str, dict[str, int]]:
    """Images per class of WBC_100's train, val and test splits."""
    splits = {"train": tree.wbc.subset(100), "val": tree.wbc.val, "test": tree.wbc.test}
    return {split: dict(zip(WBC_CLASSES, map(int, class_counts(samples, len(WBC_CLASSES))[0]),
                            strict=True))
            for split, samples in splits.items()}
