"""``wbc train``: one cell (subset x strategy, fixed hyperparameters) end to end on Ray Train.

Registered as a ``wbc`` subcommand through the ``wbc.commands`` entry point, so that the ``wbc``
package itself never imports Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "format_metrics"]

DEFAULT_SYNTH_SCALE = 0.05


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``train`` to the ``wbc`` command line."""
    from wbc.strategies import strategy_names

    p = sub.add_parser("train", parents=[common],
                       help="train one cell (subset x strategy) on Ray Train and print metrics")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset root; default: a synthetic tree made (once) in the cache")
    p.add_argument("--synthetic-scale", type=float, default=DEFAULT_SYNTH_SCALE,
                   help="scale of the synthetic tree used without --data")
    p.add_argument("--subset", default="WBC_100", help="WBC_100, WBC_50, WBC_10 or WBC_1")
    p.add_argument("--subset-seed", type=int, default=None,
                   help="redraw the subset from WBC_100 with this seed")
    p.add_argument("--strategy", default="scratch", choices=strategy_names())
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=64, help="per worker")
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--imbalance", choices=["none", "weighted", "balanced"], default="none",
                   help="class-weighted loss or class-balanced sampling")
    p.add_argument("--aug-factor", type=int, default=5,
                   help="pastes per masked image (pretrain_aug)")
    p.add_argument("--background", choices=["none", "own", "other"], default="none",
                   help="background of pasted cells: empty (the report), own, other image")
    p.add_argument("--image-size", type=int, default=128, help="working resolution in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 AMP on a GPU, fp32 on a CPU; bf16: autocast anywhere")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--pretrain-epochs", type=int, default=5, help="CAM16 pretraining epochs")
    p.add_argument("--pretrain-lr", type=float, default=None,
                   help="CAM16 learning rate (default: --lr)")
    p.add_argument("--mask-augment", choices=["on", "off"], default=None,
                   help="the pastes on or off for ssl and ssl_pretrain (default: off)")
    p.add_argument("--ssl-epochs", type=int, default=20,
                   help="pRCC self-supervised (SimCLR) epochs, for ssl and ssl_pretrain")
    p.add_argument("--ssl-batch-size", type=int, default=64)
    p.add_argument("--ssl-epoch-images", type=int, default=256,
                   help="images an SSL epoch sees at least (pRCC tiled)")
    p.add_argument("--imagenet-weights", type=Path, default=None,
                   help="local torchvision resnet18 ImageNet weights file (never downloaded)")
    p.add_argument("--report-every", type=int, default=1, help="epochs between Ray reports")
    p.add_argument("--storage", default="runs",
                   help="Ray storage for runs and checkpoints: a folder (default ./runs) or a "
                        "URI such as s3://bucket/path (shared storage on a cluster)")
    p.add_argument("--name", default=None,
                   help="run name; reusing a name resumes that run from its checkpoint")
    p.add_argument("--cache-dir", type=Path, default=None, help="decode and pretraining cache")
    p.add_argument("--exclude-bad", action="store_true", help="leave out unreadable files")
    p.add_argument("--json", action="store_true", help="print the final record as JSON")
    p.set_defaults(run=run)


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * float(value):6.2f}%"


def format_metrics(metrics: dict[str, Any], class_names: tuple[str, ...]) -> str:
    """The reporting split's accuracy (with a Wilson 95% interval), macro-F1, balanced
    accuracy and per-class recall, beside the selection split's."""
    from wbc.metrics import wilson_interval

    lines = [f"selection split: {metrics.get('selection_split')} (picks the best epoch)",
             f"reporting split: {metrics.get('reporting_split')} (the figures reported)",
             f"{'':22}{'selection':>12}{'reporting':>12}"]
    rows = [("accuracy", "accuracy"), ("macro-F1", "macro_f1"),
            ("balanced accuracy", "balanced_accuracy")]
    rows += [(f"recall {c}", f"recall_{c}") for c in class_names]
    for label, key in rows:
        lines.append(f"{label:22}{_pct(metrics.get('val_' + key)):>12}"
                     f"{_pct(metrics.get('test_' + key)):>12}")
    matrix = metrics.get("test_confusion_matrix")
    if matrix:
        width = max(6, *(len(c) for c in class_names)) + 1
        lines.append("reporting confusion matrix (rows: true class, columns: predicted)")
        lines.append(" " * width + "".join(f"{c[:5]:>7}" for c in class_names))
        for name, row in zip(class_names, matrix, strict=True):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>7}" for v in row))
    n = int(metrics.get("test_n", 0) or 0)
    if n:
        low, high = wilson_interval(round(float(metrics["test_accuracy"]) * n), n)
        lines.append(f"reporting accuracy 95% interval: {100 * low:.2f}-{100 * high:.2f}% "
                     f"(n={n}); best epoch {metrics.get('best_epoch')}")
    return "\n".join(lines)


