"""A study's data before Ray starts: the tree (made synthetic when none is given), checked,
and decoded once into the shared cache so that trials only map it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from wbc.config import TrainConfig
from wbc.datasets import (
    CAM16_LAYOUT,
    PRCC_LAYOUT,
    TRUTH_DIR,
    Cam16Splits,
    DatasetError,
    Sample,
    Tree,
    class_counts,
    histology_origin,
    with_histology,
)
from wbc.datasets.cache import decode_samples, default_cache_dir
from wbc.datasets.layout import WBC_CLASSES
from wbc.fileio import atomic_write_text, file_lock
from wbc.strategies import get_strategy, strategy_names
from wbc.training.inputs import plan_cam16, plan_wbc, wbc_decode_set

__all__ = ["StudyError", "check_strategies", "check_tree", "given_histology", "histology_record",
           "synthetic_tree", "warm_caches", "wbc100_counts"]


class StudyError(Exception):
    """A problem the user can fix (bad data, an occupied results folder); the message says how."""


def synthetic_tree(scale: float, image_size: int, *, seed: int = 0,
                   val_scale: float | None = None, tissue_scale: float | None = None,
                   test_scale: float | None = None, cache_dir: Path | str | None = None,
                   say: Callable[[str], None] | None = None) -> Path:
    """The synthetic tree for (scales, resolution, seed, generator version), made once per
    cache and reused; two processes asking at once make it once. ``val_scale`` and
    ``tissue_scale`` (WBC_100/val; CAM16 and pRCC) default to ``scale``; ``test_scale`` adds a
    WBC_100/test split (None: none)."""
    from wbc.synth import GENERATOR_VERSION, synthesize

    # A scale equal to ``scale`` is the default: one tree, one cache key.
    val_scale = None if val_scale == scale else val_scale
    tissue_scale = None if tissue_scale == scale else tissue_scale
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    size = max(64, image_size)  # drawn at 64 px at least: small cells need the detail
    scales = f"scale{scale:g}" + (f"-val{val_scale:g}" if val_scale is not None else "") + (
        f"-tissue{tissue_scale:g}" if tissue_scale is not None else "") + (
        f"-test{test_scale:g}" if test_scale is not None else "")
    root = base / "synth" / f"v{GENERATOR_VERSION}-{scales}-{size}px-seed{seed}"
    with file_lock(root.parent / f"{root.name}.lock"):
        if not (root / "synth.json").exists():
            if say is not None:
                say(f"making a synthetic tree ({scales}, {size} px, seed {seed}) in {root}; "
                    "it is cached for later runs")
            synthesize(root, scale=scale, val_scale=val_scale, tissue_scale=tissue_scale,
                       test_scale=test_scale, image_size=size, seed=seed, overwrite=True)
        elif not (root / TRUTH_DIR).is_dir():
            _add_truth(root, say, scale=scale, val_scale=val_scale, tissue_scale=tissue_scale,
                       test_scale=test_scale, image_size=size, seed=seed)
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


def _as_predicted(tree: Tree) -> Tree:
    """``tree`` as a predicted-mask strategy's trials will see it: a mask for every WBC image,
    the study's segmentation predicting those it lacks (learnt from the given masks, or
    self-trained from classical ones on a tree with none); stand-in paths, for checks only."""
    source = Path("masks")
    return tree.with_masks({s.path: source / "predicted.png" for s in tree.wbc.samples()
                            if s.mask is None}, source)


def check_tree(tree: Tree, cells: tuple[tuple[str, str], ...], base_config: TrainConfig
               ) -> None:
    """Refuse a tree that cannot run every cell, naming the problem and the fix."""
    if not tree.usable:
        problems = "\n".join(f"  {p}" for p in tree.errors[:10])
        more = f"\n  ... and {len(tree.errors) - 10} more" if len(tree.errors) > 10 else ""
        raise StudyError(f"{tree.root}: the tree is not usable:\n{problems}{more}\nrun "
                         f"`wbc check {tree.root}` for the full list; fix or remove the files, "
                         "or set exclude_bad=true to leave them out")
    predicted = _as_predicted(tree)
    for subset, strategy in cells:
        checked = predicted if get_strategy(strategy).mask_source == "predicted" else tree
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


def given_histology(tree: Tree, *, cam16: str | Path | None, prcc: str | Path | None,
                    exclude_bad: bool = False, workers: int | None = None,
                    say: Callable[[str], None] | None = None) -> Tree:
    """``tree`` with its CAM16 and pRCC taken from the folders given, if any
    (``wbc.datasets.with_histology``: ``DatasetError`` for a folder that is not the layout),
    saying where each comes from and when a given folder replaces the tree's own."""
    if cam16 is None and prcc is None:
        return tree
    had = {"CAM16": bool(tree.cam16.train), "pRCC": bool(tree.prcc)}
    tree = with_histology(tree, cam16=cam16, prcc=prcc, exclude_bad=exclude_bad,
                          workers=workers)
    for dataset, given in (("CAM16", cam16), ("pRCC", prcc)):
        origin = histology_origin(tree, dataset)
        if given is None or not origin or say is None:
            continue
        own = (f"; the tree's own {tree.root / dataset} is not used (the given folder wins)"
               if had[dataset] else "")
        splits = " / ".join(f"{sum(n.values())} {split}" for split, n in origin["counts"].items()
                            if isinstance(n, dict))
        say(f"{dataset}: {origin['images']} {origin['kind']} images"
            + (f" ({splits})" if splits else "") + f" from {origin['root']}{own}")
    return tree


