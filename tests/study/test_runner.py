"""A small study on a real local Ray: Parquet rows, Tune's own analysis, errors, kill and resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from study.results import ResultsStore
from study.runner import run_study
from study.spec import StudySpec
from study.trial_seeds import final_seed
from wbc.datasets import scan_tree
from wbc.datasets.cache import decode_samples
from wbc.datasets.layout import WBC_CLASSES
from wbc.training.inputs import plan_cam16
from wbc.training.pretrain import WeightsStore, pretrain_config, pretrain_key

SMALL: dict[str, Any] = {
    "name": "small", "image_size": 32, "subsets": ["WBC_100", "WBC_10"],
    "strategies": ["scratch", "pretrain_aug"], "search_trials": 2, "startup_trials": 1,
    "epochs": 2, "grace_epochs": 1, "final_seeds": 2, "max_final_seeds": 0,
    "pretrain_epochs": 1,
    "train": {"batch_size": 16, "bn_recalibrate": 32, "min_epoch_images": 32,
              "color_jitter": 0.0, "warmup_epochs": 0.5},
}


def _spec(tiny_root: Path, **changes: Any) -> StudySpec:
    return StudySpec.from_dict({**StudySpec().to_dict(), **SMALL, "data": str(tiny_root),
                                **changes})


def _expected_keys(spec: StudySpec) -> set[str]:
    keys = set()
    for subset, strategy in spec.cells:
        cell = f"{subset}-{strategy}"
        keys |= {f"{cell}/search-{i:02d}" for i in range(spec.search_trials)}
        keys |= {f"{cell}/final-seed{final_seed(spec.seed, k)}" for k in range(spec.final_seeds)}
    return keys


def _check_rows(results: Path, spec: StudySpec) -> pd.DataFrame:
    trials = pd.read_parquet(results / "trials.parquet")
    epochs = pd.read_parquet(results / "epochs.parquet")
    assert sorted(trials["trial_id"]) == sorted(_expected_keys(spec))  # each exactly once
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for row in trials.itertuples():
        curve = epochs[epochs["trial_id"] == row.trial_id]["epoch"].tolist()
        assert sorted(curve) == list(range(1, int(row.epochs_run) + 1)), row.trial_id
    finals = trials[trials["phase"] == "final"]
    assert (finals["status"] == "completed").all()
    assert set(trials["status"]) <= {"completed", "stopped"}
    return trials


def _shifted_copy(tiny_root: Path, out: Path) -> Path:
    """An ImageFolder tree of the tiny tree's val images under another stain and light (a
    colour cast and a dimmer lamp): the study's out-of-domain tree."""
    from PIL import Image

    gain = np.array([0.8, 1.05, 1.2])
    for path in sorted((tiny_root / "WBC_100/val/data").glob("*/*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        target = out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(rgb * gain * 0.9, 0, 255).astype(np.uint8)).save(target)
    return out


@pytest.fixture(scope="module")
def small_study(ray_local: None, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, StudySpec, dict[str, Any]]:
    results = tmp_path_factory.mktemp("study") / "small"
    shifted = _shifted_copy(tiny_root, tmp_path_factory.mktemp("shifted"))
    not_a_tree = tmp_path_factory.mktemp("not-a-tree")  # scored as an error, the study goes on
    (not_a_tree / "notes.txt").write_text("no images here")
    spec = _spec(tiny_root, eval_data=[str(shifted), str(not_a_tree)])
    record = run_study(spec, results, quiet=True)
    return results, spec, record


def test_each_cell_keeps_the_model_of_its_best_final_seed(
        small_study: tuple[Path, StudySpec, dict]) -> None:
    from study.results.kept import kept_models
    from wbc.classifier.model_file import MODEL_FILE, load_classifier

    results, spec, _ = small_study
    trials = pd.read_parquet(results / "trials.parquet")
    finals = trials[trials["phase"] == "final"]
    kept = {m.cell: m for m in kept_models(results)}
    assert set(kept) == {f"{s}-{t}" for s, t in spec.cells}  # one per cell, no more
    assert len(list((results / "models").glob("*/seed-*"))) == len(spec.cells)
    for cell, rows in finals.groupby("cell"):
        best = rows.sort_values(["val_macro_f1", "seed"], ascending=[False, True]).iloc[0]
        model = kept[cell]
        assert model.seed == best["seed"]  # chosen on the selection split, never on test
        classifier = load_classifier(model.folder)
        card = classifier.card
        assert (card.cell, card.seed, card.trial_key) == (cell, best["seed"], best["trial_id"])
        assert card.classes == WBC_CLASSES and card.image_size == spec.image_size
        assert card.data_fingerprint == best["data_fingerprint"]
        assert card.figures["test_accuracy"] == best["test_accuracy"]
        assert card.figures["val_macro_f1"] == best["val_macro_f1"]
        for other in rows[rows["seed"] != best["seed"]].itertuples():
            folder = results / "tune" / other.trial_id.replace("/", "-")
            assert not list(folder.glob(f"checkpoint_*/{MODEL_FILE}")), other.trial_id
    # Search trials keep nothing.
    assert not list((results / "tune").glob(f"*search*/checkpoint_*/{MODEL_FILE}"))


def test_wbc_evaluate_on_the_studys_tree_gives_each_kept_models_row_figures(
        small_study: tuple[Path, StudySpec, dict], tiny_root: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from study.results.kept import kept_models
    from wbc.cli import main as wbc_main

    results, _, _ = small_study
    rows = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    for kept in kept_models(results):
        assert wbc_main(["evaluate", "--model", str(kept.folder), "--data", str(tiny_root),
                         "--json", "--quiet"]) == 0
        scores = json.loads(capsys.readouterr().out)
        row = rows.loc[kept.card().trial_key]
        assert scores["split"] == row["reporting_split"]
        assert scores["same_data"] is True
        for name in ("accuracy", "macro_f1", "balanced_accuracy", "n",
                     *(f"recall_{c}" for c in WBC_CLASSES)):
            assert scores[name] == row[f"test_{name}"], (kept.cell, name)  # exactly
        assert scores["confusion_matrix"] == [list(r) for r in row["test_confusion_matrix"]]
        assert scores["predictions"] == list(row["test_predictions"])


def test_the_kept_models_are_scored_out_of_domain_and_reported(
        small_study: tuple[Path, StudySpec, dict]) -> None:
    results, spec, record = small_study
    everything = pd.read_parquet(results / "eval.parquet")
    assert len(everything) == 2 * len(spec.cells)  # every kept model on each tree
    shifted, not_a_tree = spec.eval_data
    refused = everything[everything["eval_data"] == not_a_tree]
    assert refused["error"].str.contains("neither a tree in the report's layout").all()
    assert record["status"] == "complete"
    scores = everything[everything["eval_data"] == shifted]
    assert scores["error"].isna().all()
    assert (scores["n"] == 30).all()  # every image of the shifted tree (6 val x 5 classes)
    assert scores["accuracy"].between(0, 1).all() and scores["in_domain_accuracy"].notna().all()
    assert record["sessions"][-1]["eval_seconds"] >= 0
    from study.report import write_report

    text = write_report(results, results / "report-ood")[0].read_text()
    assert "## Out of domain" in text and "## Kept models" in text
    section = text[text.index("## Out of domain"):text.index("## Kept models")]
    for cell in scores["cell"]:
        assert f"| {cell} | 1 |" in section
        assert f"- {cell} seed " in section  # and on the other tree, why it could not be
    from PIL import Image

    figure = np.asarray(Image.open(results / "report-ood/figures/out_of_domain.png").convert("L"))
    assert figure.shape[1] > 1000 and (figure < 128).mean() > 0.005  # drawn, not blank
    assert "![out_of_domain.png](figures/out_of_domain.png)" in text


def test_small_study_writes_typed_parquet_rows(small_study: tuple[Path, StudySpec, dict]
                                               ) -> None:
    results, spec, record = small_study
    assert record["status"] == "complete"
    trials = _check_rows(results, spec)
    schema = pq.read_schema(results / "trials.parquet")
    for name in ("lr", "weight_decay", "val_accuracy", "val_macro_f1", "test_accuracy",
                 "test_macro_f1", "val_balanced_accuracy", "wall_seconds",
                 "train_loop_seconds", "test_recall_Basophil"):
        assert schema.field(name).type == pa.float64(), name
    for name in ("seed", "best_epoch", "epochs_run"):
        assert schema.field(name).type == pa.int64(), name
    for name in ("study", "cell", "subset", "strategy", "phase", "trial_id", "status",
                 "imbalance", "background"):
        assert schema.field(name).type == pa.string(), name
    assert pa.types.is_list(schema.field("test_confusion_matrix").type)
    finals = trials[trials["phase"] == "final"]
    for row in finals.itertuples():
        matrix = [list(r) for r in row.test_confusion_matrix]
        assert sum(map(sum, matrix)) == row.test_n
        assert 0.0 <= row.test_accuracy <= 1.0
    # The strategies that paste searched their own knobs; the others did not have them.
    augment = trials[trials["strategy"] == "pretrain_aug"]
    assert augment["aug_factor"].between(1, 8).all()
    # A setting a run never read is null, not a placeholder: scratch pastes nothing.
    scratch = trials[trials["strategy"] == "scratch"]
    assert scratch["aug_factor"].isna().all() and scratch["background"].isna().all()
    assert scratch["backbone_lr_scale"].isna().all() and scratch["mask_augment"].isna().all()
    assert augment["background"].notna().all() and augment["transfer_stages"].notna().all()
    # Each final re-runs the configuration of a search trial of its own cell (the best of a
    # bootstrap resample of the search, final_config="resampled"), and says which.
    for cell, group in trials.groupby("cell"):
        search = group[group["phase"] == "search"].set_index("trial_id")
        for final in group[group["phase"] == "final"].itertuples():
            assert final.config_from in search.index, (cell, final.config_from)
            source = search.loc[final.config_from]
            assert final.lr == source["lr"] and final.imbalance == source["imbalance"], cell
            assert final.aug_factor == source["aug_factor"] or (
                pd.isna(final.aug_factor) and pd.isna(source["aug_factor"])), cell
            assert final.seed != source["seed"]
            assert np.isfinite(source["val_macro_f1"])
    # What the statistics and the report need: per-image predictions on the reporting split
    # (the same images, in the same order, for every run) and the per-class training counts.
    targets = {tuple(t) for t in finals["test_targets"]}
    assert len(targets) == 1
    for row in finals.itertuples():
        assert len(row.test_predictions) == row.test_n == len(next(iter(targets)))
        counts = [getattr(row, f"train_n_{c}") for c in WBC_CLASSES]
        assert all(n >= 1 for n in counts)  # every class in every budget
    assert schema.field("train_n_Basophil").type == pa.int64()
    epochs = pd.read_parquet(results / "epochs.parquet")
    placed = epochs.merge(trials[["trial_id", "cell", "phase", "subset", "strategy", "seed"]],
                          on="trial_id", suffixes=("", "_trial"))
    for key in ("cell", "phase", "subset", "strategy", "seed"):
        assert (placed[key] == placed[f"{key}_trial"]).all(), key


def test_study_json_has_provenance_and_the_time_split(small_study: tuple[Path, StudySpec, dict]
                                                       ) -> None:
    results, spec, _ = small_study
    record = json.loads((results / "study.json").read_text())
    assert StudySpec.from_dict(record["spec"]) == spec
    assert record["provenance"]["versions"]["torch"]
    assert record["provenance"]["hardware"]["cpu_count"] >= 1
    assert record["data"]["fingerprint"]
    assert set(record["pretrain"]) == {"cam16"}  # pretrain_aug needs CAM16 alone
    assert record["pretrain"]["cam16"]["val_accuracy"] >= 0.0
    session = record["sessions"][-1]
    for key in ("ray_startup_seconds", "data_seconds", "pretrain_seconds", "tune_seconds",
                "wall_seconds", "per_trial_overhead_seconds", "train_loop_slot_seconds",
                "trial_overhead_seconds"):
        assert session[key] >= 0.0, key
    assert session["trials_run"] == len(_expected_keys(spec))
    assert 0.0 < session["inside_training_loops_fraction"] <= 1.0
    assert session["slots"] == 2
    # What the slots held: 2 slots x 1 CPU each for the whole session.
    assert session["held_device"] == "CPU"
    assert session["held_device_seconds"] == pytest.approx(2 * session["wall_seconds"])


def test_tune_experiment_folder_works_with_tune_analysis(
        small_study: tuple[Path, StudySpec, dict]) -> None:
    from ray import tune
    from ray.tune import ExperimentAnalysis

    results, spec, _ = small_study
    analysis = ExperimentAnalysis(str(results / "tune"))
    frame = analysis.dataframe()
    assert len(frame) == len(_expected_keys(spec))
    assert set(frame["config/trial_key"]) == _expected_keys(spec)
    from study.tune.trial import run_trial

    grid = tune.Tuner.restore(str(results / "tune"), trainable=run_trial).get_results()
    assert len(grid) == len(_expected_keys(spec))
    assert grid.errors == []
    best = grid.get_best_result(metric="best_val_macro_f1", mode="max", filter_nan_and_inf=True)
    assert best.metrics["best_val_macro_f1"] >= 0.0
    # Tune's own idiom gives a model: the best trial among those that kept one.
    from study.tune.trial import MODEL_METRIC
    from wbc.classifier.model_file import load_classifier

    kept = grid.get_best_result(metric=MODEL_METRIC, mode="max")
    assert kept.config["phase"] == "final" and kept.checkpoint is not None
    with kept.checkpoint.as_directory() as folder:
        classifier = load_classifier(folder)
    assert classifier.card.trial_key == kept.config["trial_key"]
    assert (results / "models" / kept.config["cell"] / f"seed-{kept.config['seed']}").is_dir()


def test_every_column_of_the_three_files_has_its_declared_type(
        small_study: tuple[Path, StudySpec, dict]) -> None:
    """Read as pyarrow reads them: each column's type is the schema's (study.results.rows),
    none undeclared; counts are integers, switches booleans, finished_at a UTC timestamp."""
    from study.results.rows import column_type

    results, _, _ = small_study
    for name in ("trials.parquet", "epochs.parquet", "eval.parquet"):
        schema = pq.read_schema(results / name)
        undeclared = [f.name for f in schema if column_type(f.name) is None]
        assert not undeclared, (name, undeclared)
        wrong = {f.name: (str(f.type), str(column_type(f.name))) for f in schema
                 if f.type != column_type(f.name)}
        assert not wrong, (name, wrong)
    trials = pq.read_schema(results / "trials.parquet")
    assert trials.field("finished_at").type == pa.timestamp("us", tz="UTC")
    assert trials.field("mask_augment").type == pa.bool_()
    assert trials.field("test_n").type == trials.field("val_n").type == pa.int64()
    assert trials.field("aug_factor").type == pa.int64()
    epochs = pq.read_schema(results / "epochs.parquet")
    assert {"cell", "phase", "subset", "strategy", "seed"} <= set(epochs.names)


def test_optuna_opens_each_cells_search_from_the_results_folder(
        small_study: tuple[Path, StudySpec, dict]) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    results, _, _ = small_study
    storage = JournalStorage(JournalFileBackend(str(results / "optuna.journal")))  # no project
    trials = pd.read_parquet(results / "trials.parquet")
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == set(trials["cell"])
    for cell, group in trials[trials["phase"] == "search"].groupby("cell"):
        study = optuna.load_study(study_name=str(cell), storage=storage)
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert sorted(t.user_attrs["trial_key"] for t in done) == sorted(group["trial_id"])
        rows = group.set_index("trial_id")
        for trial in done:
            row = rows.loc[trial.user_attrs["trial_key"]]
            assert trial.value == pytest.approx(row["val_macro_f1"])
            assert trial.params["lr"] == pytest.approx(row["lr"])
            assert trial.user_attrs["best_epoch"] == row["best_epoch"]
            assert max(trial.intermediate_values) == row["epochs_run"]
        finals = trials[(trials["cell"] == cell) & (trials["phase"] == "final")]
        assert study.user_attrs["chosen_trial_key"] in set(group["trial_id"])
        assert set(finals["config_from"]) <= set(group["trial_id"])


def test_tune_analysis_gives_the_best_configuration_of_each_cell(
        small_study: tuple[Path, StudySpec, dict]) -> None:
    import optuna
    from ray.tune import ExperimentAnalysis

    from study.results.journal import optuna_storage
    from study.tune import METRIC, MODE, best_configs, experiment_analysis

    results, spec, _ = small_study
    analysis = experiment_analysis(results)
    assert analysis.best_config["trial_key"]  # no metric to pass: the study recorded it
    best = best_configs(results).set_index("cell")
    assert set(best.index) == {f"{s}-{t}" for s, t in spec.cells}
    # The documented recipe, with Ray alone, picks the same trials.
    ea = ExperimentAnalysis(str(results / "tune"), default_metric=METRIC, default_mode=MODE)
    assert ea.best_config == analysis.best_config
    frame = ea.dataframe()
    search = frame[frame["config/phase"] == "search"].sort_values("config/trial_key")
    recipe = search.loc[search.groupby("config/cell")["best_val_macro_f1"].idxmax()]
    assert dict(zip(recipe["config/cell"], recipe["config/trial_key"], strict=True)) == \
        best["trial_key"].to_dict()
    # ... and they are the study's own choices.
    for cell, row in best.iterrows():
        study = optuna.load_study(study_name=str(cell), storage=optuna_storage(results))
        assert study.user_attrs["chosen_trial_key"] == row["trial_key"], cell


def test_a_new_study_refuses_a_folder_that_holds_one(small_study: tuple[Path, StudySpec, dict]
                                                      ) -> None:
    from study.runner import StudyError

    results, spec, _ = small_study
    before = (results / "trials.parquet").read_bytes()
    with pytest.raises(StudyError, match="--resume"):
        run_study(spec, results, quiet=True)
    assert (results / "trials.parquet").read_bytes() == before


def test_a_failing_trial_is_retried_then_recorded_with_its_error(
        ray_local: None, tiny_root: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_root, subsets=["WBC_10"], strategies=["scratch", "pretrain"],
                 search_trials=1, final_seeds=1, epochs=1)
    results = tmp_path / "broken"
    # Corrupt pretrained weights where the study will look for them: pretrain trials fail.
    tree = scan_tree(tiny_root)
    plan = plan_cam16(tree, image_size=spec.image_size)
    fingerprint = decode_samples([*plan.train, *plan.val, *plan.test], plan.image_size,
                                 name="CAM16").fingerprint
    key = pretrain_key(fingerprint, pretrain_config(spec.base_config(),
                                                    epochs=spec.pretrain_epochs,
                                                    lr=spec.pretrain_lr))
    # Intact (its checksum matches, so it is used) but not a ResNet-18: loading it fails.
    WeightsStore(results).store("cam16", key, {"fc.weight": torch.zeros(3)},
                                {"val_accuracy": 0.5})

    record = run_study(spec, results, quiet=True)
    trials = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    failed = trials.loc["WBC_10-pretrain/search-00"]
    assert failed["status"] == "error"
    assert "model.pt" in failed["error"]
    assert "on node " in failed["error"]  # the error names the node that ran it
    assert "WBC_10-pretrain/final-seed1" not in trials.index  # no best configuration to re-run
    assert trials.loc["WBC_10-scratch/final-seed1", "status"] == "completed"
    # Failed work is never "complete": the cell is named, and the CLI exits 3.
    assert record["status"] == "complete with errors"
    assert record["failed_cells"] == {"WBC_10-pretrain": 1}
    # The rows of trials that ran say where: the Ray node id and the host.
    assert trials.loc["WBC_10-scratch/final-seed1", "node_id"]
    assert trials.loc["WBC_10-scratch/final-seed1", "hostname"]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAY_ADDRESS": "local"}  # its own Ray, never the tests' or a head's
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "study", "run", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """Stop what this test started: the driver's process group (Ray's daemons inherit it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def _rows(results: Path) -> int:
    """Trial rows stored so far: the row files of a running study and the compacted ones."""
    try:
        return len(ResultsStore(results).trials())
    except (FileNotFoundError, OSError, RuntimeError, pa.ArrowInvalid):
        return 0


# Slow (about 100 s): the chaos tests (also slow) kill the driver at every stage besides.
@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume_keeps_every_trial_exactly_once(
        tiny_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "killed"
    log = tmp_path / "driver.log"
    sets = [f"--set={name}={json.dumps(value)}" for name, value in SMALL.items()
            if name not in ("train", "name")]
    sets += [f"--set=train.{name}={json.dumps(value)}" for name, value in SMALL["train"].items()]
    # The spec _spec builds (one search a cell), not the quick preset's replicates.
    sets.append('--set=final_config="resampled"')
    driver = _start(["--data", str(tiny_root), "--results", str(results), "--quiet", *sets], log)
    try:
        deadline = time.monotonic() + 240
        while _rows(results) < 3:
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        os.kill(driver.pid, signal.SIGKILL)  # mid-study, with trials running
    finally:
        _end_group(driver)
    before = ResultsStore(results).trials()  # row files: the killed driver compacted nothing
    assert 3 <= len(before) < len(_expected_keys(_spec(tiny_root)))

    resumed = _start(["--resume", str(results), "--quiet"], log)
    try:
        assert resumed.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        _end_group(resumed)
    _check_rows(results, _spec(tiny_root))
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "complete"
    assert [s["resumed"] for s in record["sessions"]] == [False, True]
    after = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    # Trials completed before the kill were not trained again, unless their settings changed:
    # a final phase follows its cell's best search trial, and a trial ASHA had stopped runs
    # again after the restore (ASHA's rungs are not part of Tune's saved state).
    settings = ["lr", "weight_decay", "imbalance", "aug_factor", "background", "seed"]
    replayed = 0
    for row in before[before["status"] == "completed"].itertuples():
        now = after.loc[row.trial_id]
        if all((pd.isna(now[k]) and pd.isna(getattr(row, k))) or now[k] == getattr(row, k)
               for k in settings):
            assert now["finished_at"] == row.finished_at, row.trial_id
            replayed += 1
    assert replayed >= 1
    # The Optuna journal continued across the kill: each search trial told once, nothing
    # left running (a trial asked just before the kill and asked again after is a FAIL).
    import optuna

    from study.results.journal import optuna_storage

    storage = optuna_storage(results)
    for cell, group in after[after["phase"] == "search"].groupby("cell"):
        study = optuna.load_study(study_name=str(cell), storage=storage)
        told = [t.user_attrs["trial_key"] for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE]
        assert sorted(told) == sorted(group.index), cell
        assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), cell


@pytest.mark.slow
def test_trials_can_drive_ray_train_workers(ray_local: None, tiny_root: Path,
                                            tmp_path: Path) -> None:
    """execution = "train": each Tune trial runs a TorchTrainer (here 2 DDP workers)."""
    spec = _spec(tiny_root, subsets=["WBC_10"], strategies=["scratch"], search_trials=1,
                 final_seeds=1, epochs=2,
                 resources={"execution": "train", "workers_per_trial": 2,
                            "cpus_per_trial": 1.0})
    results = tmp_path / "train-mode"
    record = run_study(spec, results, quiet=True)
    assert record["status"] == "complete"
    trials = _check_rows(results, spec).set_index("trial_id")
    assert set(trials["world_size"]) == {2}
    assert trials.loc["WBC_10-scratch/final-seed1", "test_n"] > 0
    assert (results / "train").is_dir()  # the Ray Train runs, named per trial
    from wbc.classifier.model_file import load_classifier  # the trial kept its model itself

    card = load_classifier(results / "models/WBC_10-scratch/seed-1").card
    assert card.figures["test_accuracy"] == trials.loc["WBC_10-scratch/final-seed1",
                                                       "test_accuracy"]
    assert record["sessions"][-1]["slots"] == 1  # one trial of 2 workers fills 2 CPUs


def test_report_from_the_tune_folder_alone_matches_the_parquet_one(
        small_study: tuple[Path, StudySpec, dict], tmp_path: Path) -> None:
    from study.report import write_report

    results, spec, _ = small_study
    from_parquet, _ = write_report(results, tmp_path / "parquet")
    from_tune, report = write_report(results / "tune", tmp_path / "tune")
    assert report.results.source == "Tune experiment folder"
    assert not report.missing

    def table1(path: Path) -> str:
        text = path.read_text()
        return text[text.index("### accuracy"):text.index("## Paired comparisons")]

    assert table1(from_tune) == table1(from_parquet)
    # A Tune folder copied away from its study.json: named by its trials' configs.
    import shutil

    alone = tmp_path / "my-copy" / "tune"
    shutil.copytree(results / "tune", alone, ignore=shutil.ignore_patterns("checkpoint_*"))
    text = write_report(alone, tmp_path / "alone")[0].read_text()
    assert text.startswith(f"# Study `{spec.name}`")


@pytest.mark.slow  # about 55 s: a SimCLR run, a CAM16 run from it, two strategies' trials
def test_ssl_strategies_run_through_the_study_and_reach_the_report(
        ray_local: None, tiny_root: Path, tmp_path: Path) -> None:
    """pRCC SimCLR (a Ray Train run), CAM16 from its backbone, the mask switch searched, and
    rows for both strategies in Table 1."""
    from study.report import write_report

    spec = _spec(tiny_root, subsets=["WBC_10"], strategies=["ssl", "ssl_pretrain"],
                 search_trials=3, startup_trials=3, final_seeds=2,
                 ssl={"epochs": 2, "batch_size": 8, "probe_steps": 5, "knn_k": 3},
                 ssl_min_epoch_images=32)
    results = tmp_path / "ssl"
    record = run_study(spec, results, quiet=True)
    assert record["status"] == "complete"
    trials = _check_rows(results, spec)
    # Every trial starts from stored weights: the SSL backbone, or the CAM16 run made from it.
    ssl, chained = record["pretrain"]["prcc_ssl"], record["pretrain"]["prcc_ssl+cam16"]
    assert set(record["pretrain"]) == {"prcc_ssl", "prcc_ssl+cam16"}
    assert ssl["epochs"] == 2 and 0.0 <= ssl["knn_accuracy"] <= 1.0
    assert "linear_probe_accuracy_random" in ssl
    assert (results / "pretrain" / f"prcc_ssl-{ssl['key']}" / "model.pt").exists()
    assert chained["init_key"] == ssl["key"]
    by_strategy = trials.groupby("strategy")["pretrain_key"].agg(set).to_dict()
    assert by_strategy == {"ssl": {ssl["key"]}, "ssl_pretrain": {chained["key"]}}
    # The switch is searched (a boolean column): a trial with it off made no pastes, and
    # has no aug_factor or background.
    assert trials["mask_augment"].notna().all() and trials["mask_augment"].dtype == bool
    off = trials[~trials["mask_augment"]]
    assert off["aug_factor"].isna().all() and off["background"].isna().all()
    assert (trials.loc[trials["mask_augment"], "aug_factor"] > 0).all()
    report, _ = write_report(results, tmp_path / "report")
    text = report.read_text()
    table = text[text.index("### accuracy"):text.index("## Paired comparisons")]
    assert "| ssl |" in table and "| ssl_pretrain |" in table
    assert "pRCC self-supervised pretraining (SimCLR)" in text
