"""``ray job submit`` against a real head node with token auth on 127.0.0.1 (see headnode.py).

The job runs ``wbc train`` on a tiny synthetic tree exactly as a user would on a cluster: the
working directory is uploaded (a temporary copy on the head), the storage path is absolute, and
the decode cache is set through the job's runtime environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import headnode
from tests.scenarios.headnode import HeadNode, running_head, started_by, still_running
from wbc.synth import synthesize

ray_head = headnode.ray_head  # the module-scoped head-node fixture, for the tests below

REPO_ROOT = Path(__file__).resolve().parents[2]
# Left out of the working-dir upload: VCS, tool caches, data and outputs. Ray also honours
# .gitignore, but a dataset or results folder need not be listed there.
UPLOAD_EXCLUDES = [".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__",
                   "*.egg-info", "data", "runs", "results", "build", ".whl"]


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object embedded in ``text`` (the job's log surrounds the printed record)."""
    decoder = json.JSONDecoder()
    found = []
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        start = text.find("{", end)
    return found


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


def test_head_requires_its_token_and_ends_only_its_own_processes() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
    try:
        with running_head() as head:
            assert head.http_status("/api/jobs/") == 401
            assert head.http_status("/api/jobs/", token="not-the-token") == 403
            assert head.http_status("/api/jobs/", token=head.token) == 200
            known = started_by(head.pid)
            assert len(known) > 3  # gcs_server, raylet, dashboard, ... under ``ray start``
            assert bystander.pid not in known
        assert still_running(known) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_job_submit_runs_wbc_train(ray_head: HeadNode, tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthesize(data, scale=0.01, image_size=64, seed=0)
    storage, cache = tmp_path / "runs", tmp_path / "cache"
    runtime_env = {"env_vars": {"WBC_CACHE_DIR": str(cache)}, "excludes": UPLOAD_EXCLUDES}
    job_id = f"wbc-test-{uuid.uuid4().hex[:8]}"
    submit = ray_head.ray(
        "job", "submit", "--address", ray_head.dashboard_url, "--submission-id", job_id,
        "--working-dir", str(REPO_ROOT), "--runtime-env-json", json.dumps(runtime_env), "--",
        # The test's own interpreter: ``python`` on PATH may be another environment.
        sys.executable, "-m", "wbc", "train", "--data", str(data), "--subset", "WBC_100",
        "--strategy", "scratch", "--epochs", "1", "--image-size", "32", "--batch-size", "16",
        "--storage", str(storage), "--json", "--quiet",
        timeout=600,
    )
    assert submit.returncode == 0, _output(submit)
    records = [r for r in _json_objects(submit.stdout) if "test_accuracy" in r]
    assert records, _output(submit)
    record = records[-1]
    assert 0.0 <= record["test_accuracy"] <= 1.0
    assert 0.0 <= record["test_macro_f1"] <= 1.0
    assert record["world_size"] == 1
    # The run landed in the absolute storage path, not in the job's temporary working dir.
    assert any(storage.iterdir())
    # WBC_CACHE_DIR reached the job through its runtime environment.
    assert cache.is_dir() and any(cache.iterdir())
    assert ray_head.get_json(f"/api/jobs/{job_id}")["status"] == "SUCCEEDED"


@pytest.mark.slow
def test_job_submit_runs_the_quick_study_and_it_replicates(ray_head: HeadNode, tmp_path: Path
                                                           ) -> None:
    """The README's command through the head, from a fresh cache: the quick preset (12 cells, 6
    seeds each, 3 more where undecided, up to 9) with seed 1, in about the time the
    README gives; its verdicts must not contradict those of the committed reference run (seed
    0): no difference significant in both with opposite signs."""
    results, cache = tmp_path / "results" / "quick-seed1", tmp_path / "cache"
    runtime_env = {"env_vars": {"WBC_CACHE_DIR": str(cache)}, "excludes": UPLOAD_EXCLUDES}
    job_id = f"study-test-{uuid.uuid4().hex[:8]}"
    submit = ray_head.ray(
        "job", "submit", "--address", ray_head.dashboard_url, "--submission-id", job_id,
        "--working-dir", str(REPO_ROOT), "--runtime-env-json", json.dumps(runtime_env), "--",
        sys.executable, "-m", "study", "run", "--results", str(results), "--set", "seed=1",
        timeout=1500,
    )
    assert submit.returncode == 0, _output(submit)
    assert ray_head.get_json(f"/api/jobs/{job_id}")["status"] == "SUCCEEDED"
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "complete"
    # docs/study-run.md measures 422 s alone on a 2-core AMD EPYC for seed 1 (108 trials: every
    # label budget to 9 seeds), and a CPU without bf16 is about twice as slow; 1,200 s catches
    # a gross slowdown (a hang, a lost slot) without making a slower CI machine a test failure.
    assert record["sessions"][-1]["wall_seconds"] < 1200
    import pandas as pd

    trials = pd.read_parquet(results / "trials.parquet")
    assert trials["cell"].nunique() == 12
    assert set(record["pretrain"]) == {"cam16"}
    assert not trials["trial_id"].duplicated().any()
    # 6 seeds a cell, 3 more in every cell of a label budget that the look left open.
    seeds = trials[trials["phase"] == "final"].groupby(["subset", "cell"]).size()
    assert set(seeds) <= {6, 9} and (seeds.groupby(level="subset").nunique() == 1).all()
    # A summary line per finished cell reached the job's log, again at each later look.
    assert sum(" -> test accuracy " in line for line in submit.stdout.splitlines()
               + submit.stderr.splitlines()) == 12 + int((seeds == 9).sum())
    _no_contradiction(results, REPO_ROOT / "results" / "quick")


def _no_contradiction(fresh: Path, reference: Path) -> None:
    from study.report import load_results, paired, summarise
    from study.report.summary import budget_effects

    mine, theirs = (summarise(load_results(p)) for p in (fresh, reference))
    assert theirs.results.study["spec"]["seed"] == 0 and mine.results.study["spec"]["seed"] == 1
    for table in (paired, budget_effects):
        a, b = table(mine), table(theirs)
        keys = [c for c in ("subset", "strategy", "comparison") if c in a]
        both = a.merge(b, on=keys, suffixes=("_seed1", "_seed0"))
        assert len(both) == len(a) == len(b)
        opposite = both[both["significant_seed1"] & both["significant_seed0"]
                        & (both["difference_seed1"] * both["difference_seed0"] < 0)]
        assert opposite.empty, opposite[[*keys, "difference_seed1", "difference_seed0"]]
