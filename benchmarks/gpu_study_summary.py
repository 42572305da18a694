"""What a ``benchmarks/gpu_study.sh`` study cost: time split, trials, GPU utilisation and memory.

Reads the study's own record (its ``study.json``: each session's wall time split into data,
Ray start-up, pretraining and trials; the fraction of slot time inside training loops), its
``trials.parquet`` (trials by status, training images a second) and the GPU samples the script
took every half second (``gpu_samples.csv``: utilisation %, memory used MiB); prints one block
and writes ``summary.json`` beside them with the card's name.

    python benchmarks/gpu_study_summary.py --out OUTPUT_FOLDER --status 0 --seconds 371
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import harness
import pandas as pd


def _gpu_samples(path: Path) -> dict[str, Any]:
    """Utilisation and memory from ``nvidia-smi`` samples (none on a CPU dry run)."""
    if not path.exists():
        return {"samples": 0}
    util, memory = [], []
    with path.open() as handle:
        for row in csv.reader(handle):
            try:
                util.append(float(row[1]))
                memory.append(float(row[2]))
            except (IndexError, ValueError):
                continue
    if not util:
        return {"samples": 0}
    busy = [u for u in util if u > 0]
    return {"samples": len(util), "utilisation_mean_percent": statistics.fmean(util),
            "utilisation_median_percent": statistics.median(util),
            "busy_share": len(busy) / len(util), "memory_used_peak_mib": max(memory)}


def summarise(out: Path, status: int, seconds: float) -> dict[str, Any]:
    study_dir = out / "study"
    record = json.loads((study_dir / "study.json").read_text()) \
        if (study_dir / "study.json").exists() else {}
    sessions = record.get("sessions", [])
    session = sessions[-1] if sessions else {}
    split = {key: session.get(key) for key in (
        "wall_seconds", "data_seconds", "ray_startup_seconds", "pretrain_seconds",
        "segmentation_seconds", "tune_seconds", "inside_training_loops_fraction",
        "per_trial_overhead_seconds", "slots", "held_device") if key in session}
    trials: dict[str, Any] = {}
    if (study_dir / "trials.parquet").exists():
        frame = pd.read_parquet(study_dir / "trials.parquet")
        trials = {"rows": len(frame), "by_status": frame["status"].value_counts().to_dict()}
        if "train_loop_seconds" in frame and "train_images" in frame:
            done = frame[frame["status"] == "completed"]
            trials["median_train_loop_seconds"] = float(done["train_loop_seconds"].median())
        if "precision_used" in frame:
            trials["precision_used"] = frame["precision_used"].value_counts().to_dict()
    machine = (out / "machine.txt").read_text() if (out / "machine.txt").exists() else ""
    return {"status": status, "command_seconds": seconds, "study": record.get("status"),
            "time_split": split, "trials": trials,
            "gpu": _gpu_samples(out / "gpu_samples.csv"), "machine": machine.strip(),
            "report": str(study_dir / "report.md") if (study_dir / "report.md").exists()
            else None, "provenance": harness.provenance()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="gpu_study.sh's output folder")
    parser.add_argument("--status", type=int, required=True, help="the study's exit status")
    parser.add_argument("--seconds", type=float, required=True, help="the study's wall time")
    args = parser.parse_args()
    summary = summarise(args.out, args.status, args.seconds)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    split = summary["time_split"]
    print(f"study: exit status {args.status}, {args.seconds:.0f} s for the command, "
          f"status {summary['study']}")
    if split:
        print("time split: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in split.items()))
    print(f"trials: {summary['trials']}")
    gpu = summary["gpu"]
    print("gpu: " + (", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in gpu.items()) if gpu["samples"] else "no samples"))
    print(f"summary: {args.out / 'summary.json'}")
    return 0 if summary["study"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
