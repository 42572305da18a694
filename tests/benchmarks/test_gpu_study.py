"""``benchmarks/gpu_study.sh`` dry-run on the CPU at tiny scale: the script a lent GPU runs once
must not fail for a reason a CPU could have shown (a wrong option, a missing file, a summary that
cannot read what the study wrote)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_study_summary  # noqa: E402
import trial_memory  # noqa: E402


def test_gpu_samples_are_summarised(tmp_path: Path) -> None:
    samples = tmp_path / "gpu_samples.csv"
    samples.write_text("2026/12/06 10:00:00.000, 0, 500\n2026/12/06 10:00:00.500, 90, 30000\n"
                       "2026/12/06 10:00:01.000, 96, 31000\nnot a sample\n")
    gpu = gpu_study_summary._gpu_samples(samples)
    assert gpu["samples"] == 3 and gpu["memory_used_peak_mib"] == 31000
    assert gpu["utilisation_mean_percent"] == pytest.approx(62.0)
    assert gpu["busy_share"] == pytest.approx(2 / 3)
    assert gpu_study_summary._gpu_samples(tmp_path / "none.csv") == {"samples": 0}


def test_trial_memory_calls_a_process_flat_only_within_tolerance() -> None:
    import pandas as pd

    rows = pd.DataFrame({"pid": [7] * 6 + [8] * 6,
                         "rss_mib": [900, 1000, 1010, 1000, 1020, 1010,
                                     900, 1000, 1200, 1400, 1600, 1800]})
    flat, grows = trial_memory.verdicts(rows, settle=1, tolerance=0.2)
    assert flat["pid"] == 7 and flat["flat"] and flat["trials"] == 6
    assert grows["pid"] == 8 and not grows["flat"]
    assert grows["growth_last_over_first_settled"] == pytest.approx(1.8)


@pytest.mark.slow
def test_gpu_study_dry_runs_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "SIZE": "32", "SCALE": "0.03", "STUDY_SEARCH": "1",
           "STUDY_SEEDS": "1", "STUDY_EPOCHS": "1", "PRETRAIN_EPOCHS": "1", "EPOCH_IMAGES": "64",
           "CPUS_PER_TRIAL": "1", "PYTHON": sys.executable, "WBC_CACHE_DIR": str(tmp_path / "c"),
           # the throughput suite at its smallest: no torch.compile, one seed, one pack
           "COMPILE": "", "BATCH": "16", "SEEDS": "1", "EPOCHS": "1",
           "TRIALS": "2", "PACKS": "1", "PACK_EPOCHS": "1", "TREE": str(tmp_path / "tree")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_study.sh"), str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "gpu_study done" in done.stdout and "study exit status 0" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "complete" and summary["status"] == 0
    assert summary["trials"]["by_status"] == {"completed": 24}  # 12 cells x (1 + 1)
    assert summary["trials"]["precision_used"] == {"fp32": 24}
    split = summary["time_split"]
    assert split["tune_seconds"] > 0 and split["pretrain_seconds"] > 0
    assert summary["gpu"] == {"samples": 0}  # no nvidia-smi on the CPU
    assert "Xeon" in summary["machine"] or "cores" in summary["machine"]
    assert (out / "study" / "report.md").exists()
    for step in ("throughput", "precision", "packing"):
        assert (out / "suite" / f"{step}.json").exists(), step
