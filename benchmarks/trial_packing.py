"""Packing small trials on one device: K trials at once against one at a time, same run.

A study's small-subset trials (WBC_1 has 82 images, WBC_10 842) leave a GPU mostly idle between
short epochs: evaluation, BatchNorm recalibration, reports and Python overhead. Ray runs K of them
on one GPU when each asks for 1/K of it (``resources.gpus_per_trial`` or ``gpus_by_subset``),
each in its own reused trial process. This benchmark does exactly that without Ray: K worker
processes, each training ``--trials / K`` trials of ``--subset`` one after another through
``wbc.training.run.train_run`` on one shared device, for each K in ``--packs``. The tree is decoded
into the cache once before the first measurement, so that no worker pays for it.

It prints, per K: wall seconds, trials per minute, the speed-up over K=1, and utilisation: the
time inside training loops, each trial's weighted by the 1/K of the device it holds, over the
device-time held (the wall time). The study prints the same figure for a whole study. Also the
peak GPU memory of one trial, so that K fits the card. ``--json`` writes the rows with their
provenance after each K.

    python benchmarks/trial_packing.py --device cuda --image-size 224 --packs 1 2 4 --trials 8
    python benchmarks/trial_packing.py --image-size 32 --packs 1 2 --trials 4   # CPU, minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness
import torch

from wbc.config import TrainConfig
from wbc.training.inputs import load_plan, plan_wbc


def trial_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    """A small-subset trial shaped like the paper preset's (batch 256, 4096 images an epoch)."""
    return harness.run_config(args, subset=args.subset, seed=seed, warmup_epochs=1.0)


def worker(args: argparse.Namespace) -> None:
    """Train ``--trials`` trials one after another; print one JSON line with the timings."""
    with harness.Timer() as process:
        device = torch.device(args.device)
        threads = args.threads if device.type == "cpu" else None
        work = harness.Workspace(root=args.root, cache=args.cache, folder=args.cache)
        loops, walls, peaks = [], [], []
        for i in range(args.trials):
            harness.gpu_peak_reset(device)
            fit = harness.train(work, trial_config(args, args.seed + i), device=device,
                                threads=threads).fit
            loops.append(sum(row["loop_seconds"] for row in fit.history))
            walls.append(fit.wall_seconds)
            peak = harness.gpu_peak_gib(device)
            if peak is not None:
                peaks.append(peak)
    print(json.dumps({"loop_seconds": loops, "trial_seconds": walls, "gpu_peak_gib": peaks,
                      "process_seconds": process.seconds}), flush=True)


def run_pack(args: argparse.Namespace, k: int) -> dict[str, Any]:
    """K worker processes at once, ``trials // k`` trials each."""
    per = max(1, args.trials // k)
    command = [sys.executable, __file__, "--worker", "--root", str(args.root), "--cache",
               str(args.cache), "--device", args.device, "--subset", args.subset,
               "--image-size", str(args.image_size), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--epoch-images", str(args.epoch_images),
               "--bn-recalibrate", str(args.bn_recalibrate), "--trials", str(per),
               "--threads", str(max(1, args.threads // k))]
    with harness.Timer() as timer:
        procs = [subprocess.Popen([*command, "--seed", str(100 * j)], stdout=subprocess.PIPE,
                                  text=True) for j in range(k)]
        outputs = [p.communicate()[0] for p in procs]
    wall = timer.seconds
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed with K={k}: exit codes "
                           f"{[p.returncode for p in procs]}")
    records = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    loops = [s for r in records for s in r["loop_seconds"]]
    trials = len(loops)
    return {"k": k, "trials": trials, "wall_seconds": wall,
            "trials_per_minute": 60 * trials / wall,
            "mean_trial_seconds": sum(s for r in records for s in r["trial_seconds"]) / trials,
            "utilisation": sum(loops) / k / wall,
            "gpu_peak_gib": max((g for r in records for g in r["gpu_peak_gib"]), default=None)}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--subset", default="WBC_1", help="the trials' label budget")
    harness.add_run_arguments(parser, image_size=224, epochs=5, batch_size=256,
                              epoch_images=4096, bn_recalibrate=2048)
    parser.add_argument("--trials", type=int, default=8, help="trials per measurement")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4],
                        help="trials at once on the device")
    parser.add_argument("--cache", type=Path, default=None, help="the decode cache (default: "
                        "a temporary one)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads in all (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = str(harness.device(args))
    args.threads = args.threads or torch.get_num_threads()
    if args.worker:
        worker(args)
        return
    harness.header(f"{args.subset} trials at {args.image_size} px, {args.epochs} epochs of "
                   f"{args.epoch_images} images, batch {args.batch_size}", device=args.device)
    with harness.workspace(args.root, scale=args.scale, image_size=args.source_size) as work:
        args.root = work.root
        args.cache = args.cache or work.cache
        # Decode once here, so that no worker pays for it inside the timed runs.
        load_plan(plan_wbc(work.tree, trial_config(args, 0)), cache_dir=args.cache)
        rows = []
        for k in args.packs:
            row = run_pack(args, k)
            rows.append(row)
            base = rows[0]["trials_per_minute"]
            gpu = f", trial peak {row['gpu_peak_gib']:.2f} GiB" if row["gpu_peak_gib"] else ""
            print(f"K={k}: {row['trials']} trials in {row['wall_seconds']:.1f} s = "
                  f"{row['trials_per_minute']:.1f} trials/min (x{row['trials_per_minute'] / base:.2f}"
                  f" over K={args.packs[0]}), utilisation {100 * row['utilisation']:.0f}%, "
                  f"mean trial {row['mean_trial_seconds']:.1f} s{gpu}", flush=True)
            harness.write_json(args.json, args, {"rows": rows}, device=args.device)


if __name__ == "__main__":
    main()
