"""``study run``: data, Ray, CAM16 pretraining once, then one Tune run for every cell.

The order, and where the time goes (``study.json`` records each part):

1. data: the tree (a synthetic one is made once and cached), validated before Ray starts, and
   decoded once into the shared cache, so trials only map it;
2. Ray start-up (or connecting to a cluster under ``ray job submit``);
3. CAM16 pretraining, once per study, kept in the results folder for every cell that needs it;
4. the Tune run (``study.search``): per-cell Optuna searches with per-cell ASHA, and each cell's
   final seeds as soon as its search is over; rows land in Parquet as trials finish;
5. the summary: which cells finished, the time split and the utilisation.

``run_study(..., resume=True)`` continues a study from its results folder after a crash, a
SIGKILL or Ctrl-C: the Tune experiment is restored (searcher state included), finished trials
are not trained again, and rows are keyed so that none is lost or duplicated.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.results import ResultsStore
from study.spec import StudySpec
from wbc.datasets import DatasetError, Tree, class_counts, scan_tree
from wbc.hardware import cpu_model
from wbc.layout import WBC_CLASSES

__all__ = ["StudyError", "cpu_model", "provenance", "run_study", "synthetic_tree"]

TUNE_DIR = "tune"  # the Tune experiment inside the results folder


class StudyError(Exception):
    """A problem the user can fix (bad data, an occupied results folder); the message says how."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def synthetic_tree(scale: float, image_size: int, *, seed: int = 0,
                   cache_dir: Path | str | None = None,
                   say: Callable[[str], None] | None = None) -> Path:
    """The synthetic tree for (scale, resolution, seed), made once per cache and reused."""
    import fcntl

    from wbc.cache import default_cache_dir
    from wbc.synth import synthesize

    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    size = max(64, image_size)  # drawn at 64 px at least: small cells need the detail
    root = base / "synth" / f"scale{scale:g}-{size}px-seed{seed}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f"{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two studies starting at once make it once
        if not (root / "synth.json").exists():
            if say is not None:
                say(f"making a synthetic tree (scale {scale:g}, {size} px, seed {seed}); "
                    "it is cached for later runs")
            synthesize(root, scale=scale, image_size=size, seed=seed, overwrite=True)
    return root


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], check=True, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict[str, Any]:
    """Versions, hardware and commit: what a reader needs to trust or repeat the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "ray", "optuna", "numpy", "pandas", "pyarrow",
                    "pillow", "scikit-learn", "wbc-study"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"git_commit": _git_commit(), "code_sha256": _code_digest(), "versions": versions,
            "hardware": {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                         "memory_gib": memory, "gpus": gpus,
                         "os": f"{platform.system()} {platform.machine()}"}}


def _code_digest() -> str:
    """A digest of the project's own source: identifies the code where there is no git
    checkout (``ray job submit`` uploads the working tree without ``.git``)."""
    here = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*here.glob("wbc/*.py"), *here.glob("study/*.py")]):
        digest.update(path.relative_to(here).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class _Clock:
    started: float

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.started = now - self.started, now
        return seconds


def _check_tree(tree: Tree, spec: StudySpec) -> None:
    from wbc.data import plan_wbc

    if not tree.usable:
        problems = "\n".join(f"  {p}" for p in tree.errors[:10])
        more = f"\n  ... and {len(tree.errors) - 10} more" if len(tree.errors) > 10 else ""
        raise StudyError(f"{tree.root}: the tree is not usable:\n{problems}{more}\nrun "
                         f"`wbc check {tree.root}` for the full list; fix or remove the files, "
                         "or set exclude_bad=true to leave them out")
    base = spec.base_config()
    for subset, strategy in spec.cells:
        try:
            plan_wbc(tree, base.replace(subset=subset, strategy=strategy))
        except DatasetError as err:
            raise StudyError(f"cell {subset} x {strategy}: {err}") from err


def _warm_caches(tree: Tree, spec: StudySpec, cache_dir: str | None) -> str:
    from wbc.cache import decode_samples
    from wbc.data import plan_cam16

    samples = {s.path: s for group in tree.wbc.values() for s in group}
    decoded = decode_samples(list(samples.values()), spec.image_size, name="WBC",
                             cache_dir=cache_dir)
    if spec.needs_cam16:
        plan = plan_cam16(tree, image_size=spec.image_size)
        decode_samples([*plan.train, *plan.val, *plan.test], spec.image_size, name="CAM16",
                       cache_dir=cache_dir)
    return decoded.fingerprint


def _slots(spec: StudySpec) -> int:
    """How many trials run at once: the cluster's resources over what a trial holds."""
    import ray

    resources = spec.resources
    total = ray.cluster_resources()
    per_trial_cpu = resources.cpus_per_trial * (resources.workers_per_trial
                                                if resources.mode == "train" else 1)
    slots = int(total.get("CPU", 0) // per_trial_cpu) if per_trial_cpu else 1 << 16
    if resources.gpus_per_trial > 0:
        per_trial_gpu = resources.gpus_per_trial * (resources.workers_per_trial
                                                    if resources.mode == "train" else 1)
        slots = min(slots, int(total.get("GPU", 0) // per_trial_gpu))
    if resources.max_concurrent:
        slots = min(slots, resources.max_concurrent) if slots else resources.max_concurrent
    if slots < 1:
        raise StudyError(f"the cluster ({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} "
                         f"GPUs) cannot fit one trial ({per_trial_cpu:g} CPUs, "
                         f"{resources.gpus_per_trial:g} GPUs); lower resources.cpus_per_trial "
                         "or resources.gpus_per_trial, or set resources.max_concurrent for an "
                         "autoscaling cluster")
    return slots


def run_study(spec: StudySpec | None, results: Path, *, resume: bool = False,
              quiet: bool = False, cache_dir: str | None = None,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a study into ``results``; returns the ``study.json`` record."""
    clock = _Clock(time.perf_counter())
    session_started = clock.started
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    results = results.absolute()
    store = ResultsStore(results)
    if resume:
        try:
            record = store.read_study()
        except FileNotFoundError as err:
            raise StudyError(f"{err}; start a new study with `study run --results "
                             f"{results}`") from err
        spec = StudySpec.from_dict(record["spec"])
        say(f"resuming study {spec.name!r} in {results}")
    else:
        if spec is None:
            raise ValueError("a new study needs a spec")
        if store.study_path.exists():
            raise StudyError(f"{results} already holds a study; continue it with `study run "
                             f"--resume {results}` or give another --results folder")
        record = {"study": spec.name, "preset": spec.preset, "spec": spec.to_dict(),
                  "status": "running", "created_at": _now(), "sessions": [],
                  "provenance": provenance()}
        say(f"study {spec.name!r} ({spec.preset} preset): {len(spec.cells)} cells x "
            f"({spec.search_trials} search + {spec.final_seeds} final) trials -> {results}")
    session: dict[str, Any] = {"started_at": _now(), "resumed": resume}
    record["status"] = "running"
    record["sessions"].append(session)
    store.write_study(record)

    if spec.data is None:
        root = synthetic_tree(spec.synthetic_scale, spec.image_size, seed=spec.synthetic_seed,
                              cache_dir=cache_dir, say=say)
        record["data"] = {"source": "synthetic", "scale": spec.synthetic_scale,
                          "seed": spec.synthetic_seed}
    else:
        root = Path(spec.data)
        if not root.is_dir():
            raise StudyError(f"data folder {root} does not exist; give a tree in the report's "
                             "layout (see `wbc check --help`) or leave data unset for a "
                             "synthetic one")
        record["data"] = {"source": "tree", "root": spec.data}
    tree = scan_tree(root, exclude_bad=spec.exclude_bad)
    _check_tree(tree, spec)
    record["data"]["fingerprint"] = _warm_caches(tree, spec, cache_dir)
    record["data"]["wbc100_counts"] = {
        split: dict(zip(WBC_CLASSES, map(int, class_counts(tree.wbc.get(f"WBC_100/{split}", ()),
                                                            len(WBC_CLASSES))[0]), strict=True))
        for split in ("train", "val", "test")}
    record["data"]["excluded_files"] = len(tree.excluded_files)
    session["data_seconds"] = clock.lap()
    store.write_study(record)

    import ray

    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=None)
    session["ray_startup_seconds"] = clock.lap()
    slots = _slots(spec)
    session["slots"] = slots

    from study.pretraining import ensure_pretrained

    pretrained = ensure_pretrained(tree, spec, results, cache_dir=cache_dir, say=say)
    if pretrained:
        record["pretrain"] = {source: {**p.record, "key": p.key}
                              for source, p in pretrained.items()}
        session["pretrain_loop_slot_seconds"] = sum(
            p.loop_seconds_this_session * min(float(slots), p.cpus / spec.resources.cpus_per_trial)
            for p in pretrained.values())
    session["pretrain_seconds"] = clock.lap()
    store.write_study(record)

    grid, interrupted = _tune(spec, tree, results, pretrained, slots, resume=resume,
                              quiet=quiet, cache_dir=cache_dir)
    session["tune_seconds"] = clock.lap()
    _reconcile(spec, grid, store)

    session["wall_seconds"] = time.perf_counter() - session_started
    session["finished_at"] = _now()
    _account(spec, record, session, store, slots)
    record["status"] = _status(spec, store, interrupted)
    store.write_study(record)
    return record


def _tune(spec: StudySpec, tree: Tree, results: Path, pretrained: dict[str, Any], slots: int, *,
          resume: bool, quiet: bool, cache_dir: str | None) -> tuple[Any, bool]:
    import optuna
    from ray import tune

    from study.callbacks import StudyCallback
    from study.search import CellScheduler, CellSearcher, cell_name
    from study.space import cell_space
    from study.trial import METRIC, MODE, StudyContext, with_resources

    base = spec.base_config().to_flat()
    context = StudyContext(
        study=spec.name, tree=tree, base=base, results=str(results), resources=spec.resources,
        checkpoint_every=spec.checkpoint_every, redraw_subsets=spec.redraw_subsets,
        pretrained={source: str(p.weights) for source, p in pretrained.items()},
        pretrain_keys={source: p.key for source, p in pretrained.items()}, cache_dir=cache_dir)
    trainable = with_resources(context)
    experiment = results / TUNE_DIR
    # Tune's own status tables and banners: this study prints its own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
    else:
        callback = StudyCallback(
            spec.name, str(results), base=base, redraw_subsets=spec.redraw_subsets,
            checkpoint_every=spec.checkpoint_every,
            cells=[cell_name(s, t) for s, t in spec.cells], search_trials=spec.search_trials,
            final_seeds=spec.final_seeds,
            searched={cell_name(s, t): tuple(cell_space(spec.space, t)) for s, t in spec.cells},
            quiet=quiet)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, num_samples=-1, max_concurrent_trials=slots,
                search_alg=CellSearcher(spec, metric=METRIC, mode=MODE),
                scheduler=CellScheduler(spec, metric=METRIC, mode=MODE),
                # Inline trials reuse their process (torch imported, cache mapped once);
                # a Ray Train driver function cannot be reset, so it is not reused.
                reuse_actors=spec.resources.mode == "inline",
                trial_dirname_creator=lambda trial: trial.config["trial_key"].replace("/", "-"),
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR, storage_path=str(results), verbose=0, callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    grid = tuner.fit()
    unfinished = [grid[i] for i in range(len(grid))
                  if grid[i].error is None and not _ended(grid[i])]
    return grid, bool(unfinished)


def _ended(result: Any) -> bool:
    metrics = result.metrics or {}
    return bool(metrics.get("done") or "test_accuracy" in metrics or metrics.get("replayed"))


def _reconcile(spec: StudySpec, grid: Any, store: ResultsStore) -> None:
    """Rows for ended trials the callback could not write (a crash between the end of a trial
    and its row): built from Tune's own record of the trial."""
    from study.callbacks import _epoch_row, trial_row
    from study.trial import trial_config

    rows = store.trial_rows()
    base = spec.base_config().to_flat()
    for index in range(len(grid)):
        result = grid[index]
        config = result.config or {}
        key = config.get("trial_key")
        if key is None or key in rows or (result.error is None and not _ended(result)):
            continue
        frame = result.metrics_dataframe
        epochs = []
        if frame is not None and "epoch" in frame:
            seen: dict[int, dict[str, Any]] = {}
            for record in frame.to_dict("records"):
                if record.get("epoch") == record.get("epoch"):  # not NaN
                    seen[int(record["epoch"])] = _epoch_row(record)
            epochs = [seen[k] for k in sorted(seen)]
        metrics = result.metrics or {}
        final = metrics if "test_accuracy" in metrics else None
        status = "error" if result.error is not None else ("completed" if final else "stopped")
        settings = trial_config(base, config, redraw_subsets=spec.redraw_subsets,
                                checkpoint_every=spec.checkpoint_every).to_flat()
        store.write_trial(trial_row(spec.name, config, settings, epochs, final, status=status,
                                    tune_trial_id=str(metrics.get("trial_id", "")),
                                    error=str(result.error) if result.error else None,
                                    last_report=metrics), epochs)


def _account(spec: StudySpec, record: dict[str, Any], session: dict[str, Any],
             store: ResultsStore, slots: int) -> None:
    """Split the wall time: Ray start-up, data, pretraining, and inside the Tune run the time
    inside training loops against per-trial overhead. Utilisation is slot-seconds inside
    training loops over slot-seconds held (wall time x concurrent trial slots)."""
    import pandas as pd

    trials = store.trials()
    started = pd.Timestamp(session["started_at"])
    finished = pd.to_datetime(trials["finished_at"], utc=True, format="mixed") \
        if len(trials) else pd.Series([], dtype="datetime64[ns, UTC]")
    mine = trials[finished >= started] if len(trials) else trials
    loop = float(mine["train_loop_seconds"].fillna(0).sum()) if len(mine) else 0.0
    trained = int((mine["status"] != "error").sum()) if len(mine) else 0
    tune_slot_seconds = session["tune_seconds"] * slots
    session["trials_run"] = len(mine)
    session["train_loop_slot_seconds"] = loop
    # Slot time of the Tune run outside training loops, per trial: what a trial costs the
    # study, idle slots included (a cell's finals wait for its search).
    session["per_trial_overhead_seconds"] = ((tune_slot_seconds - loop) / trained
                                             if trained else None)
    # Inside a trial, outside its loops: start-up, data, model, reports (Tune's time_total_s).
    inside = mine["wall_seconds"] - mine["train_loop_seconds"] if len(mine) else mine
    session["trial_overhead_seconds"] = (float(inside.dropna().mean())
                                         if len(mine) and inside.notna().any() else None)
    in_loops = loop + session.get("pretrain_loop_slot_seconds", 0.0)
    session["inside_training_loops_fraction"] = in_loops / (session["wall_seconds"] * slots)
    # What the slots hold, in device-seconds: a trial's share of a GPU (or its CPUs) x slots.
    resources = spec.resources
    device, share = (("GPU", resources.gpus_per_trial) if resources.gpus_per_trial > 0
                     else ("CPU", resources.cpus_per_trial))
    if resources.mode == "train":
        share *= resources.workers_per_trial
    session["held_device"] = device
    session["held_device_seconds"] = session["wall_seconds"] * slots * share
    record["wall_seconds"] = sum(s.get("wall_seconds", 0.0) for s in record["sessions"])


def _status(spec: StudySpec, store: ResultsStore, interrupted: bool) -> str:
    trials = store.trials()
    expected = len(spec.cells) * spec.search_trials
    search = int((trials["phase"] == "search").sum()) if len(trials) else 0
    if interrupted or search < expected:
        return "interrupted"
    return "complete"
