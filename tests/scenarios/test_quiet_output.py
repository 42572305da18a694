"""A default run says what it does and nothing else: ``wbc train`` and ``study run`` with their
output in a file (not a terminal) print no traceback, no Ray Train report dump, no escape code
and no Ray or Tune warning, while they still give their progress lines.

The two run at once, as two private Rays on one machine: Ray Train's placement-group cleaner,
looking its cluster up, then finds both (it printed a traceback of "Found multiple active Ray
instances" before ``study.local_ray.worker_setup``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = {"subsets": ["WBC_100"], "strategies": ["pretrain"], "search_trials": 1,
         "max_final_seeds": 0,
         "startup_trials": 1, "epochs": 1, "final_seeds": 1, "pretrain_epochs": 2,
         "image_size": 32, "train.batch_size": 16, "train.bn_recalibrate": 32,
         "train.min_epoch_images": 32, "train.color_jitter": 0.0}
# Ray's and Tune's logger lines ("2026-... WARNING worker.py:123 -- ..."), Python warnings.
NOISE = re.compile(r"\b(WARNING|Warning:|DeprecationWarning|UserWarning)\b")


def _start(args: list[str], log: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env["WBC_CACHE_DIR"] = str(cache)  # a private Ray each, never the tests' or a head's
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _end(process: subprocess.Popen[bytes]) -> int:
    """The exit status; what the process started (its session: Ray's daemons) stopped."""
    try:
        return process.wait(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if "Traceback" in line or "TrainingReport(" in line or "\x1b" in line
            or (NOISE.search(line) and not line.startswith("warning: "))]


@pytest.mark.slow  # about 50 s: two Rays, pretraining and a trial
def test_default_runs_print_no_noise(tiny_root: Path, tmp_path: Path) -> None:
    sets = [f"--set={name}={json.dumps(value)}" for name, value in SMALL.items()]
    train_log, study_log = tmp_path / "train.txt", tmp_path / "study.txt"
    train = _start(["wbc", "train", "--data", str(tiny_root), "--epochs", "1",
                    "--image-size", "32", "--batch-size", "16", "--bn-recalibrate", "32",
                    "--storage", str(tmp_path / "runs")], train_log, tmp_path / "cache-t")
    study = _start(["study", "run", "--data", str(tiny_root), "--results",
                    str(tmp_path / "results"), "--no-report", *sets], study_log,
                   tmp_path / "cache-s")
    codes = _end(train), _end(study)
    train_text, study_text = train_log.read_text(), study_log.read_text()
    assert codes == (0, 0), train_text[-3000:] + study_text[-3000:]
    assert _noise(train_text) == [], train_text
    assert _noise(study_text) == [], study_text
    # What they do is still said: a line per epoch, pretraining's too, and the result.
    assert "wbc train: epoch 1/1: train loss" in train_text
    assert re.search(r"^model: .*model\.safetensors", train_text, re.M)
    assert "CAM16 pretraining: epoch 2/2: train loss" in study_text
    assert re.search(r"^WBC_100-pretrain +best lr=", study_text, re.M)
    assert f"results: {tmp_path / 'results'}" in study_text


def test_quiet_leaves_standard_error_to_errors_and_warnings(
        capsys: pytest.CaptureFixture[str]) -> None:
    from study.cli.output import say_warnings

    say_warnings("CAM16 pretraining: epoch 1/2: train loss 0.6")
    say_warnings("warning: CAM16 pretraining did not learn")
    assert capsys.readouterr().err == "warning: CAM16 pretraining did not learn\n"


def test_ray_output_settings_follow_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import ray  # noqa: F401  (imported, as a notebook may have before the study)

    from study import local_ray

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    monkeypatch.setattr(os, "environ", environ)  # nothing set here outlives the test
    monkeypatch.setattr(local_ray, "_verbose", False)
    tbx = logging.getLogger("ray.tune.logger.tensorboardx")
    monkeypatch.setattr(tbx, "level", tbx.level)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    local_ray.quiet_ray()
    # Ray is imported: this process keeps the auth mode Ray read
    # then, so the private cluster must get the same, not a mode set now.
    assert "RAY_AUTH_MODE" not in os.environ
    with monkeypatch.context() as before_ray:
        before_ray.delitem(sys.modules, "ray")  # as the commands call it, before Ray's import
        local_ray.quiet_ray()
        assert os.environ.pop("RAY_AUTH_MODE") == "token"  # the private Ray's auth, said
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    assert float(os.environ["TUNE_WARN_THRESHOLD_S"]) > 3600
    assert tbx.level == logging.ERROR
    assert "RAY_DEDUP_LOGS" not in os.environ
    del environ["TUNE_WARN_THRESHOLD_S"]
    local_ray.quiet_ray(verbose=True)
    assert os.environ["RAY_DEDUP_LOGS"] == "0" and "TUNE_WARN_THRESHOLD_S" not in os.environ
    assert tbx.level == logging.NOTSET
