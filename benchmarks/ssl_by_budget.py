"""Does pRCC self-supervised pretraining help, and at which label budget? One fixed recipe.

Not a study (no search): every strategy trains with the same fixed settings, over ``--seeds``
seeds, at each label budget, so that the only difference is where the backbone starts:

- ``scratch``: random init;
- ``pretrain``: the CAM16 tumour/normal classifier (supervised, from random init);
- ``ssl``: SimCLR on the unlabelled pRCC images (``wbc.training.ssl``);
- ``ssl_pretrain``: the CAM16 classifier trained from the SimCLR backbone.

The pretraining runs once each: SimCLR through ``wbc.training.run.ssl_run``, the CAM16 classifiers
and every WBC run through ``wbc.training.run.train_run`` (a pretrained strategy starts from the
saved state dict of its pretraining). It prints the SimCLR run's loss and its CAM16 probe accuracies
(k-NN and linear, against the random-init backbone), then per budget and strategy the test accuracy
and macro-F1 (mean and 95% t-interval over seeds), then the paired differences against
``scratch`` (and ``ssl_pretrain`` against ``pretrain``) on the same seeds. The mask-based
augmentation is off throughout: this isolates the starting point. The study (``study run``)
searches each cell instead; this is the quick, controlled look. ``--json`` writes the
pretraining records and the rows with their provenance, after each budget.

    python benchmarks/ssl_by_budget.py --device cuda --image-size 128 --scale 0.25 --seeds 5
    python benchmarks/ssl_by_budget.py --image-size 32 --scale 0.03 --seeds 2 --epochs 2 \\
        --ssl-epochs 3 --pretrain-epochs 1 --epoch-images 64 --ssl-epoch-images 64  # CPU check
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import harness
import torch

from wbc.config import SSLConfig, TrainConfig
from wbc.metrics import mean_interval
from wbc.training.inputs import plan_cam16
from wbc.training.pretrain import pretrain_config
from wbc.training.run import ssl_run

STRATEGIES = ("scratch", "pretrain", "ssl", "ssl_pretrain")
SUBSETS = ("WBC_100", "WBC_50", "WBC_10", "WBC_1")


def pretrain_all(work: harness.Workspace, args: argparse.Namespace, base: TrainConfig,
                 device: torch.device) -> tuple[dict[str, Path], dict[str, Any]]:
    """SimCLR on pRCC, CAM16 from random init, CAM16 from the SimCLR backbone: the weights
    files each pretrained strategy starts from, and what each pretraining scored."""
    tree = work.tree
    record: dict[str, Any] = {}
    cam16 = plan_cam16(tree, image_size=args.image_size)
    config = SSLConfig(image_size=args.image_size, epochs=args.ssl_epochs,
                       batch_size=args.ssl_batch_size, lr=args.ssl_lr,
                       warmup_epochs=min(10.0, args.ssl_epochs / 10), seed=0)
    result = ssl_run(tree.prcc, config, probe_plan=cam16,
                     min_epoch_images=args.ssl_epoch_images, device=device,
                     cache_dir=work.cache)
    record["ssl"] = {**{k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
                     "first_loss": result.history[0]["ssl_loss"],
                     "seconds": result.wall_seconds, "prcc_images": len(tree.prcc)}
    m = record["ssl"]
    per_epoch = max(len(tree.prcc), args.ssl_epoch_images)  # pRCC tiled up to the minimum
    print(f"SimCLR on {len(tree.prcc)} pRCC images ({per_epoch} an epoch), "
          f"{args.ssl_epochs} epochs in {result.wall_seconds:.0f} s: loss {m['first_loss']:.3f} "
          f"-> {m['ssl_loss']:.3f}; CAM16 probe k-NN {m.get('knn_accuracy', float('nan')):.3f} "
          f"(random init {m.get('knn_accuracy_random', float('nan')):.3f}), linear "
          f"{m.get('linear_probe_accuracy', float('nan')):.3f} (random init "
          f"{m.get('linear_probe_accuracy_random', float('nan')):.3f})", flush=True)
    weights = {"ssl": work.folder / "ssl.pt"}
    torch.save(result.backbone, weights["ssl"])
    for name, init in (("pretrain", None), ("ssl_pretrain", weights["ssl"])):
        config_c = pretrain_config(base, epochs=args.pretrain_epochs, from_ssl=init is not None)
        fit = harness.train(work, config_c, device=device, plan=cam16, weights=init).fit
        weights[name] = work.folder / f"{name}.pt"
        torch.save(fit.best_state, weights[name])
        record[name] = {"cam16_test_accuracy": fit.reporting["accuracy"],
                        "seconds": fit.wall_seconds}
        print(f"CAM16 pretraining for {name} (from {'SimCLR' if init else 'random init'}): "
              f"test accuracy {fit.reporting['accuracy']:.3f} in "
              f"{record[name]['seconds']:.0f} s", flush=True)
    return weights, record


def main() -> None:
    parser = harness.parser(__doc__)
    harness.add_run_arguments(parser, image_size=128, epochs=15, batch_size=128,
                              epoch_images=2048, seeds=5)
    parser.add_argument("--pretrain-epochs", type=int, default=15, help="CAM16 epochs")
    parser.add_argument("--ssl-epochs", type=int, default=150)
    parser.add_argument("--ssl-batch-size", type=int, default=256)
    parser.add_argument("--ssl-lr", type=float, default=1e-3)
    parser.add_argument("--ssl-epoch-images", type=int, default=2048,
                        help="images a SimCLR epoch sees at least (pRCC tiled)")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    args = parser.parse_args()
    device = harness.device(args)
    harness.header(f"{args.image_size} px, {args.seeds} seeds, {args.epochs} epochs of "
                   f"{args.epoch_images} images, batch {args.batch_size}, lr {args.lr}",
                   device=device)
    base = harness.run_config(args)
    rows: list[dict[str, Any]] = []
    with harness.workspace(args.root, scale=args.scale, image_size=args.source_size) as work:
        weights, record = pretrain_all(work, args, base, device)
        for subset in args.subsets:
            for strategy in STRATEGIES:
                for seed in range(1, args.seeds + 1):
                    config = base.replace(subset=subset, strategy=strategy, seed=seed)
                    result = harness.train(work, config, device=device,
                                           weights=weights.get(strategy))
                    rows.append({"subset": subset, "strategy": strategy, "seed": seed,
                                 "test_accuracy": result.fit.reporting["accuracy"],
                                 "test_macro_f1": result.fit.reporting["macro_f1"],
                                 "train_images": result.fit.train_images})
                accuracy = [r["test_accuracy"] for r in rows[-args.seeds:]]
                f1 = [r["test_macro_f1"] for r in rows[-args.seeds:]]
                mean, low, high = mean_interval(accuracy)
                low, high = max(low, 0.0), min(high, 1.0)  # a proportion stays in [0, 1]
                print(f"{subset:8s} {strategy:13s} accuracy {100 * mean:5.1f} [{100 * low:5.1f}, "
                      f"{100 * high:5.1f}]  macro-F1 {statistics.fmean(f1):.3f}", flush=True)
            harness.write_json(args.json, args, {"pretraining": record, "rows": rows},
                               device=device)
    print("paired differences in test accuracy (points, 95% t-interval over seeds):")
    pairs = (("pretrain", "scratch"), ("ssl", "scratch"), ("ssl_pretrain", "scratch"),
             ("ssl_pretrain", "pretrain"))
    for subset in args.subsets:
        parts = []
        for better, base_name in pairs:
            a = {r["seed"]: r["test_accuracy"] for r in rows
                 if r["subset"] == subset and r["strategy"] == better}
            b = {r["seed"]: r["test_accuracy"] for r in rows
                 if r["subset"] == subset and r["strategy"] == base_name}
            diff = [100 * (a[s] - b[s]) for s in sorted(a.keys() & b.keys())]
            mean, low, high = mean_interval(diff)
            parts.append(f"{better}-{base_name} {mean:+.1f} [{low:+.1f}, {high:+.1f}]")
        print(f"{subset:8s} " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
