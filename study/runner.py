"""``study run``: data, Ray, pretraining once, then one Tune run for every cell.

The order, and where the time goes (``study.json`` records each part, ``study.study_record``):

1. data (``study.data``): the tree (a synthetic one is made once and cached), validated before
   Ray starts, and decoded once into the shared cache, so trials only map it;
2. Ray start-up (or connecting to a cluster under ``ray job submit``), then every node checked
   and given the decode cache (``study.nodes``): a node that cannot see the data or the results
   folder stops the study here, before any trial;
3. pretraining (``study.pretraining``), once per study, kept in the results folder for every
   cell that needs it;
4. the Tune run (``study.tune``): per-cell Optuna searches with per-cell ASHA, and each cell's
   final seeds as soon as its search is over; rows land in Parquet as trials finish;
5. the kept models (``study.results.kept``) settled, and scored on the spec's ``eval_data``
   trees (``study.evaluation``);
6. the summary (``study.outcome``): which cells finished, the time split, the utilisation.

``run_study(..., resume=True)`` continues a study from its results folder after a crash, a
SIGKILL or Ctrl-C: the Tune experiment is restored (searcher state included), finished trials
are not trained again, and rows are keyed so that none is lost or duplicated.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.data import (
    StudyError,
    check_strategies,
    check_tree,
    given_histology,
    histology_record,
    synthetic_tree,
    warm_caches,
    wbc100_counts,
)
from study.evaluation import eval_problem, score_kept_models
from study.local_ray import start_ray, untrusted
from study.outcome import FAILED, account, failed_cells, failure_summary, study_status
from study.provenance import provenance
from study.results import ResultsStore
from study.results.journal import mend_journal
from study.results.kept import settle_models
from study.results.owner import FolderBusy, own_folder
from study.spec import StudySpec
from study.study_record import Session, StudyRecord, now

if TYPE_CHECKING:
    from study.segmentation import PredictedMasks
from wbc.datasets import DatasetError, Tree, scan_tree
from wbc.datasets.cache import default_cache_dir
from wbc.training.inputs import wbc_decode_set

__all__ = ["StudyError", "run_study"]


class _Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def lap(self) -> float:
        now_ = time.perf_counter()
        seconds, self.started = now_ - self.started, now_
        return seconds


def _folder_problem(results: Path, *, new: bool) -> str | None:
    """Why ``results`` cannot hold this study's files, or None: checked before any work."""
    for parent in [results, *results.parents]:
        if parent.exists():
            break
    if parent.exists() and not parent.is_dir():
        where = "is a file" if parent == results else f"is under {parent}, which is a file"
        return f"--results {results} {where}; give a folder"
    if not new and not results.is_dir():
        return f"{results} does not exist; start a new study with `study run --results {results}`"
    if not os.access(parent, os.W_OK | os.X_OK):
        return (f"--results {results}: {parent} is not writable by this user; give a folder "
                "you can write, or fix its permissions")
    return None


