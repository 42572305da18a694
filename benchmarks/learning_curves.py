"""Learning curves on a tree: selection macro-F1 per epoch at several resolutions and budgets.

What a preset for a real tree is chosen from (docs/study-run.md, "The real preset"): for each resolution, label
budget and seed, one ``scratch`` run with the quick preset's shared settings (AdamW, batch 64,
an epoch of at least 512 images, warm-up half an epoch) at a fixed learning rate, through
``wbc.training.run.train_run``. It prints per run the selection macro-F1 after each epoch, the
epoch's seconds (training and scoring), and the best epoch's reporting macro-F1; then per resolution
and budget the mean curve over seeds, so that the epochs after which the curve stops rising and
the cost of each epoch can be read off together. ``--json`` writes every run's history with
the provenance.

    wbc import SRC data/pbc
    python benchmarks/learning_curves.py --root data/pbc --sizes 32 48 64 --epochs 8 --seeds 2
"""

from __future__ import annotations

import statistics
from typing import Any

import harness


def main() -> None:
    parser = harness.parser(__doc__)
    harness.add_run_arguments(parser, image_size=32, epochs=8, batch_size=64,
                              epoch_images=512, seeds=2, lr=2e-3, bn_recalibrate=128)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64],
                        help="working resolutions")
    parser.add_argument("--subsets", nargs="+", default=["WBC_100", "WBC_10", "WBC_1"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    device = harness.device(args)
    harness.header(f"sizes {args.sizes}, {args.subsets}, {args.epochs} epochs, {args.seeds} "
                   f"seeds, lr {args.lr}, batch {args.batch_size}", device=device)
    runs: list[dict[str, Any]] = []
    with harness.workspace(args.root, scale=args.scale, image_size=args.source_size) as work:
        for size in args.sizes:
            for subset in args.subsets:
                curves, seconds, reporting = [], [], []
                for seed in range(1, args.seeds + 1):
                    config = harness.run_config(args).replace(
                        image_size=size, subset=subset, strategy="scratch", seed=seed,
                        optimizer="adamw", warmup_epochs=0.5, weight_decay=5e-4)
                    result = harness.train(work, config, device=device, threads=args.threads)
                    history = result.fit.history
                    curve = [float(row["val_macro_f1"]) for row in history]
                    per_epoch = statistics.fmean(float(row["loop_seconds"]) for row in history)
                    curves.append(curve)
                    seconds.append(per_epoch)
                    reporting.append(float(result.fit.reporting["macro_f1"]))
                    runs.append({"image_size": size, "subset": subset, "seed": seed,
                                 "val_macro_f1": curve, "epoch_seconds": per_epoch,
                                 "best_epoch": result.fit.best_epoch,
                                 "train_images": result.fit.train_images,
                                 "test_macro_f1": reporting[-1]})
                    print(f"{size:3d} px {subset:8s} seed {seed}: selection macro-F1 by epoch "
                          f"{' '.join(f'{v:.2f}' for v in curve)}; best epoch "
                          f"{result.fit.best_epoch}, reporting macro-F1 {reporting[-1]:.3f}; "
                          f"{per_epoch:.1f} s an epoch", flush=True)
                mean_curve = [statistics.fmean(c[i] for c in curves)
                              for i in range(len(curves[0]))]
                print(f"{size:3d} px {subset:8s} mean over {len(curves)} seeds: "
                      f"{' '.join(f'{v:.2f}' for v in mean_curve)}; reporting macro-F1 "
                      f"{statistics.fmean(reporting):.3f}; {statistics.fmean(seconds):.1f} s "
                      "an epoch", flush=True)
                harness.write_json(args.json, args, {"runs": runs}, device=device)


if __name__ == "__main__":
    main()
