"""``wbc``: make, import, check and decode datasets in the report's layout; predict with,
evaluate and export a trained model (``wbc.classifier.inference``, ``wbc.classifier.export``).

Exit status: 0 success; 1 the tree is not usable (``check``) or an exported file disagrees with
its model (``export``); 2 a usage or input error, said in one line that names the path or value
and what to do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from wbc.cli_options import UserError, examples
from wbc.datasets.imageio import MAX_PIXELS_ENV, ImageError, max_image_pixels, parse_pixel_count

__all__ = ["CommandParser", "UserError", "examples", "main",
           "output_options", "package_version"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _image_size(text: str) -> int:
    value = int(text)
    if not 16 <= value <= 2048:
        raise argparse.ArgumentTypeError(f"must be between 16 and 2048 pixels, got {text}")
    return value


def _pixel_count(text: str) -> int:
    try:
        return parse_pixel_count(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cmd_synth(args: argparse.Namespace) -> int:
    from wbc.synth import synthesize

    if args.scale > 1.0:
        raise UserError(f"--scale {args.scale}: at most 1.0 (the report's full counts)")
    try:
        summary = synthesize(args.out, scale=args.scale, image_size=args.image_size,
                             seed=args.seed, val_scale=args.val_scale,
                             tissue_scale=args.tissue_scale, test_scale=args.test_scale,
                             stain_shift=args.stain_shift,
                             workers=args.workers, overwrite=args.overwrite,
                             truth=not args.no_truth, progress=None if args.quiet else _say)
    except ValueError as err:
        raise UserError(str(err)) from err
    shift = f", stain shift {args.stain_shift}" if args.stain_shift else ""
    print(f"wrote {summary.images} images to {summary.out} in {summary.seconds:.1f} s "
          f"(scale {args.scale}, {args.image_size} px, seed {args.seed}{shift})")
    return 0


def _print_problems(tree_problems: Sequence[object]) -> None:
    for problem in tree_problems:
        _say(str(problem))


def _cmd_check(args: argparse.Namespace) -> int:
    from wbc.datasets import TRUTH_DIR, scan_tree
    from wbc.datasets.tables import format_tables, tree_summary

    tree = scan_tree(args.root, verify=not args.no_verify, exclude_bad=args.exclude_bad,
                     subset_seed=args.subset_seed, workers=args.workers,
                     progress=None if args.quiet or args.json else _say)
    summary = tree_summary(tree)
    _print_problems(tree.problems)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_tables(summary))
        print()
        n_wbc = len(tree.wbc.subset(100)) + len(tree.wbc.val) + len(tree.wbc.test)
        n_cam = sum(1 for _ in tree.cam16.samples())
        excluded = len(tree.excluded_files)
        verdict = "usable" if tree.usable else f"NOT usable: {len(tree.errors)} error(s)"
        print(f"{verdict}: {n_wbc} WBC_100, {n_cam} CAM16 and {len(tree.prcc)} pRCC images"
              f"{' decoded' if tree.verified else ' (not decoded: --no-verify)'}; "
              f"{len(tree.warnings)} warning(s); {excluded} file(s) excluded")
        if (tree.root / TRUTH_DIR).is_dir():
            print(f"{TRUTH_DIR}/: true masks of the synthetic images, not data: not scanned "
                  "(wbc.datasets.true_mask finds an image's)")
        if not tree.usable and not args.exclude_bad and any(p.excludes for p in tree.errors):
            print("rerun with --exclude-bad to leave the named files out")
    return 0 if tree.usable else 1


def _cmd_import(args: argparse.Namespace) -> int:
    from wbc.datasets.importer import import_imagefolder

    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction {args.val_fraction}: must be between 0 and 1")
    result = import_imagefolder(args.src, args.root, masks=args.masks,
                                val_fraction=args.val_fraction, seed=args.seed,
                                exclude_bad=args.exclude_bad, workers=args.workers,
                                progress=None if args.quiet else _say)
    _print_problems(result.warnings)
    subsets = ", ".join(f"WBC_{p}: {n}" for p, n in result.subsets.items())
    print(f"imported into {result.root}: {result.train} train, {result.val} val, "
          f"{result.masks} masks; {subsets}; {len(result.excluded)} file(s) excluded")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from wbc.datasets import scan_tree
    from wbc.datasets.cache import decode_samples

    tree = scan_tree(args.root, exclude_bad=args.exclude_bad, workers=args.workers,
                     progress=None if args.quiet else _say)
    if not tree.usable:
        _print_problems(tree.errors)
        raise UserError(f"{args.root}: not usable ({len(tree.errors)} error(s) above); fix them "
                        "or add --exclude-bad")
    groups = {"WBC": list(tree.wbc.samples()), "CAM16": list(tree.cam16.samples()),
              "pRCC": list(tree.prcc)}
    for name, samples in groups.items():
        if not samples:
            continue
        started = time.perf_counter()
        decoded = decode_samples(samples, args.image_size, name=name, cache_dir=args.cache_dir,
                                 workers=args.workers, progress=None if args.quiet else _say,
                                 verify="full")
        seconds = time.perf_counter() - started
        rate = f"{decoded.decoded_now / seconds:.0f} images/s" if decoded.decoded_now else \
            "already decoded"
        print(f"{name}: {len(decoded)} images at {args.image_size} px in {decoded.directory} "
              f"({decoded.decoded_now} decoded now, {seconds:.2f} s, {rate})")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _device(name: str, command: str) -> str:
    from wbc.training.hardware import GPUUnavailableError, pick_device, require_cuda

    if name != "cuda":
        return pick_device(name)
    try:
        return require_cuda(f"wbc {command} --device cuda", instead="use --device cpu")
    except GPUUnavailableError as err:
        raise UserError(str(err)) from None


def _cmd_predict(args: argparse.Namespace) -> int:
    from wbc.classifier.inference import (
        InferenceError,
        collect_images,
        predict_files,
        predictions_csv,
        predictions_json,
    )
    from wbc.classifier.model_file import ClassifierError, load_classifier
    from wbc.fileio import atomic_write_text

    json_out = args.out is not None and args.out.suffix.lower() == ".json"
    fmt = args.format or ("json" if json_out else "csv")
    try:
        classifier = load_classifier(args.model, device=_device(args.device, "predict"))
        paths, ignored = collect_images(args.inputs)
    except (ClassifierError, InferenceError) as err:
        raise UserError(str(err)) from None
    records, unreadable = predict_files(classifier, paths, batch_size=args.batch_size,
                                        workers=args.workers,
                                        progress=None if args.quiet else _say)
    skipped = ignored + unreadable
    for item in skipped:
        _say(f"skipped {item.path}: {item.reason}")
    if not records:
        inputs = ", ".join(str(p) for p in args.inputs)
        found = f"{len(skipped)} file(s) skipped, said above" if skipped else "no files"
        raise UserError(f"no image could be read from {inputs} ({found}); give image files "
                        "(.png .jpg .jpeg .bmp .tif .tiff) or folders holding them")
    text = (predictions_json(records, skipped, classifier=classifier) if fmt == "json"
            else predictions_csv(records, classifier.card.classes))
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        print(f"wrote {len(records)} predictions to {args.out} ({fmt}; {len(skipped)} file(s) "
              "skipped)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from wbc.classifier.inference import (
        InferenceError,
        evaluate_model,
        evaluation_json,
        format_evaluation,
    )
    from wbc.classifier.model_file import ClassifierError, load_classifier

    try:
        classifier = load_classifier(args.model, device=_device(args.device, "evaluate"))
        result = evaluate_model(classifier, args.data, split=args.split,
                                cache_dir=args.cache_dir, exclude_bad=args.exclude_bad,
                                workers=args.workers,
                                progress=None if args.quiet or args.json else _say)
    except (ClassifierError, InferenceError) as err:
        raise UserError(str(err)) from None
    if not args.quiet:
        for warning in result["warnings"]:
            _say(warning)
    sys.stdout.write(evaluation_json(result) if args.json else format_evaluation(result) + "\n")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from wbc.classifier.export import ExportError, export_model, preprocessing_note
    from wbc.classifier.model_file import ClassifierError, load_classifier

    try:
        classifier = load_classifier(args.model)
        result = export_model(classifier, args.out, fmt=args.format)
    except (ClassifierError, ExportError) as err:
        raise UserError(str(err)) from None
    card = classifier.card
    size = card.image_size
    print(f"exported {card.cell or classifier.path.name} ({len(card.classes)} classes, {size} px) "
          f"as {args.format} to {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB, "
          f"{result.seconds:.1f} s): input 'images' uint8 N x {size} x {size} x 3 (any N), "
          "outputs 'logits' and 'probabilities'")
    print(preprocessing_note(card))
    if card.precision == "bf16":
        print("note: the run evaluated in bf16; the exported graph computes in fp32")
    if result.check is None:
        print("not checked: onnxruntime is not installed (pip install onnxruntime)")
        return 0
    print(result.check)
    if not result.check.ok:
        _say(f"wbc export: {result.path} disagrees with {classifier.path}; do not use it")
        return 1
    return 0


def _add_model_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``predict``, ``evaluate`` and ``export``: the commands that use a trained model."""
    model = CommandParser(add_help=False)
    model.add_argument("--model", type=Path, required=True, metavar="M",
                       help="model file (.safetensors) or a folder holding model.safetensors")
    device = CommandParser(add_help=False)
    device.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs; auto: cuda when a GPU is visible (default: "
                             "%(default)s)")

    p = sub.add_parser("predict", parents=[model, device, *parents],
                       help="classify image files with a trained model (CSV or JSON)",
                       epilog=examples("wbc predict --model runs/NAME cells/ > predictions.csv",
                                       "wbc predict --model runs/NAME a.png b.png --out p.json"))
    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, and folders searched at any depth for images")
    p.add_argument("--out", type=Path, default=None,
                   help="write here instead of to stdout (a .json name implies --format json)")
    p.add_argument("--format", choices=("csv", "json"), default=None,
                   help="csv: path, predicted, probability, p_<Class>...; json: the same records "
                        "and the skipped files (default: csv)")
    p.add_argument("--batch-size", type=_positive_int, default=256,
                   help="images per forward pass")
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser("evaluate", parents=[model, device, *parents],
                       help="score a trained model on a labelled tree: accuracy with its 95%% "
                            "interval, macro-F1, balanced accuracy, recalls, confusion matrix",
                       epilog=examples("wbc evaluate --model runs/NAME --data data",
                                       "wbc evaluate --model runs/NAME --data other-lab/ --json"))
    p.add_argument("--data", type=Path, required=True, metavar="TREE",
                   help="a tree in the report's layout (holding WBC_100/), or an ImageFolder "
                        "tree TREE/<Class>/<image> (scored whole)")
    p.add_argument("--split", default="reporting",
                   help="reporting (the split a training run reports on), selection, test, val, "
                        "train, or a subset name such as WBC_10 (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="decode cache folder (default: $WBC_CACHE_DIR or ~/.cache/wbc)")
    p.add_argument("--exclude-bad", action="store_true",
                   help="leave out the files named by errors instead of failing")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("export", parents=[model],
                       help="write a trained model as ONNX (or a torch.export program) with its "
                            "card, and check the file against the model",
                       epilog=examples("wbc export --model runs/NAME",
                                       "wbc export --model runs/NAME --format torch-export "
                                       "--out model.pt2"))
    p.add_argument("--format", choices=("onnx", "torch-export"), default="onnx",
                   help="onnx or torch-export (.pt2)")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write (default: beside the model, <stem>.onnx or .pt2)")
    p.set_defaults(run=_cmd_export)


def package_version() -> str:
    """The installed project's version, for ``--version`` of ``wbc`` and ``study``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wbc-study")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def _wrapped(text: str) -> str:
    """A description or epilog as ``--help`` prints it: each prose paragraph filled to the
    terminal's width (as argparse fills), a paragraph with indented lines (examples) as written."""
    width = max(shutil.get_terminal_size().columns - 2, 11)
    return "\n\n".join(paragraph if "\n " in paragraph else
                       textwrap.fill(" ".join(paragraph.split()), width)
                       for paragraph in text.split("\n\n"))


class CommandParser(argparse.ArgumentParser):
    """The parser of ``wbc``, ``study``, each of their commands and the option sets they share.

    Every option's help says its default where it has one worth saying (not None, False or an
    empty list, and not when its help already says it), in argparse's own ``%(default)s``; a
    description or epilog keeps its examples (a paragraph with indented lines) as written.
    ``options`` and ``commands`` are what it was given (parents' options included), for the
    conventions tests to read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: list[argparse.Action] = []
        self.commands: dict[str, tuple[CommandParser, str | None]] = {}  # name: parser, help
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        for key in ("description", "epilog"):
            if kwargs.get(key):
                kwargs[key] = _wrapped(kwargs[key])
        super().__init__(*args, **kwargs)
        for parent in kwargs.get("parents", ()):
            self.options += parent.options

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._noted(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        return self._watched(super().add_mutually_exclusive_group(**kwargs))

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", CommandParser)
        subparsers: Any = super().add_subparsers(**kwargs)
        add = subparsers.add_parser

        def add_parser(name: str, **options: Any) -> CommandParser:
            parser: CommandParser = add(name, **options)
            self.commands[name] = (parser, options.get("help"))
            return parser

        subparsers.add_parser = add_parser
        return subparsers

    def _watched(self, group: Any) -> Any:
        add = group.add_argument

        def add_argument(*args: Any, **kwargs: Any) -> argparse.Action:
            return self._noted(add(*args, **kwargs))

        group.add_argument = add_argument
        return group

    def _noted(self, action: argparse.Action) -> argparse.Action:
        self.options.append(action)
        text, default = action.help, action.default
        if not text or text == argparse.SUPPRESS or not (
                action.option_strings or action.nargs in ("?", "*")):
            return action
        switch = isinstance(action, argparse.BooleanOptionalAction)  # which side is on
        if default is None or default is argparse.SUPPRESS or (default is False and not switch) \
                or (isinstance(default, list | tuple) and not default):
            action.help = text.replace(" (default: %(default)s)", "")
        elif "default" not in text:
            action.help = f"{text} (default: %(default)s)"
        return action


def output_options(*, verbose: bool) -> argparse.ArgumentParser:
    """``-q/--quiet`` (and ``-v/--verbose`` where a command has more to show: Ray's logs), one
    meaning everywhere: quiet leaves standard error to errors and warnings (no progress), the
    result on standard output as ever; verbose adds what Ray, Ray Train and Ray Tune say,
    worker processes included."""
    parent = CommandParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress messages: only errors and warnings besides the result")
    if verbose:
        group.add_argument("-v", "--verbose", action="store_true",
                           help="also Ray's own logs: its workers' output (Ray Train, Tune), "
                                "at INFO level")
    return parent


def _add_data_commands(sub: Any, common: argparse.ArgumentParser,
                       limits: argparse.ArgumentParser) -> None:
    p = sub.add_parser("synth", parents=[common], help="generate a synthetic WBC + CAM16 + pRCC tree",
                       epilog=examples("wbc synth data --scale 0.1",
                                       "wbc synth tiny --scale 0.01 --val-scale 0.2 --image-size 64",
                                       "wbc synth other-lab --scale 0.1 --stain-shift 1.0"))
    p.add_argument("out", type=Path, help="folder to create")
    p.add_argument("--scale", type=_positive_float, default=1.0,
                   help="fraction of the report's counts; 1.0 gives exactly its Table 1 and 2")
    p.add_argument("--val-scale", type=_positive_float, default=None,
                   help="fraction for WBC_100/val alone (default: --scale); above 1.0 draws "
                        "more than the report's val set")
    p.add_argument("--tissue-scale", type=_positive_float, default=None,
                   help="fraction for CAM16 and pRCC alone (default: --scale); above 1.0 draws "
                        "more than the report's Table 2")
    p.add_argument("--test-scale", type=_positive_float, default=None,
                   help="add a WBC_100/test split (the report has none) at this fraction of "
                        "the report's val counts: a study reports on it and picks epochs on "
                        "all of val (default: no test split)")
    p.add_argument("--image-size", type=_image_size, default=128, help="side in pixels")
    p.add_argument("--seed", type=int, default=0, help="same seed, same files")
    p.add_argument("--stain-shift", type=float, default=0.0, metavar="S",
                   help="draw every image as another lab's stain and microscope would show it, "
                        "for cross-domain evaluation: the same cells and masks as S=0 (the "
                        "usual look), with stain hue, lamp colour, stain strength, blur and "
                        "noise moved by S (1.0: warmer lamp, purple nuclei, redder red cells; "
                        "-1.0: colder and bluer); recorded in synth.json (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing tree at OUT")
    p.add_argument("--no-truth", action="store_true",
                   help="skip OUT/truth/, the true mask of every WBC_100 and CAM16 image (for "
                        "scoring segmentation; the scanners ignore it): one small PNG per image")
    p.set_defaults(run=_cmd_synth)

    p = sub.add_parser("check", parents=[common, limits],
                       help="validate a tree and print the report's Table 1 and 2 counts",
                       epilog=examples("wbc check data", "wbc check data --exclude-bad --json"))
    p.add_argument("root", type=Path, help="dataset root (holds WBC_100/)")
    p.add_argument("--json", action="store_true", help="print the counts and problems as JSON")
    p.add_argument("--exclude-bad", action="store_true",
                   help="leave out the files named by errors instead of failing")
    p.add_argument("--subset-seed", type=int, default=0,
                   help="seed for subsets derived when only WBC_100 is on disk")
    p.add_argument("--no-verify", action="store_true",
                   help="skip decoding every file (faster; misses corrupt files)")
    p.set_defaults(run=_cmd_check)

    p = sub.add_parser("import", parents=[common, limits],
                       help="turn an ImageFolder set (SRC/<Class>/*) into the report's layout",
                       epilog=examples("wbc import ~/Downloads/wbc-images data",
                                       "wbc import SRC data --masks SRC-masks --val-fraction 0.2"))
    p.add_argument("src", type=Path, help="ImageFolder source; only read")
    p.add_argument("root", type=Path, help="new dataset root to create")
    p.add_argument("--masks", type=Path, default=None,
                   help="masks folder shaped like SRC (default: SRC/masks if present)")
    p.add_argument("--val-fraction", type=float, default=0.17,
                   help="share of each class for validation (the report's 17%%)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split and subsets")
    p.add_argument("--exclude-bad", action="store_true", help="skip unreadable files")
    p.set_defaults(run=_cmd_import)

    p = sub.add_parser("decode", parents=[common, limits],
                       help="decode a tree once into the memory-mapped cache (an existing one "
                            "is checked in full and rebuilt if damaged)",
                       epilog=examples("wbc decode data --image-size 64",
                                       "wbc decode data --cache-dir /scratch/wbc-cache"))
    p.add_argument("root", type=Path, help="dataset root")
    p.add_argument("--image-size", type=_image_size, default=128, help="working resolution")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache folder (default: $WBC_CACHE_DIR or ~/.cache/wbc)")
    p.add_argument("--exclude-bad", action="store_true", help="leave out bad files")
    p.set_defaults(run=_cmd_decode)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="wbc", description="Make, import, check and decode white-blood-cell datasets in the "
                                "report's layout (WBC_100/50/10/1, CAM16, pRCC); train one cell "
                                "(wbc train); predict with, evaluate and export trained models.",
        epilog=examples("wbc synth data --scale 0.1", "wbc check data",
                        "wbc train --data data --strategy pretrain_aug --epochs 10",
                        "wbc predict --model runs/NAME cells/ > predictions.csv"))
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quiet = output_options(verbose=False)
    common = CommandParser(add_help=False, parents=[quiet])
    common.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes that decode images (default: all cores)")
    limits = CommandParser(add_help=False)
    limits.add_argument("--max-image-pixels", type=_pixel_count, default=None, metavar="N",
                        help="refuse images whose header declares more pixels (default: "
                             f"${MAX_PIXELS_ENV} or 8192x8192); a count or WxH")
    _add_data_commands(sub, common, limits)
    from wbc.segment.command import add_segment_command

    add_segment_command(sub, common, limits)
    _add_model_commands(sub, [common, limits])

    # Commands from other installed packages (the Ray layer adds ``train``): wbc itself never
    # imports them. They get the output options (-q/-v) and choose their own others.
    for entry in sorted(entry_points(group="wbc.commands"), key=lambda e: e.name):
        entry.load()(sub, output_options(verbose=True))
    return parser


def _run(args: argparse.Namespace) -> int:
    from wbc.datasets import DatasetError

    try:
        max_image_pixels()
    except ValueError as err:
        _say(f"wbc {args.command}: error: {err}")
        return 2
    try:
        return int(args.run(args))
    except (UserError, DatasetError, ImageError) as err:
        _say(f"wbc {args.command}: error: {err}")
        return 2
    except KeyboardInterrupt:
        _say(f"wbc {args.command}: interrupted")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wbc`` console script and ``python -m wbc``."""
    args = build_parser().parse_args(argv)
    limit = getattr(args, "max_image_pixels", None)
    if limit is None:
        return _run(args)
    # Through the environment, which decoding worker processes inherit; put back afterwards
    # for a caller that runs commands in-process.
    previous = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(limit)
    try:
        return _run(args)
    finally:
        if previous is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous


if __name__ == "__main__":
    sys.exit(main())
