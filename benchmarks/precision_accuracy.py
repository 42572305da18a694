"""Does bf16 autocast cost accuracy? The same trials in fp32 and in bf16, same seeds, same run.

bf16 autocast is the default on a GPU (``precision = "auto"``). This trains ``--seeds`` seeds of
one configuration (``--subset``, from random init) in each precision, each run through
``wbc.training.run.train_run``, and prints per run its test accuracy, macro-F1, training seconds and
images per second, then per precision test accuracy and macro-F1 (means over seeds), the mean
paired difference bf16 - fp32 with its 95% t-interval, and the training images per second. On a
CPU without bf16 hardware bf16 is far slower; keep the image small there. ``--json`` writes the
rows and the summary with their provenance.

    python benchmarks/precision_accuracy.py --device cuda --image-size 224 --seeds 3
    python benchmarks/precision_accuracy.py --image-size 32 --epochs 3 --seeds 2   # CPU
"""

from __future__ import annotations

import statistics
from typing import Any

import harness

from wbc.metrics import mean_interval


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--subset", default="WBC_10", help="the runs' label budget")
    harness.add_run_arguments(parser, image_size=224, epochs=8, batch_size=256,
                              epoch_images=4096, seeds=3)
    args = parser.parse_args()
    device = harness.device(args)
    harness.header(f"{args.subset} at {args.image_size} px, {args.epochs} epochs of "
                   f"{args.epoch_images} images, batch {args.batch_size}, {args.seeds} seeds",
                   device=device)
    rows: list[dict[str, Any]] = []
    with harness.workspace(args.root, scale=args.scale, image_size=args.source_size) as work:
        for seed in range(args.seeds):
            for precision in ("fp32", "bf16"):
                config = harness.run_config(args, subset=args.subset, precision=precision,
                                            seed=seed)
                fit = harness.train(work, config, device=device).fit
                loop_ips = statistics.fmean(r["images_per_second"] for r in fit.history)
                row = {"seed": seed, "precision": precision,
                       "test_accuracy": fit.reporting["accuracy"],
                       "test_macro_f1": fit.reporting["macro_f1"],
                       "best_epoch": fit.best_epoch, "seconds": fit.wall_seconds,
                       "train_images_per_second": loop_ips}
                rows.append(row)
                print(f"seed {seed} {precision}: test accuracy {row['test_accuracy']:.3f}, "
                      f"macro-F1 {row['test_macro_f1']:.3f}, {fit.wall_seconds:.1f} s, "
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
    harness.write_json(args.json, args, {"rows": rows, "summary": summary, "speed": speed},
                       device=device)


if __name__ == "__main__":
    main()
