"""The Python API where users call it: a notebook or script that imported ``ray`` before
``study`` gets the same study as the command line.

Ray reads its token-auth mode when it is imported; the study used to put the mode into the
environment afterwards, so the private cluster it started demanded a token the driver never
sent (``InvalidAuthToken``, 21 retries, then a traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

TINY = {"name": "api", "image_size": 32, "subsets": ["WBC_100"], "strategies": ["scratch"],
        "epochs": 1, "final_seeds": 2, "max_final_seeds": 0,
        "train": {"batch_size": 16, "bn_recalibrate": 16, "min_epoch_images": 16,
                  "color_jitter": 0.0, "warmup_epochs": 0.0}}

SCRIPT = """
import sys
import ray  # first, as a notebook does
import study.cli
sys.exit(study.cli.main(sys.argv[1:]))
"""


def test_a_study_started_after_import_ray_runs(tiny_root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**TINY, "data": str(tiny_root)}))
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env["WBC_CACHE_DIR"] = str(tmp_path / "cache")  # a private Ray and cache of its own
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "run", "--config", str(spec), "--results", str(results),
         "--quiet", "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what it started: its Ray's daemons
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert "InvalidAuthToken" not in text and "Traceback" not in text
    # Ray read its address switch at import, before study could set it: the driver says so
    # where that leaves the private Ray on a routable address (a machine with a network).
    ip = subprocess.run([sys.executable, "-c", "import ray.util; print(ray.util."
                         "get_node_ip_address())"], capture_output=True, text=True, env=env,
                        check=True).stdout.strip()
    assert ("Ray was imported before study" in text) == (ip != "127.0.0.1"), text[-3000:]
    trials = pd.read_parquet(results / "trials.parquet")
    assert sorted(trials["trial_id"]) == ["WBC_100-scratch/final-seed1",
                                          "WBC_100-scratch/final-seed2"]
    assert (trials["status"] == "completed").all()
