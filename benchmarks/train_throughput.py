"""Training throughput: the model alone, the project's full data path, and a naive baseline.

Measured in one run, on the CPU or a GPU (``--device``), at each ``--image-size``:

- ``model only``: the training step on a batch that is already a normalised float tensor on the
  device: what the hardware can do, the ceiling for any data path;
- ``full path``: the project's ``wbc.training.loop.train_one_epoch`` on uint8 images resident on the
  device: index gather, flips and rotations, colour jitter and normalisation batched on the
  device, then the step; its share of the model-only rate is the data path's cost;
- on a GPU, the fast paths one at a time against the default (bf16 autocast, channels_last,
  cudnn.benchmark, fused optimiser): fp32 (TF32 allowed), NCHW, no cudnn.benchmark, foreach
  optimiser, and ``--compile`` (torch.compile, with its compile time);
- ``baseline``: what a first attempt looks like: torchvision ``ImageFolder`` + PIL transforms +
  ``DataLoader`` (no worker processes; on a GPU also with one per core) feeding an fp32 NCHW
  ResNet-18 with a plain SGD loop.

For each it prints images per second, the peak GPU memory (GPU) and, on the CPU, the share of
the measured matmul peak. It checks that the full path's step does not synchronise the host with
the GPU (CUDA's sync debug mode counts synchronising calls in two epochs of different lengths: a
per-epoch count is fine, a per-step one is not). Last come the ratio lines: on the CPU
``speedup fp32=<x> bf16=<y>`` (full path over the baseline); on a GPU ``full path = <p>% of model
only`` and the images per second. ``--json`` writes every figure with the hardware and the
provenance (``harness.write_json``).

These are micro-benchmarks of single epochs and steps: they call
``wbc.training.loop.train_one_epoch`` (and, for the model alone and the baseline, the optimiser
step) directly, not ``wbc.training.run``.

    python benchmarks/train_throughput.py --image-size 128            # the 2-core CPU
    python benchmarks/train_throughput.py --device cuda --image-size 224 --batch-size 256 --compile
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch
import torch.nn.functional as F
from harness import gpu_peak_gib, gpu_peak_reset, host_peak_gib, sync
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from wbc.augment import make_pastes
from wbc.config import TrainConfig
from wbc.training.distributed import autocast
from wbc.training.hardware import cpu_model, gpu_name
from wbc.training.inputs import PreparedData, load_plan, plan_wbc
from wbc.training.loop import IMAGENET_MEAN, IMAGENET_STD, train_one_epoch
from wbc.training.resnet import build_resnet18
from wbc.training.schedule import Schedule, build_optimizer
from wbc.training.seeding import seed_everything


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 1024, repeats: int = 5
                ) -> float:
    """Measured GFLOP/s of a large square matmul: the machine's practical peak."""
    if device.type == "cuda":
        n = 8192
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        with harness.Timer(device) as timer:
            a @ b
        best = min(best, timer.seconds)
    return 2 * n**3 / best / 1e9


def step_flops(size: int) -> float:
    """FLOPs of one forward+backward of ResNet-18 (5 classes) per image."""
    model = build_resnet18(5)
    x = torch.randn(2, 3, size, size)
    y = torch.randint(0, 5, (2,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops()) / 2


def _timed_loop(device: torch.device, warmup: int, steps: int, step: Any) -> float:
    for i in range(warmup):
        step(i)
    with harness.Timer(device) as timer:
        for i in range(steps):
            step(warmup + i)
    return timer.seconds


def model_only(size: int, batch: int, steps: int, warmup: int, device: torch.device, *,
               bf16: bool, channels_last: bool) -> dict[str, Any]:
    """The step alone: normalised float batches already on the device, nothing else."""
    model = build_resnet18(5).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainConfig().optim)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
          for _ in range(2)]  # two batches in turn: no single buffer stays in cache
    ys = [torch.randint(0, 5, (batch,), device=device) for _ in range(2)]
    precision = "bf16" if bf16 else "fp32"
    gpu_peak_reset(device)

    def step(i: int) -> None:
        with autocast(device, precision):
            logits = model(xs[i % 2])
        loss = F.cross_entropy(logits.float(), ys[i % 2])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = _timed_loop(device, warmup, steps, step)
    return {"images_per_second": batch * steps / seconds, "gpu_peak_gib": gpu_peak_gib(device)}


