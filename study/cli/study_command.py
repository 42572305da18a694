"""``study``: the whole comparison as one Ray Tune study, and its report.

``study run`` with no arguments makes a small synthetic tree and runs the quick preset on this
machine. Exit status: 0 the study completed; 1 it stopped before the end (resume it); 2 a usage
or input error, said in one line that names the file or value and what to do (a node that cannot
see the data or the results folder, and a folder in use by another driver, included); 3 it ran
to its end but some or all of its trials failed (the cells and errors are named; ``--resume``
retries them); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from study.cli.output import say, say_warnings
from wbc.cli import package_version

__all__ = ["build_parser", "main"]


class UserError(Exception):
    """A mistake in what the user asked for; printed without a traceback."""



_RUN_EXAMPLES = (
    "study run   (the quick preset on a synthetic tree made once)",
    "study run --data data --preset paper --results /shared/results/paper",
    "study run --set 'subsets=[\"WBC_10\"]' --set search_trials=2 --set final_seeds=2 -q",
    "study run --resume results/quick-20250101-120000")


def build_parser() -> argparse.ArgumentParser:
    from wbc.cli import CommandParser, examples, output_options

    parser = CommandParser(
        prog="study", description="The whole comparison (label budgets x training strategies) "
                                  "as one Ray Tune study, and its report.",
        epilog=examples("study run", "study run --preset quick-ssl --data data",
                        "study report results/quick-20250101-120000"))
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub: Any = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", parents=[output_options(verbose=True)],
                       help="run (or --resume) a study; no arguments: the quick preset on a "
                            "synthetic tree",
                       description="Run a study, or continue one (--resume): every cell's "
                                   "search, then its final seeds, rows in Parquet as trials end, "
                                   "and the report at the end. Exit status: 0 complete; 1 "
                                   "stopped before its end (resume it); 2 a usage or input "
                                   "error; 3 some or all trials failed; 130 Ctrl-C.",
                       epilog=examples(*_RUN_EXAMPLES))
    from study.spec import PRESETS

    p.add_argument("--preset", default="quick", choices=tuple(PRESETS),
                   help="quick: the report's three strategies on a synthetic tree, about 10 "
                        "minutes on 2 CPU cores; quick-ssl: the same with the two "
                        "self-supervised strategies; quick-masks: the same with "
                        "pretrain_aug_predicted (masks for all data, predicted); paper: the report at full scale, for GPUs "
                        "(default: %(default)s)")
    p.add_argument("--config", type=Path, default=None,
                   help="a study spec file (TOML or JSON); its keys override the preset's")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="NAME=VALUE",
                   help="override one spec field, e.g. --set final_seeds=5 --set "
                        "space.lr_max=0.3 --set resources.gpus_per_trial=0.25 (repeatable)")
    p.add_argument("--data", default=None,
                   help="dataset root in the report's layout (default: a synthetic tree)")
    p.add_argument("--cam16", default=None, metavar="FOLDER",
                   help="CAM16 kept outside the tree: a folder that holds CAM16/{train,val,test}/"
                        "data/{normal,tumor}/ or is that layout; it replaces the tree's own "
                        "(sets the spec's cam16)")
    p.add_argument("--prcc", default=None, metavar="FOLDER",
                   help="pRCC kept outside the tree: a folder that holds pRCC/train/data/ or is "
                        "that layout (sets the spec's prcc)")
    p.add_argument("--eval-data", action="append", default=[], metavar="TREE",
                   help="another tree (the report's layout, or ImageFolder) every kept model "
                        "is scored on after the study: out-of-domain figures in eval.parquet "
                        "and the report (repeatable; adds to the spec's eval_data)")
    p.add_argument("--name", default=None, help="study name (default: the preset's)")
    p.add_argument("--results", type=Path, default=None,
                   help="results folder to create (default: results/<name>-<date-time>); must "
                        "be absolute under `ray job submit`, and shared storage on a cluster")
    p.add_argument("--resume", type=Path, default=None, metavar="RESULTS",
                   help="continue the study in this results folder where it stopped")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: go on although the data changed since the study "
                        "started; the report then uses only the trials on the current data")
    p.add_argument("--cache-dir", default=None,
                   help="decode and synthetic-data cache (default: $WBC_CACHE_DIR or "
                        "~/.cache/wbc)")
    p.add_argument("--print-spec", action="store_true",
                   help="print the resolved spec as JSON and exit")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.md and figures/ at the end (`study report` can)")
    p.set_defaults(run=_cmd_run)

    p = sub.add_parser("report", help="tables and figures from a results folder (or a Ray Tune "
                                      "experiment folder)",
                       epilog=examples("study report results/quick-20250101-120000",
                                       "study report results/NAME --format png,svg,pdf",
                                       "study report results/NAME/tune --out /tmp/report"))
    p.add_argument("results", type=Path, help="a study's results folder, or a Tune experiment")
    p.add_argument("--out", type=Path, default=None,
                   help="where report.md and figures/ go (default: the results folder)")
    p.add_argument("--format", default="png", metavar="FORMATS",
                   help="figure formats, comma-separated: png (200 dpi, always written), svg, "
                        "pdf (default: %(default)s)")
    p.set_defaults(run=_cmd_report)
    return parser


def _cmd_report(args: argparse.Namespace) -> int:
    from study.report import terminal_table, write_report

    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    try:
        path, report = write_report(args.results, args.out,
                                    formats=["png", *(f for f in formats if f != "png")])
    except PermissionError as err:
        raise UserError(f"{err.filename or args.out}: not writable ({err.strerror}); give "
                        "--out a folder you can write") from err
    except (FileNotFoundError, NotADirectoryError, RuntimeError, ValueError) as err:
        raise UserError(str(err)) from err
    except OSError as err:
        raise UserError(f"{err.filename or args.out}: {err.strerror or err}") from err
    print(terminal_table(report))
    for line in report.missing:
        print(f"missing: {line}")
    print(f"wrote {path} and {path.parent / 'figures'}/")
    return 0


def _resolve_spec(args: argparse.Namespace) -> Any:
    from study.spec import load_spec, preset

    try:
        spec = preset(args.preset)
        if args.config is not None:
            spec = load_spec(args.config, base=spec)
        spec = spec.with_overrides(list(args.overrides))
        if args.data is not None:
            spec = spec.replace(data=str(Path(args.data).absolute()))
        # Absolute, from the options or the spec: `ray job submit` and --resume run elsewhere.
        folders = {name: getattr(args, name) or getattr(spec, name) for name in ("cam16", "prcc")}
        spec = spec.replace(**{name: str(Path(folder).absolute()) if folder else None
                               for name, folder in folders.items()})
        eval_data = [*spec.eval_data, *(args.eval_data or [])]
        if eval_data:  # absolute: under `ray job submit` the working folder is a copy
            spec = spec.replace(eval_data=[str(Path(p).absolute()) for p in eval_data])
        if args.name is not None:
            spec = spec.replace(name=args.name)
    except ValueError as err:
        raise UserError(str(err)) from err
    return spec


def _results_folder(args: argparse.Namespace, name: str) -> Path:
    under_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    if args.results is None:
        if under_job:
            raise UserError("under `ray job submit` the working directory is a temporary "
                            "copy: give --results /absolute/path (shared storage on a "
                            "cluster)")
        return Path("results") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if under_job and not args.results.is_absolute():
        raise UserError(f"--results {args.results}: must be absolute under `ray job submit` "
                        "(the working directory is a temporary copy)")
    return Path(args.results)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _summary(record: dict[str, Any], results: Path) -> str:
    from study.results import EVAL_FILE
    from study.results.kept import kept_models

    session = record["sessions"][-1]
    parts = [f"study {record['study']!r}: {record['status']} in {session['wall_seconds']:.0f} s "
             f"(Ray start-up {session.get('ray_startup_seconds', 0):.0f} s, data "
             f"{session.get('data_seconds', 0):.0f} s, pretraining "
             f"{session.get('pretrain_seconds', 0):.0f} s, "
             + (f"segmentation {session['segmentation_seconds']:.0f} s, "
                if session.get("segmentation_seconds") else "")
             + f"trials {session.get('tune_seconds', 0):.0f} s on {session.get('slots')} slot(s))"]
    overhead = session.get("per_trial_overhead_seconds")
    held = (f"{session['held_device']}-time held ({session['held_device_seconds']:.0f} "
            f"{session['held_device']}-seconds)" if "held_device" in session else "slot time")
    parts.append(f"{session.get('trials_run', 0)} trials run; inside training loops "
                 f"{_pct(session.get('inside_training_loops_fraction', math.nan))} of the "
                 f"{held}" + (f"; per-trial overhead {overhead:.1f} s" if overhead is not None
                              else ""))
    parts.append(f"results: {results}  (trials.parquet, epochs.parquet, study.json; the "
                 "searches in optuna.journal, Tune's experiment in tune/)")
    models = kept_models(results)
    if models:
        parts.append(f"models: {len(models)} kept in {results / 'models'}/<cell>/seed-<seed> "
                     f"(e.g. {models[0].folder}); use one with: wbc predict --model FOLDER "
                     "IMAGES...")
    if (results / EVAL_FILE).exists():
        parts.append(f"out of domain: {results / EVAL_FILE} (the kept models on "
                     f"{len(record['spec'].get('eval_data') or [])} other tree(s))")
    failed = record.get("failed_cells") or {}
    if record["status"] == "failed" and record.get("error"):
        parts.append(record["error"])
    elif failed:
        parts.append(f"{sum(failed.values())} trial(s) failed, in "
                     + ", ".join(f"{cell} ({n})" for cell, n in sorted(failed.items()))
                     + "; trials.parquet holds their errors (status 'error')")
    changes = (record.get("data") or {}).get("changes") or []
    if changes:
        parts.append(f"the data changed at {changes[-1]['at']} (resumed with "
                     "--allow-data-change): the report uses only the trials that ended after it")
    if record["status"] != "complete":
        parts.append(f"continue with: study run --resume {results}"
                     + (" (it retries the failed trials)" if failed else ""))
    return "\n".join(parts)



def _cmd_run(args: argparse.Namespace) -> int:
    from study.local_ray import quiet_ray

    quiet_ray(verbose=args.verbose)  # before Ray is imported
    from study.runner import StudyError, run_study

    if args.resume is not None:
        if args.config or args.overrides or args.data or args.name or args.results or \
                args.eval_data or args.cam16 or args.prcc:
            raise UserError("--resume continues a study with its own spec; drop --config, "
                            "--set, --data, --cam16, --prcc, --eval-data, --name and --results")
        spec, results = None, Path(args.resume)
    elif args.allow_data_change:
        raise UserError("--allow-data-change goes with --resume (a new study records the data "
                        "it starts on)")
    else:
        spec = _resolve_spec(args)
        if args.print_spec:
            print(json.dumps(spec.to_dict(), indent=2))
            return 0
        results = _results_folder(args, spec.name)
    try:
        record = run_study(spec, results, resume=args.resume is not None, quiet=args.quiet,
                           cache_dir=args.cache_dir,
                           say=say_warnings if args.quiet else say,
                           allow_data_change=args.allow_data_change)
    except StudyError as err:
        raise UserError(str(err)) from err
    print(_summary(record, results.absolute()))
    if not args.no_report:
        _report_after_run(results.absolute())
    return {"complete": 0, "complete with errors": 3, "failed": 3}.get(record["status"], 1)


def _report_after_run(results: Path) -> None:
    """The study's report, written where its rows are; a failure here loses no result."""
    from study.report import terminal_table, write_report

    try:
        path, report = write_report(results)
    except Exception as err:  # the rows are safe on disk: say so, and how to retry
        say(f"study run: the report could not be written ({type(err).__name__}: {err}); the "
             f"results are complete on disk: run `study report {results}`")
        return
    print(terminal_table(report))
    print(f"report: {path} (answers first; figures in {path.parent / 'figures'}/)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``study`` console script and ``python -m study``."""
    from wbc.datasets import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (UserError, DatasetError) as err:
        say(f"study {args.command}: error: {err}")
        return 2
    except KeyboardInterrupt:
        say(f"study {args.command}: interrupted; continue with `study run --resume RESULTS`")
        return 130