def _cache_problem(cache_dir: str | None) -> str | None:
    """Why the decode cache cannot be written, or None: checked before the study starts."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as err:
        return (f"the decode cache {root} cannot be written ({err.strerror or err}); give "
                "--cache-dir a folder on a writable local disk (or set WBC_CACHE_DIR)")
    return None


def _occupied(results: Path) -> StudyError:
    return StudyError(f"{results} already holds a study; continue it with `study run --resume "
                      f"{results}` or give another --results folder")


def _claim(results: Path) -> None:
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StudyError(f"--results {results}: cannot create the folder "
                         f"({err.strerror or err}); give a folder you can write") from err


def _open_record(spec: StudySpec | None, store: ResultsStore, *, resume: bool,
                 say: Callable[[str], None]) -> tuple[StudySpec, StudyRecord]:
    """The study's record: read back to resume, or a new one created exclusively (refusing an
    occupied folder). Call with the folder owned (``own_folder``)."""
    results = store.root
    if resume:
        try:
            values = store.read_study()
        except FileNotFoundError as err:
            raise StudyError(f"{err}; start a new study with `study run --results "
                             f"{results}`") from err
        except ValueError as err:
            raise StudyError(str(err)) from err
        try:
            record = StudyRecord.from_dict(values)
            spec = StudySpec.from_record(record.spec)
        except KeyError as err:
            raise StudyError(f"{store.study_path}: not a study record (no {err}); restore it "
                             "from a copy, or start a new study in another folder") from err
        except (TypeError, ValueError) as err:
            raise StudyError(f"{store.study_path}: cannot resume from it ({err})") from err
        try:
            store.verify()
        except RuntimeError as err:
            raise StudyError(str(err)) from err
        say(f"resuming study {spec.name!r} in {results}")
        return spec, record
    if spec is None:
        raise ValueError("a new study needs a spec")
    from study.tune.analysis import tune_record

    record = StudyRecord(study=spec.name, preset=spec.preset, spec=spec.to_dict(),
                         provenance=provenance(), tune=tune_record())
    try:
        store.create_study(record.to_dict())
    except FileExistsError:
        raise _occupied(results) from None
    say(f"study {spec.name!r} ({spec.preset} preset): {len(spec.cells)} cells x "
        f"({spec.cell_search_trials} search + {spec.final_seeds} final"
        + (f", up to {spec.max_final_seeds} where undecided" if spec.max_final_seeds
           > spec.final_seeds else "") + f") trials -> {results}")
    return spec, record


def _joins_cluster() -> bool:
    """Whether this study runs on a cluster it joins (``ray job submit``, ``RAY_ADDRESS``) or
    one of several nodes, where only shared storage is seen by every node."""
    import ray

    if os.environ.get("RAY_ADDRESS", "local") != "local":
        return True
    return ray.is_initialized() and sum(1 for n in ray.nodes() if n.get("Alive")) > 1


def _load_tree(spec: StudySpec, results: Path, cache_dir: str | None,
               say: Callable[[str], None]) -> tuple[Tree, dict[str, Any]]:
    """The study's tree, scanned and checked (``StudyError`` if it cannot run every cell), and
    what ``study.json`` records of its source. Writes nothing but a synthetic tree."""
    if spec.data is None:
        # On a cluster the synthetic tree goes where every node reads it: the results folder.
        where = str(results / "data") if _joins_cluster() else cache_dir
        try:
            root = synthetic_tree(spec.synthetic_scale, spec.image_size,
                                  seed=spec.synthetic_seed, val_scale=spec.synthetic_val_scale,
                                  tissue_scale=spec.synthetic_tissue_scale,
                                  test_scale=spec.synthetic_test_scale, cache_dir=where,
                                  say=say)
        except OSError as err:
            raise StudyError(f"cannot write the synthetic tree under {where or 'the cache'} "
                             f"({err}); give --cache-dir a writable folder") from err
        data: dict[str, Any] = {
            "source": "synthetic", "scale": spec.synthetic_scale,
            "val_scale": spec.synthetic_val_scale, "tissue_scale": spec.synthetic_tissue_scale,
            "seed": spec.synthetic_seed,
            **({"test_scale": spec.synthetic_test_scale}
               if spec.synthetic_test_scale is not None else {}),
            "root": str(root)}  # where it was made: `wbc evaluate --data` takes it
    else:
        root = Path(spec.data)
        if not root.is_dir():
            raise StudyError(f"data folder {root} does not exist; give a tree in the report's "
                             "layout (see `wbc check --help`) or leave data unset for a "
                             "synthetic one")
        data = {"source": "tree", "root": spec.data}
    problem = eval_problem(spec)
    if problem is not None:
        raise StudyError(problem)
    tree = scan_tree(root, exclude_bad=spec.exclude_bad)
    try:  # CAM16 and pRCC kept apart from the tree, when the spec names their folders
        tree = given_histology(tree, cam16=spec.cam16, prcc=spec.prcc,
                               exclude_bad=spec.exclude_bad, say=say)
    except DatasetError as err:
        raise StudyError(str(err)) from err
    check_strategies(tree, spec.strategies, spec.base_config())
    check_tree(tree, spec.cells, spec.base_config())
    data["histology"] = histology_record(tree, synthetic_tree=spec.data is None)
    return tree, data


def _warm(spec: StudySpec, tree: Tree, record: StudyRecord, data: dict[str, Any],
          cache_dir: str | None, *, allow_data_change: bool) -> None:
    """Decode the tree into the cache, and fill ``record.data``; a resume refuses data that
    is not the data the study started on, unless ``allow_data_change``."""
    try:
        fingerprint = warm_caches(tree, spec.image_size, cam16=spec.needs_cam16,
                                  cache_dir=cache_dir)
    except OSError as err:
        raise StudyError(f"the decode cache {cache_dir or default_cache_dir()} cannot be "
                         f"written ({err}); give --cache-dir a folder on a writable local "
                         "disk (or set WBC_CACHE_DIR)") from err
    counts = wbc100_counts(tree)
    before = record.data.get("fingerprint")
    changes = list(record.data.get("changes", []))
    if before is not None and before != fingerprint:
        changed = [f"{split} {cls} {n} -> {counts[split].get(cls)}"
                   for split, by_class in record.data.get("wbc100_counts", {}).items()
                   for cls, n in by_class.items() if counts.get(split, {}).get(cls) != n]
        what = ("; ".join(changed[:6]) if changed
                else "same counts per class, other files or contents")
        if not allow_data_change:
            raise StudyError(
                f"the data changed since this study started (WBC fingerprint {before[:12]} -> "
                f"{fingerprint[:12]}; {what}): its trials would mix two datasets. Restore the "
                "data as it was, start a new study on the new data, or resume with "
                "--allow-data-change (the rows of each dataset are then kept apart: the report "
                "uses only the trials on the current data)")
        # Trials that ended before this session ran on the earlier data (study.report.load).
        changes.append({"at": record.sessions[-1].started_at, "from": before,
                        "to": fingerprint})
    record.data = {**data, "fingerprint": fingerprint, "wbc100_counts": counts,
                   "excluded_files": len(tree.excluded_files)}
    if changes:
        record.data["changes"] = changes


def _pretrain(spec: StudySpec, tree: Tree, results: Path, slots: int, cache_dir: str | None,
              say: Callable[[str], None]) -> tuple[dict[str, Any], float]:
    """Every starting weights source the study needs: (by source, slot-seconds in loops)."""
    from study.pretraining import (
        Executor,
        TaskExecutor,
        TrainExecutor,
        ensure_sources,
        largest_node_cpus,
        sources_of,
    )
    from study.train.trainer import RunSpec
    from wbc.training.pretrain import WeightsStore

    resources = spec.resources
    executor: Executor
    if resources.mode == "train":
        executor = TrainExecutor(RunSpec(
            storage_path=str(results / "train"), name="pretrain",
            workers=resources.workers_per_trial, use_gpu=resources.gpus_per_trial > 0,
            cpus_per_worker=resources.cpus_per_trial, cache_dir=cache_dir))
    else:
        use_gpu = resources.gpus_per_trial > 0
        executor = TaskExecutor(cpus=largest_node_cpus(gpu=use_gpu), use_gpu=use_gpu,
                                storage=str(results / "train"), cache_dir=cache_dir)
    done = ensure_sources(sources_of(spec.strategies), tree, spec.base_config(),
                          spec.pretrain_settings(), WeightsStore(results), executor,
                          cache_dir=cache_dir, say=say)
    slot_seconds = sum(p.loop_seconds_this_session
                       * min(float(slots), p.cpus / resources.cpus_per_trial)
                       for p in done.values())
    return done, slot_seconds


def _segment(spec: StudySpec, tree: Tree, results: Path, pretrained: dict[str, Any],
             cache_dir: str | None, say: Callable[[str], None]) -> PredictedMasks | None:
    """The predicted masks of the strategies that paste them (``study.segmentation``), or
    None when no strategy does."""
    if not spec.needs_segmentation:
        return None
    from study.pretraining import largest_node_cpus
    from study.segmentation import ensure_masks

    encoder = (None if spec.segment_encoder == "random"
               else Path(pretrained[spec.segment_encoder].weights))
    use_gpu = spec.resources.gpus_per_trial > 0
    try:
        return ensure_masks(tree, spec.segmentation, results, image_size=spec.image_size,
                            encoder=encoder, cpus=largest_node_cpus(gpu=use_gpu),
                            use_gpu=use_gpu, cache_dir=cache_dir, say=say)
    except DatasetError as err:
        raise StudyError(f"segmentation: {err}") from err


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
              say: Callable[[str], None] | None = None,
              allow_data_change: bool = False) -> dict[str, Any]:
    """Run (or resume) a study into ``results``; returns the ``study.json`` record.

    The driver owns the folder from its creation to its end (``study.results.owner``): a
    second driver on it is refused, naming the first. A new study's data is checked before the
    folder is created, so a failed check leaves nothing behind. A ``StudyError`` after that (a
    node that cannot see the storage, changed data on resume) leaves the study ``failed`` with
    the reason in ``study.json``; nothing computed before is lost."""
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    results = results.absolute()
    problem = _folder_problem(results, new=not resume) or _cache_problem(cache_dir)
    if problem is not None:
        raise StudyError(problem)
    store = ResultsStore(results)
    tree = data = None
    if not resume:
        if store.study_path.exists():
            raise _occupied(results)
        if spec is None:
            raise ValueError("a new study needs a spec")
        tree, data = _load_tree(spec, results, cache_dir, say)
    else:
        refusal = untrusted(results)
        if refusal is not None:
            raise StudyError(refusal)
    _claim(results)
    try:
        with own_folder(results, command="study run --resume" if resume else "study run"):
            spec, record = _open_record(spec, store, resume=resume, say=say)
            store.compact()  # row files a killed session left
            mend_journal(results)  # and the Optuna journal's lock, or a line cut short
            record.status, record.error = "running", None
            record.sessions.append(Session(started_at=now(), resumed=resume))
            store.write_study(record.to_dict())
            try:
                _run(spec, record, store, tree, data, resume=resume, quiet=quiet,
                     cache_dir=cache_dir, say=say, allow_data_change=allow_data_change)
            except StudyError as err:
                record.status, record.error = FAILED, str(err)
                store.write_study(record.to_dict())
                raise
    except FolderBusy as err:
        raise StudyError(str(err)) from None
    except PermissionError as err:
        raise StudyError(f"{err.filename or results}: not writable ({err.strerror}); give a "
                         "--results folder you can write") from err
    return record.to_dict()


def _run(spec: StudySpec, record: StudyRecord, store: ResultsStore, tree: Tree | None,
         data: dict[str, Any] | None, *, resume: bool, quiet: bool, cache_dir: str | None,
         say: Callable[[str], None], allow_data_change: bool) -> None:
    from study.nodes import NodeProblem, check_nodes
    from study.tune import StudyContext, reconcile, run_experiment

    clock = _Clock()
    session_started = clock.started
    session, results = record.sessions[-1], store.root
    if tree is None or data is None:
        tree, data = _load_tree(spec, results, cache_dir, say)
    _warm(spec, tree, record, data, cache_dir, allow_data_change=allow_data_change)
    session.data_seconds = clock.lap()
    store.write_study(record.to_dict())

    start_ray()
    session.ray_startup_seconds = clock.lap()
    slots = session.slots = _slots(spec)
    if not resume:
        from study.estimate import estimate

        guess = estimate(spec, tree, slots)
        if guess is not None:
            say(guess.line())
    try:
        record.nodes = check_nodes(results, wbc_decode_set(tree), spec.image_size,
                                   record.data["fingerprint"], cache_dir=cache_dir, say=say)
    except NodeProblem as err:
        raise StudyError(str(err)) from err
    session.node_check_seconds = clock.lap()

    pretrained, session.pretrain_loop_slot_seconds = _pretrain(spec, tree, results, slots,
                                                               cache_dir, say)
    if pretrained:
        record.pretrain = {source: {**p.record, "key": p.key}
                           for source, p in pretrained.items()}
    session.pretrain_seconds = clock.lap()
    store.write_study(record.to_dict())

    masks = _segment(spec, tree, results, pretrained, cache_dir, say)
    if masks is not None:
        record.segmentation = masks.record
        session.segmentation_seconds = clock.lap()
        store.write_study(record.to_dict())

    context = StudyContext(spec=spec, tree=tree, results=str(results), cache_dir=cache_dir,
                           pretrained={source: (str(p.weights), p.key)
                                       for source, p in pretrained.items()},
                           wbc_fingerprint=record.data["fingerprint"],
                           masked_tree=masks.tree if masks else None,
                           masked_fingerprint=masks.fingerprint if masks else None)
    grid, interrupted = run_experiment(context, slots, resume=resume, quiet=quiet)
    session.tune_seconds = clock.lap()
    reconcile(spec, grid, store)
    store.compact()
    # keep_models applied to every cell (the callback does it as cells end; a crash between
    # leaves it to here), then the kept models scored on the eval_data trees.
    settle_models(results, list(store.trial_rows().values()), keep=spec.keep_models,
                  final_seeds=spec.final_seeds)
    if not interrupted:
        score_kept_models(spec, results, cache_dir=cache_dir, say=say)
    session.eval_seconds = clock.lap()

    session.wall_seconds = time.perf_counter() - session_started
    session.finished_at = now()
    account(spec, record, session, store, slots)
    record.status = study_status(spec, store, interrupted)
    record.failed_cells = failed_cells(store)
    record.error = failure_summary(store) if record.status == FAILED else None
    store.write_study(record.to_dict())
