"""A study on a real two-node Ray cluster on 127.0.0.1, through ``ray job submit``.

A head (1 CPU) and a second node (1 CPU) joined with ``ray start --address``, each with its own
temp dir and ports (``headnode.running_head`` / ``running_worker``): the cluster's CPUs (2)
exceed any node's (1), which is where a study once hung at pretraining forever. Each test
starts its own second node and ends only the processes it started.

- the study completes with trials on both nodes (the rows name the node that ran them), a
  pretraining strategy included, and leaves no checkpoint of a finished trial;
- a second node that cannot see the results folder (its own mount namespace, a tmpfs over the
  path) stops the study before any trial, naming the node and the path;
- the second node's raylet killed mid-trial: the study still completes, the trial resumed from
  its checkpoint on the head.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.scenarios.headnode import HeadNode, WorkerNode, running_head, running_worker
from tests.scenarios.test_job_submit import REPO_ROOT, UPLOAD_EXCLUDES, _output

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "two-nodes", "image_size": 32, "subsets": ["WBC_10"],
    "strategies": ["scratch", "pretrain"], "search_trials": 2, "startup_trials": 1,
    "max_final_seeds": 0, "epochs": 6, "grace_epochs": 6, "final_seeds": 1, "pretrain_epochs": 1,
    "train": {"batch_size": 16, "bn_recalibrate": 32, "min_epoch_images": 32,
              "color_jitter": 0.0, "warmup_epochs": 0.5},
}


@pytest.fixture(scope="module")
def head() -> Iterator[HeadNode]:
    with running_head(num_cpus=1) as node:
        yield node


@pytest.fixture(scope="module")
def tree(tiny_root: Path) -> Path:
    """WBC with masks, CAM16 and pRCC (tests/conftest.py)."""
    return tiny_root


def _submit(head: HeadNode, tmp_path: Path, tree: Path, results: Path,
            spec: dict[str, Any], *, wait: bool = True) -> tuple[str, Any]:
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({**spec, "data": str(tree)}))
    runtime_env = {"env_vars": {"WBC_CACHE_DIR": str(tmp_path / "cache")},
                   "excludes": UPLOAD_EXCLUDES}
    job_id = f"two-nodes-{uuid.uuid4().hex[:8]}"
    args = ["job", "submit", "--address", head.dashboard_url, "--submission-id", job_id,
            "--working-dir", str(REPO_ROOT), "--runtime-env-json", json.dumps(runtime_env)]
    if not wait:
        args.append("--no-wait")
    result = head.ray(*args, "--", sys.executable, "-m", "study", "run", "--results",
                      str(results), "--config", str(config), "--no-report", timeout=1200)
    return job_id, result


def _wait_job(head: HeadNode, job_id: str, timeout: float = 1200.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = head.get_json(f"/api/jobs/{job_id}")["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return str(status)
        time.sleep(2.0)
    raise TimeoutError(f"job {job_id} still running after {timeout:.0f} s")


def _job_logs(head: HeadNode, job_id: str) -> str:
    return head.ray("job", "logs", "--address", head.dashboard_url, job_id, timeout=120).stdout


def _checkpoints(results: Path) -> list[Path]:
    """Checkpoint folders that still hold training state (an ended trial's are emptied, kept
    for Tune; a final trial's kept model stays, study.results.kept)."""
    kept = {"dropped.txt", "model.safetensors", "model.json"}
    return [p for p in results.rglob("checkpoint_*")
            if p.is_dir() and any(f.name not in kept for f in p.iterdir())]


def _check_models(results: Path, spec: dict[str, Any]) -> None:
    """Each cell's final model is kept, whichever node trained it, and loads."""
    from wbc.classifier.model_file import load_classifier

    for subset in spec["subsets"]:
        for strategy in spec["strategies"]:
            card = load_classifier(results / "models" / f"{subset}-{strategy}" / "seed-1").card
            assert (card.subset, card.strategy, card.seed) == (subset, strategy, 1)


def test_a_study_runs_on_two_nodes(head: HeadNode, tree: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with running_worker(head, num_cpus=1):
        job_id, submit = _submit(head, tmp_path, tree, results,
                                 {**SPEC, "checkpoint_every": 1})
        assert submit.returncode == 0, _output(submit)
    assert head.get_json(f"/api/jobs/{job_id}")["status"] == "SUCCEEDED"
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "complete"
    # Pretraining was sized to one node (1 CPU), never to the cluster's 2.
    assert record["pretrain"]["cam16"]["cpus"] == 1
    # Both nodes were checked before any trial, and both ran trials.
    assert len(record["nodes"]) == 2
    trials = pd.read_parquet(results / "trials.parquet")
    assert (trials["status"] == "completed").all() or set(trials["status"]) <= {
        "completed", "stopped"}
    assert trials["node_id"].nunique() == 2, trials[["trial_id", "node_id"]]
    assert set(trials["node_id"]) == {n["node_id"] for n in record["nodes"]}
    # Checkpoints were written (every epoch) and are gone once each trial's row was.
    assert _checkpoints(results) == []
    _check_models(results, SPEC)


def test_a_node_that_cannot_see_the_results_folder_stops_the_study_before_any_trial(
        head: HeadNode, tree: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with running_worker(head, num_cpus=1, hide=results):
        job_id, submit = _submit(head, tmp_path, tree, results, SPEC)
    assert submit.returncode != 0, _output(submit)
    assert head.get_json(f"/api/jobs/{job_id}")["status"] == "FAILED"
    log = submit.stdout + submit.stderr
    assert "cannot run on this cluster; before any trial" in log, _output(submit)
    assert f"results folder {results}" in log or str(results) in log
    assert "node " in log and "127.0.0.1" in log
    assert "Traceback" not in log.split("study run: error:")[-1]
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "failed" and str(results) in record["error"]
    assert not (results / "trials.parquet").exists() and not (results / "rows").exists()
    assert "pretrain" not in record  # stopped before pretraining too


def _result_lines(results: Path) -> list[dict[str, Any]]:
    lines = []
    for path in (results / "tune").glob("*/result.json"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                lines.append(json.loads(line))
    return lines


def _kill_when_a_trial_checkpointed_on(worker: WorkerNode, results: Path,
                                       worker_id: str | None, timeout: float = 600.0) -> str:
    """SIGKILL the worker's raylet once a trial running there has reported an epoch with a
    checkpoint; the id of that trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _result_lines(results):
            on_worker = worker_id is None or line.get("node_id") == worker_id
            if on_worker and line.get("node_id") and line.get("epoch", 0) >= 1 \
                    and line.get("epoch", 0) < line.get("resolved_config", {}).get("epochs", 0):
                os.kill(worker.raylet_pid(), signal.SIGKILL)
                return str(line.get("trial_id"))
        time.sleep(0.2)
    raise TimeoutError("no trial reported from the second node")


def _worker_node_id(head: HeadNode) -> str:
    listing = head.ray("list", "nodes", "--address", head.dashboard_url, "--format", "json",
                       timeout=60)
    nodes = json.loads(listing.stdout)
    return next(n["node_id"] for n in nodes if not n["is_head_node"] and n["state"] == "ALIVE")


def test_losing_a_node_mid_trial_resumes_the_trial_from_its_checkpoint(
        head: HeadNode, tree: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    spec = {**SPEC, "strategies": ["scratch"], "epochs": 8, "grace_epochs": 8,
            "checkpoint_every": 1, "search_trials": 2, "final_seeds": 1,
            "resources": {"max_failures": 2}}
    with running_worker(head, num_cpus=1) as worker:
        worker_id = _worker_node_id(head)
        job_id, submit = _submit(head, tmp_path, tree, results, spec, wait=False)
        assert submit.returncode == 0, _output(submit)
        _kill_when_a_trial_checkpointed_on(worker, results, worker_id)
        status = _wait_job(head, job_id)
    logs = _job_logs(head, job_id)
    assert status == "SUCCEEDED", logs[-4000:]
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "complete", logs[-4000:]
    trials = pd.read_parquet(results / "trials.parquet")
    assert (trials["status"] == "completed").all()
    # The trial that lost its node went on from its checkpoint, on the head.
    resumed = trials[trials["resumed_from_epoch"] > 0]
    assert len(resumed) >= 1, trials[["trial_id", "node_id", "resumed_from_epoch"]]
    assert (resumed["node_id"] != worker_id).all()
    assert _checkpoints(results) == []


def test_a_study_with_predicted_masks_runs_on_two_nodes(head: HeadNode, tree: Path,
                                                        tmp_path: Path) -> None:
    """The segmenter runs once, in a task sized to one node; every node's trials read the masks
    it wrote into the results folder."""
    results = tmp_path / "results"
    spec = {**SPEC, "strategies": ["pretrain_aug_predicted"], "epochs": 2, "grace_epochs": 2,
            "search_trials": 3, "segmentation": {"image_size": 32, "steps": 4, "folds": 2}}
    with running_worker(head, num_cpus=1):
        job_id, submit = _submit(head, tmp_path, tree, results, spec)
        assert submit.returncode == 0, _output(submit)
    assert head.get_json(f"/api/jobs/{job_id}")["status"] == "SUCCEEDED"
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "complete"
    segmentation = record["segmentation"]
    assert segmentation["written"] > 0 and (results / "masks" / "segment.json").is_file()
    trials = pd.read_parquet(results / "trials.parquet")
    assert trials["node_id"].nunique() == 2, trials[["trial_id", "node_id"]]
    assert set(trials["data_fingerprint"]) == {segmentation["fingerprint_with_masks"]}
    # Every training image pasted (aug_factor pastes each) on both nodes.
    n = trials["train_n_Basophil"] + trials["train_n_Eosinophil"] + trials[
        "train_n_Lymphocyte"] + trials["train_n_Monocyte"] + trials["train_n_Neutrophil"]
    assert (trials["train_images"] == n * (1 + trials["aug_factor"])).all()
