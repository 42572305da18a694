"""Training throughput: the project's data path and loop against a naive baseline, same run.

Baseline (what a first attempt looks like): torchvision ``ImageFolder`` + PIL transforms
(resize, flips, ``ToTensor``, ``Normalize``) + ``DataLoader`` (default: no worker processes)
feeding an fp32 NCHW ResNet-18 with SGD. Project: images decoded once into the memory-mapped
cache and resident as a uint8 tensor, batched flips and colour jitter on tensors,
channels_last, optionally bf16 autocast, through ``wbc.train.train_one_epoch``.

For each image size it prints images per second, the share of the machine's measured matmul
peak (FLOPs of one training step counted by ``torch.utils.flop_counter``), and the data path's
share of the epoch; then one line ``speedup fp32=<x> bf16=<y>``: the ratios to the baseline
(the smallest over the sizes run). Everything runs on generated data.

    python benchmarks/train_throughput.py --image-size 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from study.runner import cpu_model
from wbc.config import TrainConfig
from wbc.data import load_plan, plan_wbc
from wbc.datasets import scan_tree
from wbc.model import build_resnet18
from wbc.seeding import seed_everything
from wbc.synth import synthesize
from wbc.train import IMAGENET_MEAN, IMAGENET_STD, build_optimizer, train_one_epoch


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """Measured GFLOP/s of a large square matmul: the machine's practical peak."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def step_flops(size: int, batch: int) -> float:
    """FLOPs of one forward+backward of ResNet-18 (5 classes) on ``batch`` images."""
    model = build_resnet18(5)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 5, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


def baseline(root: Path, size: int, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """ImageFolder + PIL transforms + DataLoader + fp32 NCHW ResNet-18."""
    tf = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    folder = datasets.ImageFolder(str(root / "WBC_100" / "train" / "data"), transform=tf)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=True, drop_last=True)
    model = build_resnet18(5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    done, images, data_seconds = 0, 0, 0.0
    started = None
    while done < warmup + steps:
        tick = time.perf_counter()
        for x, y in loader:
            if done == warmup:
                started, images, data_seconds = time.perf_counter(), 0, 0.0
            data_seconds += time.perf_counter() - tick
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            images += y.numel()
            if done >= warmup + steps:
                break
            tick = time.perf_counter()
    assert started is not None
    seconds = time.perf_counter() - started
    return {"images_per_second": images / seconds, "data_share": data_seconds / seconds}


def project(root: Path, size: int, batch: int, steps: int, warmup: int, precision: str,
            cache: Path) -> dict[str, float]:
    """The project's loop on cache-resident data: one epoch of ``warmup + steps`` batches."""
    config = TrainConfig().replace(image_size=size, batch_size=batch, precision=precision,
                                   epochs=1, lr=0.01, warmup_epochs=0.0)
    data = load_plan(plan_wbc(scan_tree(root, verify=False), config), cache_dir=cache)
    n = batch * (warmup + steps)
    images = data.train.images[torch.arange(n) % data.train.images.shape[0]]
    labels = data.train.labels[torch.arange(n) % data.train.labels.shape[0]]
    model = build_resnet18(5).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    common = {"config": config, "epoch": 1, "step": 0, "total_steps": warmup + steps,
              "steps_per_epoch": warmup + steps, "loss_weights": None}
    train_one_epoch(model, optimizer, images[: batch * warmup], labels[: batch * warmup],
                    **common)
    row = train_one_epoch(model, optimizer, images[batch * warmup:], labels[batch * warmup:],
                          **common)
    return {"images_per_second": row["images_per_second"],
            "data_share": row["data_seconds"] / row["epoch_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--source-size", type=int, default=256,
                        help="side of the generated JPEG files (real crops are 120-360 px)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    seed_everything(0)
    threads = torch.get_num_threads()
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    capability = torch.backends.cpu.get_cpu_capability()
    bf16_native = peak["bf16"] > peak["fp32"]
    print(f"torch {torch.__version__}, {cpu_model()}, {capability}, {threads} threads; "
          f"matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s"
          + ("" if bf16_native else " (no bf16 in hardware: bf16 timed on 1 step)"))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        needed = args.batch_size * (args.warmup + args.steps)
        scale = min(1.0, max(0.02, needed / 8447 * 1.2))
        started = time.perf_counter()
        synthesize(root, scale=scale, image_size=args.source_size, seed=0)
        print(f"generated {root} at scale {scale:.3f} ({args.source_size} px JPEG) in "
              f"{time.perf_counter() - started:.0f} s")
        for size in args.image_size:
            flops = step_flops(size, args.batch_size) / args.batch_size
            base = baseline(root, size, args.batch_size, args.steps, args.warmup)
            row: dict[str, Any] = {"image_size": size, "gflop_per_image": flops / 1e9,
                                   "baseline": base}
            row["fp32"] = project(root, size, args.batch_size, args.steps, args.warmup, "fp32",
                                  Path(tmp) / "cache")
            # Without bf16 in hardware (AVX2-only CPUs) autocast is far slower than fp32: one
            # timed step is enough to show it and keeps the run within minutes.
            bf16_steps = args.steps if bf16_native else 1
            row["bf16"] = project(root, size, args.batch_size, bf16_steps, 1, "bf16",
                                  Path(tmp) / "cache")
            for name in ("baseline", "fp32", "bf16"):
                fig = row[name]
                peak_key = "bf16" if name == "bf16" else "fp32"
                fig["peak_share"] = fig["images_per_second"] * flops / 1e9 / peak[peak_key]
                print(f"{size:4d} px {name:8s} {fig['images_per_second']:7.1f} img/s  "
                      f"{100 * fig['peak_share']:5.1f}% of {peak_key} peak  "
                      f"data path {100 * fig['data_share']:5.1f}% of the time")
            row["speedup_fp32"] = row["fp32"]["images_per_second"] / base["images_per_second"]
            row["speedup_bf16"] = row["bf16"]["images_per_second"] / base["images_per_second"]
            print(f"{size:4d} px speedup fp32={row['speedup_fp32']:.2f} "
                  f"bf16={row['speedup_bf16']:.2f}")
            results.append(row)
    if args.json is not None:
        args.json.write_text(json.dumps({"peak_gflops": peak, "threads": threads,
                                         "cpu": cpu_model(), "capability": capability,
                                         "torch": torch.__version__, "results": results},
                                        indent=2))
    fp32 = min(r["speedup_fp32"] for r in results)
    bf16 = min(r["speedup_bf16"] for r in results)
    print(f"speedup fp32={fp32:.2f} bf16={bf16:.2f}")


if __name__ == "__main__":
    main()
