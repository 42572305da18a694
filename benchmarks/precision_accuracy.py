"""Does bf16 autocast cost accuracy? The same trials in fp32 and in bf16, same seeds, same run.

bf16 autocast is the default on a GPU (``precision = "auto"``). This trains ``--seeds`` seeds of
one configuration in each precision with ``wbc.train.fit`` and prints, per precision, test
accuracy and macro-F1 (mean and standard deviation over seeds), the mean paired difference
bf16 - fp32 with its 95% t-interval, and the images per second. On a CPU without bf16 hardware
bf16 is far slower; keep the image small there.

    python benchmarks/precision_accuracy.py --device cuda --image-size 224 --seeds 3
    python benchmarks/precision_accuracy.py --image-size 32 --epochs 3 --seeds 2   # CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from wbc.config import TrainConfig
from wbc.data import load_plan, plan_wbc
from wbc.datasets import scan_tree
from wbc.hardware import describe, pick_device
from wbc.metrics import mean_interval
from wbc.model import build_resnet18
from wbc.seeding import seed_everything
from wbc.synth import synthesize
from wbc.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--subset", default="WBC_10")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epoch-images", type=int, default=4096)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--root", type=Path, default=None, help="an existing tree")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(pick_device(args.device))
    print(f"{describe()}; {args.subset} at {args.image_size} px, {args.epochs} epochs of "
          f"{args.epoch_images} images, batch {args.batch_size}, {args.seeds} seeds", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "tree"
            synthesize(root, scale=args.scale, image_size=256, seed=0)
        tree = scan_tree(root, verify=False)
        for seed in range(args.seeds):
            for precision in ("fp32", "bf16"):
                config = TrainConfig().replace(
                    subset=args.subset, image_size=args.image_size, epochs=args.epochs,
                    batch_size=args.batch_size, min_epoch_images=args.epoch_images,
                    precision=precision, seed=seed, lr=0.05, bn_recalibrate=1024)
                seed_everything(seed)
                data = load_plan(plan_wbc(tree, config), cache_dir=Path(tmp) / "cache").to(device)
                model = build_resnet18(5).to(device)
                started = time.perf_counter()
                result = fit(model, config, data.train, data.selection, data.reporting)
                seconds = time.perf_counter() - started
                loop_ips = statistics.fmean(r["images_per_second"] for r in result.history)
                row = {"seed": seed, "precision": precision,
                       "test_accuracy": result.reporting["accuracy"],
                       "test_macro_f1": result.reporting["macro_f1"],
                       "best_epoch": result.best_epoch, "seconds": seconds,
                       "train_images_per_second": loop_ips}
                rows.append(row)
                print(f"seed {seed} {precision}: test accuracy {row['test_accuracy']:.3f}, "
                      f"macro-F1 {row['test_macro_f1']:.3f}, {seconds:.1f} s, "
                      f"{loop_ips:.0f} img/s in training", flush=True)
    summary: dict[str, Any] = {}
    for metric in ("test_accuracy", "test_macro_f1"):
        by = {p: [r[metric] for r in rows if r["precision"] == p] for p in ("fp32", "bf16")}
        diffs = [b - f for f, b in zip(by["fp32"], by["bf16"], strict=True)]
        mean, low, high = mean_interval(diffs)
        summary[metric] = {"fp32": by["fp32"], "bf16": by["bf16"],
                           "bf16_minus_fp32": [mean, low, high]}
        print(f"{metric}: fp32 {statistics.fmean(by['fp32']):.3f}, bf16 "
              f"{statistics.fmean(by['bf16']):.3f}; bf16 - fp32 = {mean:+.3f} "
              f"[{low:+.3f}, {high:+.3f}] (95% t-interval over {len(diffs)} paired seeds)")
    speed = {p: statistics.fmean(r["train_images_per_second"] for r in rows
                                 if r["precision"] == p) for p in ("fp32", "bf16")}
    print(f"training images/s: fp32 {speed['fp32']:.0f}, bf16 {speed['bf16']:.0f} "
          f"(x{speed['bf16'] / speed['fp32']:.2f})")
    if args.json is not None:
        args.json.write_text(json.dumps({"hardware": describe(), "args": vars(args),
                                         "rows": rows, "summary": summary, "speed": speed},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