def full_path(data: PreparedData, size: int, batch: int, steps: int, warmup: int,
              device: torch.device, *, precision: str, channels_last: bool = True,
              optimizer_impl: str = "fused", compile_model: bool = False) -> dict[str, Any]:
    """``train_one_epoch`` on uint8 images resident on the device, with the online augmentation.

    A warm-up epoch of ``warmup`` steps, then a timed one of ``steps``. ``optimizer_impl``
    "foreach" swaps the default fused optimiser for the multi-tensor one."""
    config = TrainConfig().replace(image_size=size, batch_size=batch, precision=precision,
                                   channels_last=channels_last, epochs=1, warmup_epochs=0.0)
    images, labels = _tile(data.train.images, data.train.labels, batch * max(warmup, steps),
                           device)
    model = build_resnet18(5).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if optimizer_impl == "fused":
        optimizer = build_optimizer(model, config.optim)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                    foreach=True)
    step_model: Any = model
    if compile_model:
        step_model = torch.compile(model)
    schedule = Schedule.for_run(config.optim, steps_per_epoch=warmup + steps, workers=1)
    common = {"config": config, "epoch": 1, "step": 0, "schedule": schedule,
              "loss_weights": None}
    gpu_peak_reset(device)
    with harness.Timer(device) as warm:  # the compile happens here
        train_one_epoch(step_model, optimizer, images[: batch * warmup],
                        labels[: batch * warmup], **common)
    row = train_one_epoch(step_model, optimizer, images[: batch * steps],
                          labels[: batch * steps], **common)
    return {"images_per_second": row["images_per_second"],
            "data_share": row["data_seconds"] / row["epoch_seconds"],
            "gpu_peak_gib": gpu_peak_gib(device),
            "compile_seconds": warm.seconds if compile_model else None}


def _tile(images: torch.Tensor, labels: torch.Tensor, n: int, device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(n) % images.shape[0]
    return images[index].to(device), labels[index].to(device)


def paste_rate(data: PreparedData, size: int, device: torch.device) -> dict[str, float]:
    """``make_pastes`` (the report's copy-paste, ``aug_factor`` 5) on the device: new images/s."""
    config = TrainConfig().replace(image_size=size, strategy="pretrain_aug", aug_factor=5)
    train = data.train.to(device)

    def pastes(seed: int) -> torch.Tensor:
        return make_pastes(train.images, train.labels, train.has_mask, train.masks,
                           augment=config.augment, seed=seed)[0]

    pastes(0)  # warm-up
    with harness.Timer(device) as timer:
        images = pastes(1)
    return {"images_per_second": images.shape[0] / timer.seconds,
            "images": float(images.shape[0])}


def sync_count(data: PreparedData, size: int, batch: int, device: torch.device) -> dict[str, int]:
    """Synchronising CUDA calls in epochs of 4 and of 12 steps: equal counts mean none per step."""
    if device.type != "cuda":
        return {}
    counts: dict[str, int] = {}
    config = TrainConfig().replace(image_size=size, batch_size=batch, epochs=1,
                                   warmup_epochs=0.0)
    model = build_resnet18(5).to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    for steps in (4, 12):
        images, labels = _tile(data.train.images, data.train.labels, batch * steps, device)
        sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_one_epoch(model, optimizer, images, labels, config=config, epoch=1,
                                step=0, schedule=Schedule.for_run(config.optim,
                                                                  steps_per_epoch=steps,
                                                                  workers=1),
                                loss_weights=None)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[f"{steps}_steps"] = sum("synchroniz" in str(w.message) for w in caught)
    return counts


def baseline(root: Path, size: int, batch: int, steps: int, warmup: int, device: torch.device,
             workers: int) -> dict[str, Any]:
    """ImageFolder + PIL transforms + DataLoader + fp32 NCHW ResNet-18."""
    tf = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    folder = datasets.ImageFolder(str(root / "WBC_100" / "train" / "data"), transform=tf)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers,
                                         pin_memory=device.type == "cuda")
    model = build_resnet18(5).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    done, images, data_seconds = 0, 0, 0.0
    started = None
    gpu_peak_reset(device)
    while done < warmup + steps:
        tick = time.perf_counter()
        for x, y in loader:
            if done == warmup:
                sync(device)
                started, images, data_seconds = time.perf_counter(), 0, 0.0
            x, y = x.to(device), y.to(device)
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
    sync(device)
    assert started is not None
    seconds = time.perf_counter() - started
    return {"images_per_second": images / seconds, "data_share": data_seconds / seconds,
            "gpu_peak_gib": gpu_peak_gib(device)}


