"""Does pRCC self-supervised pretraining help, and at which label budget? One fixed recipe.

Not a study (no search): every strategy trains with the same fixed settings, over ``--seeds``
seeds, at each label budget, so that the only difference is where the backbone starts:

- ``scratch``: random init;
- ``pretrain``: the CAM16 tumour/normal classifier (supervised, from random init);
- ``ssl``: SimCLR on the unlabelled pRCC images (``wbc.ssl``);
- ``ssl_pretrain``: the CAM16 classifier trained from the SimCLR backbone.

The pretraining runs once each. It prints the SimCLR run's loss and its CAM16 probe accuracies
(k-NN and linear, against the random-init backbone), then per budget and strategy the test
accuracy and macro-F1 (mean and 95% t-interval over seeds), then the paired differences
against ``scratch`` (and ``ssl_pretrain`` against ``pretrain``) on the same seeds. The mask-based
augmentation is off throughout: this isolates the starting point. The study (``study run``)
searches each cell instead; this is the quick, controlled look.

    python benchmarks/ssl_by_budget.py --device cuda --image-size 128 --scale 0.25 --seeds 5
    python benchmarks/ssl_by_budget.py --image-size 32 --scale 0.03 --seeds 2 --epochs 2 \\
        --ssl-epochs 3 --pretrain-epochs 1 --epoch-images 64 --ssl-epoch-images 64  # CPU check
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.cache import decode_samples
from wbc.config import TrainConfig
from wbc.data import load_plan, plan_cam16, plan_wbc
from wbc.datasets import scan_tree
from wbc.hardware import describe, pick_device
from wbc.metrics import mean_interval
from wbc.pretrain import initial_model, pretrain_config
from wbc.seeding import seed_everything
from wbc.ssl import SSLConfig, ssl_pretrain
from wbc.synth import synthesize
from wbc.train import fit

STRATEGIES = ("scratch", "pretrain", "ssl", "ssl_pretrain")
SUBSETS = ("WBC_100", "WBC_50", "WBC_10", "WBC_1")


def pretrain_all(tree: Any, args: argparse.Namespace, base: TrainConfig, device: torch.device,
                 folder: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """SimCLR on pRCC, CAM16 from random init, CAM16 from the SimCLR backbone."""
    record: dict[str, Any] = {}
    decoded = decode_samples(list(tree.prcc), args.image_size, name="pRCC",
                             cache_dir=folder / "cache")
    images = torch.from_numpy(np.array(decoded.images))  # a copy: the cache is read-only
    if images.shape[0] < args.ssl_epoch_images:
        images = images[torch.arange(args.ssl_epoch_images) % images.shape[0]]
    cam16 = load_plan(plan_cam16(tree, image_size=args.image_size),
                      cache_dir=folder / "cache").to(device)
    probe = (cam16.train.images, cam16.train.labels, cam16.selection.images,
             cam16.selection.labels)
    config = SSLConfig(image_size=args.image_size, epochs=args.ssl_epochs,
                       batch_size=args.ssl_batch_size, lr=args.ssl_lr,
                       warmup_epochs=min(10.0, args.ssl_epochs / 10), seed=0)
    started = time.perf_counter()
    result = ssl_pretrain(images.to(device), config, probe=probe)
    seconds = time.perf_counter() - started
    record["ssl"] = {**{k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
                     "first_loss": result.history[0]["ssl_loss"], "seconds": seconds,
                     "prcc_images": len(tree.prcc)}
    m = record["ssl"]
    print(f"SimCLR on {len(tree.prcc)} pRCC images ({images.shape[0]} an epoch), "
          f"{args.ssl_epochs} epochs in {seconds:.0f} s: loss {m['first_loss']:.3f} -> "
          f"{m['ssl_loss']:.3f}; CAM16 probe k-NN {m.get('knn_accuracy', float('nan')):.3f} "
          f"(random init {m.get('knn_accuracy_random', float('nan')):.3f}), linear "
          f"{m.get('linear_probe_accuracy', float('nan')):.3f} (random init "
          f"{m.get('linear_probe_accuracy_random', float('nan')):.3f})", flush=True)
    weights = {"ssl": folder / "ssl.pt"}
    torch.save(result.backbone, weights["ssl"])
    for name, init in (("pretrain", None), ("ssl_pretrain", weights["ssl"])):
        config_c = pretrain_config(base, epochs=args.pretrain_epochs, from_ssl=init is not None)
        seed_everything(0)
        model = initial_model(config_c, num_classes=2, pretrained=init).to(device)
        started = time.perf_counter()
        fitted = fit(model, config_c, cam16.train, cam16.selection, cam16.reporting)
        weights[name] = folder / f"{name}.pt"
        torch.save(fitted.best_state, weights[name])
        record[name] = {"cam16_test_accuracy": fitted.reporting["accuracy"],
                        "seconds": time.perf_counter() - started}
        print(f"CAM16 pretraining for {name} (from {'SimCLR' if init else 'random init'}): "
              f"test accuracy {fitted.reporting['accuracy']:.3f} in "
              f"{record[name]['seconds']:.0f} s", flush=True)
    return weights, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--scale", type=float, default=0.25, help="synthetic tree scale")
    parser.add_argument("--root", type=Path, default=None, help="an existing tree")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epoch-images", type=int, default=2048, help="min_epoch_images")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--ssl-epochs", type=int, default=150)
    parser.add_argument("--ssl-batch-size", type=int, default=256)
    parser.add_argument("--ssl-lr", type=float, default=1e-3)
    parser.add_argument("--ssl-epoch-images", type=int, default=2048)
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(pick_device(args.device))
    print(f"{describe()}; {args.image_size} px, {args.seeds} seeds, {args.epochs} epochs of "
          f"{args.epoch_images} images, batch {args.batch_size}, lr {args.lr}", flush=True)
    base = TrainConfig().replace(image_size=args.image_size, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr,
                                 min_epoch_images=args.epoch_images, bn_recalibrate=1024)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        root = args.root
        if root is None:
            root = folder / "tree"
            synthesize(root, scale=args.scale, image_size=256, seed=0)
        tree = scan_tree(root, verify=False)
        weights, record = pretrain_all(tree, args, base, device, folder)
        for subset in args.subsets:
            for strategy in STRATEGIES:
                for seed in range(1, args.seeds + 1):
                    config = base.replace(subset=subset, strategy=strategy, seed=seed)
                    seed_everything(seed)
                    data = load_plan(plan_wbc(tree, config), cache_dir=folder / "cache"
                                     ).to(device)
                    model = initial_model(config, pretrained=weights.get(strategy)).to(device)
                    result = fit(model, config, data.train, data.selection, data.reporting)
                    rows.append({"subset": subset, "strategy": strategy, "seed": seed,
                                 "test_accuracy": result.reporting["accuracy"],
                                 "test_macro_f1": result.reporting["macro_f1"],
                                 "train_images": int(data.train.labels.numel())})
                accuracy = [r["test_accuracy"] for r in rows[-args.seeds:]]
                f1 = [r["test_macro_f1"] for r in rows[-args.seeds:]]
                mean, low, high = mean_interval(accuracy)
                low, high = max(low, 0.0), min(high, 1.0)  # a proportion stays in [0, 1]
                print(f"{subset:8s} {strategy:13s} accuracy {100 * mean:5.1f} [{100 * low:5.1f}, "
                      f"{100 * high:5.1f}]  macro-F1 {statistics.fmean(f1):.3f}", flush=True)
            if args.json is not None:
                args.json.write_text(json.dumps({"hardware": describe(), "args": vars(args),
                                                 "pretraining": record, "rows": rows},
                                                indent=2, default=str))
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