def _synthetic_root(scale: float, image_size: int, cache_dir: Path | None) -> Path:
    from wbc.cache import default_cache_dir
    from wbc.synth import synthesize

    base = cache_dir if cache_dir is not None else default_cache_dir()
    root = base / "synth" / f"scale{scale:g}-{max(64, image_size)}px-seed0"
    if not (root / "synth.json").exists():
        _say(f"making a synthetic tree in {root} (scale {scale:g}); reused next time")
        synthesize(root, scale=scale, image_size=max(64, image_size), seed=0, overwrite=True)
    return root


def run(args: argparse.Namespace) -> int:
    """Run one cell: check the tree, pretrain on CAM16 if needed (cached), train, print."""
    import ray

    from study.train import (
        RunSpec,
        ensure_cam16_pretrain,
        ensure_ssl_pretrain,
        run_training,
        warm_cache,
    )
    from wbc.config import TrainConfig
    from wbc.data import plan_wbc
    from wbc.datasets import scan_tree
    from wbc.strategies import get_strategy

    try:
        config = TrainConfig.from_flat({
            "subset": args.subset, "subset_seed": args.subset_seed,
            "image_size": args.image_size, "exclude_bad": args.exclude_bad,
            "strategy": args.strategy,
            "imagenet_weights": str(args.imagenet_weights) if args.imagenet_weights else None,
            "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
            "schedule": args.schedule, "label_smoothing": args.label_smoothing,
            "imbalance": args.imbalance, "batch_size": args.batch_size, "epochs": args.epochs,
            "aug_factor": args.aug_factor, "background": args.background, "seed": args.seed,
            "deterministic": args.deterministic, "precision": args.precision,
            "report_every": args.report_every,
            "mask_augment": None if args.mask_augment is None else args.mask_augment == "on",
        })
    except ValueError as err:
        raise _user_error(str(err)) from err
    root = args.data if args.data is not None else _synthetic_root(
        args.synthetic_scale, args.image_size, args.cache_dir)
    tree = scan_tree(root, exclude_bad=args.exclude_bad, workers=args.workers,
                     progress=None if args.quiet else _say)
    plan = plan_wbc(tree, config)
    for note in plan.notes:
        _say(f"note: {note}")
    cache_dir = str(args.cache_dir) if args.cache_dir else None
    warm_cache(plan, cache_dir)
    name = args.name or f"train-{args.strategy}-{args.subset}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    spec = RunSpec(storage_path=storage, name=name, workers=args.workers or 1,
                   use_gpu=args.gpu, cpus_per_worker=args.cpus_per_worker, cache_dir=cache_dir)
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, log_to_driver=not args.quiet)
    pretrained = None
    pretrain_metrics: dict[str, Any] = {}
    strategy = get_strategy(args.strategy)
    ssl = None
    if strategy.ssl == "prcc":
        from wbc.ssl import SSLConfig

        try:
            ssl_config = SSLConfig(image_size=args.image_size, epochs=args.ssl_epochs,
                                   batch_size=args.ssl_batch_size, seed=args.seed)
        except ValueError as err:
            raise _user_error(f"ssl settings: {err}") from err
        ssl, _ = ensure_ssl_pretrain(tree, ssl_config, RunSpec(**{**spec.__dict__,
                                                                  "name": f"{name}-ssl"}),
                                     min_epoch_images=args.ssl_epoch_images, log=_say)
        pretrained = ssl.weights
    if strategy.pretrain == "cam16":
        result = ensure_cam16_pretrain(tree, config, spec, epochs=args.pretrain_epochs,
                                       lr=args.pretrain_lr, log=_say,
                                       init=(ssl.weights, ssl.key) if ssl else None)
        pretrained, pretrain_metrics = result.weights, result.metrics
    outcome = run_training(plan, config, spec, pretrained=pretrained)
    metrics = dict(outcome.metrics)
    if pretrain_metrics:
        metrics["pretrain_val_accuracy"] = pretrain_metrics.get("val_accuracy")
        metrics["pretrain_test_accuracy"] = pretrain_metrics.get("test_accuracy")
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items()
                          if isinstance(v, int | float | str | list | None)}, indent=2))
        return 0
    print(f"wbc train: {args.strategy} on {args.subset} of {root} "
          f"({metrics.get('train_images')} training images incl. pastes), "
          f"{args.image_size} px, {args.epochs} epochs, seed {args.seed}, "
          f"{spec.workers} worker(s); run {outcome.path}")
    if pretrain_metrics:
        print(f"CAM16 pretraining: val accuracy {_pct(pretrain_metrics.get('val_accuracy'))}, "
              f"test accuracy {_pct(pretrain_metrics.get('test_accuracy'))}")
    print(format_metrics(metrics, plan.classes))
    return 0


def _user_error(message: str) -> Exception:
    from wbc.cli import UserError

    return UserError(message)
