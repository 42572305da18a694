"""``wbc train``: one cell (subset x strategy, fixed hyperparameters) end to end on Ray Train.

Registered as a ``wbc`` subcommand through the ``wbc.commands`` entry point, so that the ``wbc``
package itself never imports Ray. Its training options are made from ``wbc.config.TrainConfig``
(``wbc.cli_options``); pretraining goes through the same orchestration as a study's
(``study.pretraining``), its weights kept in the cache. ``--train-workers`` are the run's Ray
Train (DDP) workers, ``--decode-workers`` the processes that check the tree. It prints a line per
report of each run (from the Ray Train controller,
``study.train.trainer.ray_train_run``) and none of Ray's own output unless
``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from study.cli.output import say, say_warnings

__all__ = ["add_parser", "format_metrics"]




def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


_EXAMPLES = ("wbc train --data data --strategy pretrain_aug --subset WBC_10 --epochs 10",
             "wbc train --epochs 2 --image-size 32 --quiet   (a synthetic tree, made once)",
             "wbc train --data data --train-workers 2 --gpu --storage s3://bucket/runs",
             "wbc train --data data --name my-run   (again: resumes my-run from its checkpoint)")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``train`` to the ``wbc`` command line (``common``: its -q/-v output options)."""
    from study.spec import preset
    from wbc.cli import examples
    from wbc.cli_options import add_config_options
    from wbc.strategies import strategy_names

    p = sub.add_parser("train", parents=[common], epilog=examples(*_EXAMPLES),
                       help="train one cell (subset x strategy) on Ray Train and print metrics",
                       description="Train one cell (subset x strategy, fixed hyperparameters) "
                                   "on Ray Train, pretraining first if its strategy needs it "
                                   "(once: the weights are cached), and print its metrics.")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset root (default: a synthetic tree made once in the cache)")
    p.add_argument("--cam16", type=Path, default=None, metavar="FOLDER",
                   help="CAM16 kept outside the tree, for the strategies that pretrain on it: a "
                        "folder that holds CAM16/{train,val,test}/data/{normal,tumor}/ or is "
                        "that layout; it replaces the tree's own")
    p.add_argument("--prcc", type=Path, default=None, metavar="FOLDER",
                   help="pRCC kept outside the tree, for ssl and ssl_pretrain: a folder that "
                        "holds pRCC/train/data/ or is that layout; it replaces the tree's own")
    p.add_argument("--synthetic-scale", type=float, default=None,
                   help="scale of the synthetic tree's training set, used without --data "
                        "(default: the quick preset's tree, shared with `study run`)")
    add_config_options(p, choices={"strategy": strategy_names()})
    p.add_argument("--train-workers", type=_positive_int, default=1, metavar="N",
                   help="Ray Train workers: DDP ranks, each with --cpus-per-worker CPUs (and a "
                        "GPU with --gpu)")
    p.add_argument("--decode-workers", type=_positive_int, default=None, metavar="N",
                   help="processes that decode the tree's images to check them (default: all "
                        "cores)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs each Ray Train worker holds (also its torch threads)")
    # The pretraining defaults are the quick preset's (study run --preset quick).
    quick = preset("quick")
    p.add_argument("--pretrain-epochs", type=int, default=quick.pretrain_epochs,
                   help="CAM16 pretraining epochs")
    p.add_argument("--pretrain-lr", type=float, default=None,
                   help="CAM16 learning rate (default: --lr)")
    p.add_argument("--ssl-epochs", type=int, default=quick.ssl.epochs,
                   help="pRCC self-supervised (SimCLR) epochs, for ssl and ssl_pretrain")
    p.add_argument("--ssl-batch-size", type=int, default=quick.ssl.batch_size,
                   help="SimCLR batch size (images; each gives two views)")
    p.add_argument("--ssl-epoch-images", type=int, default=quick.ssl_min_epoch_images,
                   help="images an SSL epoch sees at least (pRCC tiled)")
    p.add_argument("--storage", default="runs",
                   help="Ray storage for runs and checkpoints: a folder or a URI such as "
                        "s3://bucket/path (shared storage on a cluster)")
    p.add_argument("--name", default=None,
                   help="run name; reusing a name resumes that run from its checkpoint "
                        "(default: train-<strategy>-<subset>-<date-time>)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="decode and pretraining cache (default: $WBC_CACHE_DIR or ~/.cache/wbc)")
    p.add_argument("--masks", type=Path, default=None,
                   help="predicted masks for the images without one, as `wbc segment DATA --out "
                        "MASKS` wrote them: what pretrain_aug_predicted pastes")
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


def _pretrained(args: argparse.Namespace, tree: Any, config: Any, spec: Any
                ) -> tuple[Path | None, dict[str, Any]]:
    """The starting weights of ``config``'s strategy (made once, kept in the cache)."""
    from study.pretraining import TrainExecutor, ensure_sources
    from wbc.config import PretrainSettings, SSLConfig
    from wbc.strategies import get_strategy
    from wbc.training.pretrain import WeightsStore

    source = get_strategy(config.model.strategy).weights_source
    if source is None:
        return None, {}
    try:
        ssl = SSLConfig(image_size=config.data.image_size, epochs=args.ssl_epochs,
                        batch_size=args.ssl_batch_size, seed=config.seed)
    except ValueError as err:
        raise _user_error(f"ssl settings: {err}") from err
    settings = PretrainSettings(cam16_epochs=args.pretrain_epochs, cam16_lr=args.pretrain_lr,
                                ssl=ssl, ssl_min_epoch_images=args.ssl_epoch_images)
    cache = str(args.cache_dir) if args.cache_dir else None
    done = ensure_sources([source], tree, config, settings, WeightsStore(args.cache_dir),
                          TrainExecutor(spec), cache_dir=cache,
                          say=say_warnings if args.quiet else say, progress=not args.quiet)
    metrics = done["cam16"].record if "cam16" in done else {}
    return done[source].weights, metrics


def _synthetic(args: argparse.Namespace, image_size: int) -> Path:
    """The quick preset's synthetic tree (made once in the cache), or one of another scale."""
    from study.data import synthetic_tree
    from study.spec import preset

    quick = preset("quick")
    scale = args.synthetic_scale if args.synthetic_scale is not None else quick.synthetic_scale
    return synthetic_tree(scale, image_size, seed=quick.synthetic_seed,
                          val_scale=quick.synthetic_val_scale,
                          tissue_scale=quick.synthetic_tissue_scale,
                          test_scale=quick.synthetic_test_scale, cache_dir=args.cache_dir,
                          say=None if args.quiet else say)


def _train(args: argparse.Namespace, plan: Any, config: Any, spec: Any,
           pretrained: Path | None) -> Any:
    """The run itself, with a line per report unless quiet."""
    from study.train.reports import epoch_line
    from study.train.trainer import ray_train_run

    epochs = config.optim.epochs
    if not args.quiet:
        say(f"wbc train: {config.model.strategy} on {config.data.subset}, {epochs} epochs on "
             f"{spec.workers} Ray Train worker(s); run {spec.storage_path}/{spec.name}")
    on_report = None if args.quiet else (
        lambda figures: say(epoch_line("wbc train", epochs, figures)))
    return ray_train_run(plan, config, spec, pretrained=pretrained, on_report=on_report)


def run(args: argparse.Namespace) -> int:
    """Run one cell: check the tree, pretrain if needed (cached), train, print."""
    from study.local_ray import quiet_ray, start_ray

    quiet_ray(verbose=args.verbose)  # before Ray is imported
    from study.data import given_histology
    from study.train.trainer import RunSpec, warm_cache
    from wbc.cli_options import config_from_options
    from wbc.datasets import histology_origin, scan_tree
    from wbc.training.inputs import plan_wbc

    try:
        config = config_from_options(args)
    except ValueError as err:
        raise _user_error(str(err)) from err
    root = args.data if args.data is not None else _synthetic(args, config.data.image_size)
    tree = scan_tree(root, exclude_bad=config.data.exclude_bad, workers=args.decode_workers,
                     progress=None if args.quiet else say)
    tree = given_histology(tree, cam16=args.cam16, prcc=args.prcc,
                           exclude_bad=config.data.exclude_bad, workers=args.decode_workers,
                           say=None if args.quiet else say)
    if args.masks is not None:
        from wbc.segment import with_predicted_masks

        tree = with_predicted_masks(tree, args.masks)
    plan = plan_wbc(tree, config)
    for note in () if args.quiet else plan.notes:
        say(f"note: {note}")
    cache_dir = str(args.cache_dir) if args.cache_dir else None
    warm_cache(plan, cache_dir)
    strategy = config.model.strategy
    name = args.name or f"train-{strategy}-{config.data.subset}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    spec = RunSpec(storage_path=storage, name=name, workers=args.train_workers,
                   use_gpu=args.gpu, cpus_per_worker=args.cpus_per_worker, cache_dir=cache_dir)
    start_ray()
    pretrained, pretrain_metrics = _pretrained(args, tree, config, spec)
    outcome = _train(args, plan, config, spec, pretrained)
    metrics = dict(outcome.metrics)
    model = _keep_model(outcome, config, plan.classes, name)
    if pretrain_metrics:
        metrics["pretrain_val_accuracy"] = pretrain_metrics.get("val_accuracy")
        metrics["pretrain_test_accuracy"] = pretrain_metrics.get("test_accuracy")
    if args.json:
        print(json.dumps({**{k: v for k, v in metrics.items()
                             if isinstance(v, int | float | str | list | None)},
                          "model": str(model)}, indent=2))
        return 0
    print(f"wbc train: {strategy} on {config.data.subset} of {root} "
          f"({metrics.get('train_images')} training images incl. pastes), "
          f"{config.data.image_size} px, {config.optim.epochs} epochs, seed {config.seed}, "
          f"{spec.workers} worker(s); run {outcome.path}")
    if pretrain_metrics:
        origin = histology_origin(tree, "CAM16")
        print(f"CAM16 pretraining: val accuracy {_pct(pretrain_metrics.get('val_accuracy'))}, "
              f"test accuracy {_pct(pretrain_metrics.get('test_accuracy'))} ({origin['kind']} "
              f"tissue from {origin['root']})")
    print(format_metrics(metrics, plan.classes))
    print(f"model: {model} (wbc predict --model {model.parent} IMAGES...)")
    return 0


def _keep_model(outcome: Any, config: Any, classes: tuple[str, ...], name: str) -> Path:
    """The run's best-epoch weights in the model format (``wbc.classifier.model_file``), in the
    run's folder (or ``./models/<name>`` when the storage is a URI)."""
    from wbc.classifier.model_file import run_card, save_classifier
    from wbc.training.loop import best_weights

    state = outcome.load_checkpoint()
    folder = Path("models") / name if "://" in outcome.path else Path(outcome.path)
    card = run_card(config, classes, outcome.metrics)
    return save_classifier(best_weights(state), card, folder).resolve()


def _user_error(message: str) -> Exception:
    from wbc.cli import UserError

    return UserError(message)