def variants(data: PreparedData, root: Path, size: int, batch: int, steps: int, warmup: int,
             baseline_steps: int, device: torch.device, *, compile_model: bool,
             bf16_native: bool) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """What to time at one size, in order: (name, measurement)."""
    gpu = device.type == "cuda"
    default_precision = "bf16" if gpu else "fp32"
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("model only", lambda: model_only(size, batch, steps, warmup, device,
                                          bf16=gpu, channels_last=True)),
        ("full path", lambda: full_path(data, size, batch, steps, warmup, device,
                                        precision=default_precision)),
    ]
    if gpu:
        runs += [
            ("full fp32", lambda: full_path(data, size, batch, steps, warmup, device,
                                            precision="fp32")),
            ("full NCHW", lambda: full_path(data, size, batch, steps, warmup, device,
                                            precision="bf16", channels_last=False)),
            ("full foreach", lambda: full_path(data, size, batch, steps, warmup, device,
                                               precision="bf16",
                                               optimizer_impl="foreach")),
        ]
    else:
        # Without bf16 in hardware (AVX2-only CPUs) autocast is far slower than fp32:
        # one timed step is enough to show it and keeps the run within minutes.
        bf16_steps = steps if bf16_native else 1
        runs.append(("full bf16", lambda: full_path(data, size, batch, bf16_steps, 1,
                                                    device, precision="bf16")))
    runs.append(("baseline", lambda: baseline(root, size, batch, baseline_steps,
                                              min(warmup, 2), device, workers=0)))
    if gpu:
        runs.append(("baseline+workers", lambda: baseline(
            root, size, batch, baseline_steps, 2, device,
            workers=min(16, os.cpu_count() or 1))))
        # cudnn.benchmark off last: the default run keeps its tuned algorithms.
        runs.append(("full no-cudnn-bench", lambda: _no_benchmark(
            data, size, batch, steps, warmup, device)))
        if compile_model:  # last: its compile time is the least predictable
            runs.append(("full compiled", lambda: full_path(
                data, size, batch, steps, warmup, device, precision="bf16",
                compile_model=True)))
    return runs


