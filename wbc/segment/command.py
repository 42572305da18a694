"""``wbc segment ROOT --out OUT``: a predicted mask for every WBC image without one, with the
segmenter's and the baselines' held-out scores, or self-trained from confident classical masks
where the tree has none (``wbc.segment.pipeline``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wbc.cli_options import UserError, add_config_options, config_from_options, examples
from wbc.config import SegmentSettings
from wbc.datasets import scan_tree
from wbc.segment.pipeline import (
    METHOD_NAMES,
    PATH_GIVEN,
    PATH_SELF,
    check_out,
    segment_tree,
    write_masks,
)
from wbc.training.hardware import pick_device

__all__ = ["add_segment_command", "run"]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _score_lines(title: str, scores: dict[str, Any]) -> list[str]:
    lines = [title]
    for method, name in METHOD_NAMES.items():
        if method in scores:
            s = scores[method]
            lines.append(f"  {name:<34} {s['iou']:6.3f} {s['dice']:6.3f}   "
                         f"(median IoU {s['iou_median']:.3f}, worst 10% below {s['iou_p10']:.3f})")
    return lines


def _path_lines(record: dict[str, Any]) -> list[str]:
    """What the U-Net learnt from: the given masks, or the confident classical ones."""
    pseudo = record.get("pseudo_labels")
    if record.get("path", PATH_GIVEN) == PATH_GIVEN or not pseudo:
        return [f"learnt from the {PATH_GIVEN}"]
    per_class = ", ".join(f"{name} {kept}/{of}" for name, (kept, of) in
                          pseudo["per_class"].items())
    return [f"{PATH_SELF}: no image has a mask, so the classical segmenter outlined all "
            f"{pseudo['candidates']} and the U-Net trained on the {pseudo['kept']} confident "
            f"outlines (one compact cell near the centre; {per_class})"]


def run(args: argparse.Namespace) -> int:
    """``wbc segment``: check the tree, segment it (cached), write the masks, print the scores."""
    try:
        settings = config_from_options(args, SegmentSettings)
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from err
    check_out(args.out, args.root)  # before minutes of training
    if args.encoder_weights is not None and not args.encoder_weights.is_file():
        raise UserError(f"--encoder-weights {args.encoder_weights}: no such file")
    progress = (lambda message: None) if args.quiet or args.json else say
    tree = scan_tree(args.root, exclude_bad=args.exclude_bad, workers=args.workers,
                     progress=progress)
    if not tree.usable:
        for problem in tree.errors:
            say(str(problem))
        raise UserError(f"{args.root}: not usable ({len(tree.errors)} error(s) above); fix them "
                        "or add --exclude-bad")
    segmentation = segment_tree(tree, settings, cache_dir=args.cache_dir,
                                encoder_weights=args.encoder_weights,
                                device=pick_device(args.device),
                                workers=args.workers, say=progress)
    summary = write_masks(segmentation, tree.root, args.out)
    record = segmentation.record
    if args.json:
        print(json.dumps({**summary, "out": str(args.out), "cached": record["cached"]},
                         indent=2))
        return 0
    lines = [f"{record['masked_images']} WBC images with a mask, {record['predicted_images']} "
             f"without: {summary['written']} mask files written to {args.out} (given masks "
             f"untouched){' (model cached)' if record['cached'] else ''}",
             *_path_lines(record)]
    heldout = record.get("heldout")
    if heldout or record.get("truth"):
        lines.append(f"{'whole-cell scores, mean over images':<36} {'IoU':>6} {'Dice':>6}")
    if heldout:
        lines += _score_lines(f"held-out masked images ({heldout['folds']}-fold, "
                              f"n={heldout['model']['n']}):", heldout)
    elif record.get("path", PATH_GIVEN) == PATH_GIVEN:
        lines.append("held-out scores: none (fewer than 2 masked images)")
    truth = record.get("truth")
    if truth:
        withheld = record.get("withheld_masks", 0)
        what = (f"the {withheld} withheld masks and any true masks" if withheld
                else "predicted images against their true masks")
        lines += _score_lines(f"{what} (n={truth['model']['n']}):", truth)
    elif record.get("path") == PATH_SELF:
        lines.append("no true masks in this tree: nothing to score against (look at the masks)")
    seconds = record["seconds"]
    spent = (f"{seconds['scoring']:.0f} s scoring" if "pseudo_labels" not in seconds
             else f"{seconds['pseudo_labels']:.0f} s the classical masks")
    lines.append(f"{seconds['total']:.0f} s ({spent}, {seconds['final_training']:.0f} s the "
                 f"final model) on {record['device']}; key {record['key']}")
    print("\n".join(lines))
    return 0


def add_segment_command(sub: Any, common: argparse.ArgumentParser,
                         limits: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "segment", parents=[common, limits],
        help="predict a cell mask for every WBC image that has none (a U-Net learnt from the "
             "masked ones, scored on held-out masks beside a classical baseline; with no mask "
             "in the tree, self-trained from the classical baseline's confident masks)",
        epilog=examples("wbc segment data --out data-masks",
                        "wbc segment data --out data-masks --steps 600 --json",
                        "wbc segment data --out data-masks --encoder-weights "
                        "results/quick/pretrain/cam16-KEY/model.pt"))
    p.add_argument("root", type=Path, help="dataset root; only read")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the masks: OUT/<image path below ROOT>.png, 0 or 255 at "
                        "the image's size; outside ROOT, new, empty or written by wbc segment")
    p.add_argument("--json", action="store_true", help="print the scores and counts as JSON")
    p.add_argument("--encoder-weights", type=Path, default=None,
                   help="start the encoder from this local ResNet-18 state dict (a study's "
                        "CAM16 or SimCLR model.pt, torchvision's ImageNet file; default: random)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (a GPU when there is one), cpu, cuda, cuda:1 "
                        "(default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache folder for the decoded images and the predictions (default: "
                        "$WBC_CACHE_DIR or ~/.cache/wbc)")
    p.add_argument("--exclude-bad", action="store_true", help="leave out bad files")
    add_config_options(p, SegmentSettings)
    p.set_defaults(run=run)