def histology_record(tree: Tree, *, synthetic_tree: bool) -> dict[str, Any]:
    """What ``study.json`` records of the tree's CAM16 and pRCC (``data.histology``): for each
    the tree has, where it came from ("folder", given apart from the tree; "tree"; "synthetic
    tree", the one the study made), its folder, "synthetic" or "real", and its image counts."""
    record = {}
    for key, dataset in (("cam16", "CAM16"), ("prcc", "pRCC")):
        origin = histology_origin(tree, dataset)
        if origin:
            if synthetic_tree and origin["source"] == "tree":
                origin["source"] = "synthetic tree"
            record[key] = origin
    return record


def _lacks(tree: Tree, name: str, base_config: TrainConfig) -> list[str]:
    """What ``tree`` lacks for strategy ``name``: "CAM16", "pRCC", "masks" or another reason."""
    strategy = get_strategy(name)
    lacks = []
    if strategy.pretrain == "cam16" and not (tree.cam16.train and tree.cam16.val):
        lacks.append("CAM16")
    if strategy.ssl == "prcc" and not tree.prcc:
        lacks.append("pRCC")
    # The rest is plan_wbc's to say (it knows what a run needs), asked as if the histology were
    # there: the histology is named above, and one message names everything missing.
    stand_in = (Sample(tree.root, 0),)
    checked = replace(tree, cam16=Cam16Splits(stand_in, stand_in, found=("train", "val")),
                      prcc=stand_in)
    if strategy.mask_source == "predicted":  # checked as check_tree does
        checked = _as_predicted(checked)
    try:
        plan_wbc(checked, base_config.replace(subset="WBC_100", strategy=name))
    except DatasetError as err:
        lacks.append("masks" if strategy.mask_augment else str(err))
    return lacks


def check_strategies(tree: Tree, strategies: Sequence[str], base_config: TrainConfig) -> None:
    """Refuse, in one message, a tree that lacks what some of ``strategies`` need (CAM16, pRCC,
    masks): what each lacks, the strategies this tree can run, and the commands that run the
    study (``--cam16``/``--prcc`` FOLDER, or ``--set strategies=[...]``). A tree with bad files
    is left to ``check_tree``, which names them."""
    if not tree.usable:
        return
    lacking = {name: lacks for name in strategy_names()
               if (lacks := _lacks(tree, name, base_config))}
    asked = [s for s in strategies if s in lacking]
    if not asked:
        return
    runnable = [s for s in strategy_names() if s not in lacking]
    others = [s for s in lacking if s not in asked]
    root = tree.root
    can = f"This tree can run: {', '.join(runnable) or 'none of the strategies'}"
    if others:
        can += "; the others need: " + "; ".join(f"{s} {' and '.join(lacking[s])}"
                                                 for s in others)
    lines = [f"{root} lacks what {len(asked)} of this study's strategies need:",
             *(f"  {s}: needs {' and '.join(lacking[s])}" for s in asked), can + "."]
    wanted = [d for d in ("CAM16", "pRCC") if any(d in lacking[s] for s in asked)]
    if wanted:
        options = " ".join(f"--{d.lower()} /path/to/folder-with-{d}" for d in wanted)
        layouts = "; ".join({"CAM16": CAM16_LAYOUT, "pRCC": PRCC_LAYOUT}[d] for d in wanted)
        lines += [f"Give the histology, a folder that holds it or is its layout ({layouts}):",
                  f"  study run --data {root} {options}"]
    if any("masks" in lacking[s] for s in asked):
        lines.append(f"Masks: WBC_100/train/mask/<Class>/<image> under {root}, with an image's "
                     "file stem (`wbc import SRC ROOT --masks DIR`).")
    keep = [s for s in strategies if s not in lacking] or runnable[:1]
    if keep:
        lines += ["Or run only what this tree can:",
                  f"  study run --data {root} --set 'strategies=[{','.join(keep)}]'"]
    lines.append("(with your other options: --results, --preset, --set, ...)")
    raise StudyError("\n".join(lines))
