"""Chaos: a small study SIGKILLed at random moments, again and again, then resumed to its end.

Kills land anywhere: while Python starts, during the data check, Ray start-up, pretraining, in
the middle of trials, while rows are written. After each, the same command goes on (``--resume``
once the study exists). At the end every trial is there exactly once with its whole curve, no row
file is left over, and ``study.json`` tells the story: one session per start that got that far,
the last one complete. ``CHAOS_SEED`` and ``CHAOS_KILLS`` change the schedule.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.results import ResultsStore
from study.spec import StudySpec, preset

CHAOS: dict[str, Any] = {
    "subsets": ["WBC_100", "WBC_10"], "strategies": ["scratch", "pretrain"],
    # Replicates: 1 search trial for each of the 2 final seeds, 2 a cell; no sequential seeds
    # (the quick preset's), whose count would depend on the runs.
    "final_config": "replicates", "max_final_seeds": 0,
    "search_trials": 1, "startup_trials": 1, "epochs": 2, "grace_epochs": 2, "final_seeds": 2,
    "pretrain_epochs": 2, "checkpoint_every": 1,
    "train": {"batch_size": 16, "bn_recalibrate": 32, "min_epoch_images": 32,
              "color_jitter": 0.0, "warmup_epochs": 0.5},
}


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "study", "run", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray it started
    process.wait(timeout=60)


@pytest.mark.slow
def test_random_sigkills_then_resume_keep_every_trial_once_and_the_record_consistent(
        tiny_root: Path, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")))
    kills = int(os.environ.get("CHAOS_KILLS", "5"))
    results, log = tmp_path / "chaos", tmp_path / "driver.log"
    first = ["--data", str(tiny_root), "--results", str(results), "--quiet", "--no-report",
             "--name", "chaos"]
    first += [f"--set={k}={json.dumps(v)}" for k, v in CHAOS.items() if k != "train"]
    first += [f"--set=train.{k}={json.dumps(v)}" for k, v in CHAOS["train"].items()]
    started_sessions = 0
    for _ in range(kills):
        exists = (results / "study.json").exists()
        driver = _start(["--resume", str(results), "--quiet", "--no-report"] if exists
                        else first, log)
        delay = rng.uniform(1.0, 40.0)
        try:
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.05)
            ended = driver.poll()
        finally:
            _kill_group(driver)  # SIGKILL, whatever it was doing
        assert ended in (None, 0), log.read_text()[-3000:]  # no run failed on its own
        if ended == 0:
            break  # the study ended before this kill
        with contextlib.suppress(FileNotFoundError, ValueError):
            started_sessions = len(json.loads((results / "study.json").read_text())["sessions"])
    final = _start(["--resume", str(results), "--quiet", "--no-report"]
                   if (results / "study.json").exists() else first, log)
    try:
        assert final.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        _kill_group(final)

    spec = StudySpec.from_dict({**preset("quick").to_dict(), **CHAOS, "name": "chaos",
                                "data": str(tiny_root)})
    trials = pd.read_parquet(results / "trials.parquet")
    epochs = pd.read_parquet(results / "epochs.parquet")
    assert spec.final_config == "replicates" and spec.cell_search_trials == 2
    expected = {f"{s}-{g}/search-{i:02d}" for s, g in spec.cells for i in range(2)}
    expected |= {f"{s}-{g}/final-seed{k}" for s, g in spec.cells for k in (1, 2)}
    assert sorted(trials["trial_id"]) == sorted(expected)  # each exactly once
    assert set(trials["status"]) <= {"completed", "stopped"}
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for row in trials.itertuples():
        curve = sorted(epochs.loc[epochs["trial_id"] == row.trial_id, "epoch"])
        assert curve == list(range(1, int(row.epochs_run) + 1)), row.trial_id
    record = json.loads((results / "study.json").read_text())
    assert record["status"] == "complete" and not record.get("error")
    sessions = record["sessions"]
    assert len(sessions) >= max(1, started_sessions)
    assert [s["resumed"] for s in sessions] == [False] + [True] * (len(sessions) - 1)
    assert "wall_seconds" in sessions[-1]  # only the last one ran to its end
    assert ResultsStore(results).compact() == 0  # no row file left behind
    assert (results / ".owner").read_text() == ""  # nobody holds the folder now
    assert not list((results / "pretrain").glob("*.corrupt-*"))  # no weights were damaged