def main() -> None:
    parser = harness.parser(__doc__)
    harness.add_device(parser)
    parser.add_argument("--image-size", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per step (default: 64 on the CPU, 256 on a GPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per measurement (default: 6 CPU, 30 GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first "
                        "(default: 2 CPU, 10 GPU)")
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="timed steps of the naive baseline (default: --steps on the CPU, "
                        "4 on a GPU, where it is slow)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (GPU; includes its compile time)")
    harness.add_tree(parser, scale=None)  # the scale follows from the steps to time
    harness.add_json(parser)
    args = parser.parse_args()

    device = harness.device(args)
    gpu = device.type == "cuda"
    batch = args.batch_size or (256 if gpu else 64)
    steps = args.steps or (30 if gpu else 6)
    warmup = args.warmup or (10 if gpu else 2)
    baseline_steps = args.baseline_steps or (4 if gpu else steps)
    seed_everything(0)
    if gpu:
        torch.backends.cudnn.benchmark = True  # as wbc.training.loop.fit sets it on a GPU
    threads = torch.get_num_threads()
    peak = {"fp32": matmul_peak(torch.float32, device),
            "bf16": matmul_peak(torch.bfloat16, device)}
    bf16_native = gpu or peak["bf16"] > peak["fp32"]
    harness.header(f"{threads} threads; matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 "
                   f"{peak['bf16']:.0f} GFLOP/s"
                   + ("" if bf16_native else " (no bf16 in hardware: bf16 timed on 1 step)"),
                   device=device)

    def write(results: list[dict[str, Any]]) -> None:
        harness.write_json(args.json, args, {
            "peak_gflops": peak, "threads": threads, "cpu": cpu_model(), "gpu": gpu_name(),
            "device": str(device), "capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "host_peak_gib": host_peak_gib(), "results": results},
            device=device)

    results: list[dict[str, Any]] = []
    # Enough training images that no timed epoch repeats one (WBC_100 has 8,447 at scale 1).
    scale = min(1.0, max(0.02, batch * (warmup + steps) / 8447 * 1.2))
    with harness.workspace(args.root, scale=scale, image_size=args.source_size) as work:
        for size in args.image_size:
            flops = step_flops(size)
            config = TrainConfig().replace(image_size=size)
            data = load_plan(plan_wbc(work.tree, config), cache_dir=work.cache)
            row: dict[str, Any] = {"image_size": size, "batch_size": batch,
                                   "gflop_per_image": flops / 1e9}
            runs = variants(data, work.root, size, batch, steps, warmup, baseline_steps,
                            device, compile_model=args.compile, bf16_native=bf16_native)
            for name, run in runs:
                try:
                    fig = run()
                except Exception as err:  # one failing variant must not lose the others
                    fig = {"error": f"{type(err).__name__}: {err}"}
                    print(f"{size:4d} px {name:20s} failed: {fig['error']}", flush=True)
                    row[name] = fig
                    continue
                bf16 = name == "full bf16" or (gpu and "fp32" not in name
                                               and "baseline" not in name)
                peak_key = "bf16" if bf16 else "fp32"
                fig["peak_share"] = fig["images_per_second"] * flops / 1e9 / peak[peak_key]
                row[name] = fig
                extra = []
                if fig.get("gpu_peak_gib") is not None:
                    extra.append(f"GPU peak {fig['gpu_peak_gib']:.2f} GiB")
                if fig.get("data_share") is not None:
                    extra.append(f"data path {100 * fig['data_share']:4.1f}% of the time")
                if fig.get("compile_seconds"):
                    extra.append(f"compile+warm-up {fig['compile_seconds']:.0f} s")
                print(f"{size:4d} px {name:20s} {fig['images_per_second']:8.1f} img/s  "
                      f"{100 * fig['peak_share']:5.1f}% of {peak_key} peak  " + "  ".join(extra),
                      flush=True)
                write([*results, row])  # after each variant: a time limit keeps these
            row["pastes"] = paste_rate(data, size, device)
            print(f"{size:4d} px mask copy-paste (once an epoch): "
                  f"{row['pastes']['images_per_second']:.0f} new images/s", flush=True)
            row["syncs"] = sync_count(data, size, batch, device)
            if row["syncs"]:
                print(f"{size:4d} px synchronising calls per epoch: {row['syncs']}", flush=True)
            ips = {k: v["images_per_second"] for k, v in row.items()
                   if isinstance(v, dict) and "images_per_second" in v}
            if "full path" in ips and "model only" in ips:
                row["full_over_model"] = ips["full path"] / ips["model only"]
            if "baseline" in ips:
                row["speedup_fp32"] = ips.get("full path", 0.0) / ips["baseline"]
                row["speedup_bf16"] = ips.get("full bf16", ips.get("full path", 0.0)) \
                    / ips["baseline"]
            print(f"{size:4d} px full path = {100 * row.get('full_over_model', 0):.0f}% of model "
                  f"only; over the baseline x{row.get('speedup_fp32', 0):.2f}", flush=True)
            results.append(row)
            write(results)  # after each size: a later failure keeps these
    if gpu:
        for r in results:
            print(f"{gpu_name()} {r['image_size']} px batch {batch}: full path "
                  f"{r['full path'].get('images_per_second', 0):.0f} img/s = "
                  f"{100 * r.get('full_over_model', 0):.0f}% of model only "
                  f"({r['model only'].get('images_per_second', 0):.0f} img/s)")
    else:
        fp32 = min(r.get("speedup_fp32", 0) for r in results)
        bf16 = min(r.get("speedup_bf16", 0) for r in results)
        print(f"speedup fp32={fp32:.2f} bf16={bf16:.2f}")
    print(f"host peak resident memory {host_peak_gib():.2f} GiB")


def _no_benchmark(data: PreparedData, size: int, batch: int, steps: int, warmup: int,
                  device: torch.device) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = False
    try:
        return full_path(data, size, batch, steps, warmup, device, precision="bf16")
    finally:
        torch.backends.cudnn.benchmark = True


if __name__ == "__main__":
    main()
