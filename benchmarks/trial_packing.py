"""Packing small trials on one device: K trials at once against one at a time, same run.

A study's small-subset trials (WBC_1 has 82 images, WBC_10 842) leave a GPU mostly idle between
short epochs: evaluation, BatchNorm recalibration, reports and Python overhead. Ray runs K of them
on one GPU when each asks for 1/K of it (``resources.gpus_per_trial`` or ``gpus_by_subset``),
each in its own reused trial process. This benchmark does exactly that without Ray: K worker
processes, each training ``--trials / K`` trials of ``--subset`` one after another with
``wbc.train.fit`` on one shared device, for each K in ``--packs``.

It prints, per K: wall seconds, trials per minute, the speed-up over K=1, and utilisation: the
time inside training loops, each trial's weighted by the 1/K of the device it holds, over the
device-time held (the wall time). The study prints the same figure for a whole study. Also the
peak GPU memory of one trial, so that K fits the card.

    python benchmarks/trial_packing.py --device cuda --image-size 224 --packs 1 2 4 --trials 8
    python benchmarks/trial_packing.py --image-size 32 --packs 1 2 --trials 4   # CPU, minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from wbc.config import TrainConfig
from wbc.data import load_plan, plan_wbc
from wbc.datasets import scan_tree
from wbc.hardware import describe, pick_device
from wbc.model import build_resnet18
from wbc.seeding import seed_everything
from wbc.synth import synthesize
from wbc.train import fit


def trial_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    """A small-subset trial shaped like the paper preset's (batch 256, 4096 images an epoch)."""
    return TrainConfig().replace(
        subset=args.subset, image_size=args.image_size, epochs=args.epochs, seed=seed,
        batch_size=args.batch_size, min_epoch_images=args.epoch_images,
        bn_recalibrate=args.bn_recalibrate, lr=0.05, warmup_epochs=1.0)


def worker(args: argparse.Namespace) -> None:
    """Train ``--trials`` trials one after another; print one JSON line with the timings."""
    started = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    tree = scan_tree(args.root, verify=False)
    loops, walls, peaks = [], [], []
    for i in range(args.trials):
        config = trial_config(args, args.seed + i)
        seed_everything(config.seed)
        data = load_plan(plan_wbc(tree, config), cache_dir=args.cache).to(device)
        model = build_resnet18(5).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = fit(model, config, data.train, data.selection, data.reporting)
        loops.append(sum(row["loop_seconds"] for row in result.history))
        walls.append(result.wall_seconds)
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device) / 2**30)
    print(json.dumps({"loop_seconds": loops, "trial_seconds": walls, "gpu_peak_gib": peaks,
                      "process_seconds": time.perf_counter() - started}), flush=True)


def run_pack(args: argparse.Namespace, k: int) -> dict[str, Any]:
    """K worker processes at once, ``trials // k`` trials each."""
    per = max(1, args.trials // k)
    command = [sys.executable, __file__, "--worker", "--root", str(args.root), "--cache",
               str(args.cache), "--device", args.device, "--subset", args.subset,
               "--image-size", str(args.image_size), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--epoch-images", str(args.epoch_images),
               "--bn-recalibrate", str(args.bn_recalibrate), "--trials", str(per),
               "--threads", str(max(1, args.threads // k))]
    started = time.perf_counter()
    procs = [subprocess.Popen([*command, "--seed", str(100 * j)], stdout=subprocess.PIPE,
                              text=True) for j in range(k)]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--subset", default="WBC_1", help="the trials' label budget")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epoch-images", type=int, default=4096,
                        help="min_epoch_images: images an epoch trains on (paper preset: 4096)")
    parser.add_argument("--bn-recalibrate", type=int, default=2048)
    parser.add_argument("--trials", type=int, default=8, help="trials per measurement")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4],
                        help="trials at once on the device")
    parser.add_argument("--scale", type=float, default=0.25, help="synthetic tree scale")
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--root", type=Path, default=None,
                        help="an existing tree (default: generate one)")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads in all (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.device = pick_device(args.device)
    args.threads = args.threads or torch.get_num_threads()
    if args.worker:
        worker(args)
        return
    print(f"{describe()}; {args.subset} trials at {args.image_size} px, {args.epochs} epochs of "
          f"{args.epoch_images} images, batch {args.batch_size}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            args.root = Path(tmp) / "tree"
            synthesize(args.root, scale=args.scale, image_size=args.source_size, seed=0)
        args.cache = args.cache or Path(tmp) / "cache"
        # Decode once here, so that no worker pays for it inside the timed runs.
        load_plan(plan_wbc(scan_tree(args.root, verify=False),
                           trial_config(args, 0)), cache_dir=args.cache)
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
            if args.json is not None:
                args.json.write_text(json.dumps({"hardware": describe(), "args": {
                    k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
