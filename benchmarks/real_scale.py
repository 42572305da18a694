"""A real tree at 10k-image scale: import time, decode time, cache size and peak memory.

Real WBC sets run to 10,000+ cells of 360 px (PBC: 17,092). From a smaller real ImageFolder
(``SRC/<Class>/*.jpg``), ``--copies`` copies of every image are written to a temporary
ImageFolder, each copy a distinct turn or mirror of the square (so no two files share bytes,
which ``wbc check`` would call a duplicate) and saved again as JPEG at quality 95; then
``wbc import`` makes the report's layout from it, and the WBC decode cache is built at each
``--sizes`` resolution (cold: every file decoded; warm: the cache opened again). It prints the
counts, the import seconds, per resolution the cold and warm seconds, images a second, the
cache's size on disk, and the peak resident memory of this process and of the decode workers.

Then one training epoch over all of WBC_100/train at ``--epoch-size`` px (every image once,
batch 64, the training loop's own path: ``wbc.training.run.train_run`` from the warm cache) against
the model alone on the same number of random batches already in memory (model-only), same run,
same threads; and a trial's time split on the big tree: set-up (the cache opened, the model
built), the training loop, and the rest (BatchNorm recalibration and the evaluations of the
selection and reporting splits).

    python benchmarks/real_scale.py --src PBC-IMAGEFOLDER --copies 5 --sizes 32 64
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
from PIL import Image

from wbc.config import TrainConfig
from wbc.datasets import Tree, scan_tree
from wbc.datasets.cache import decode_samples
from wbc.training.hardware import train_step_seconds
from wbc.training.inputs import plan_wbc, wbc_decode_set
from wbc.training.run import train_run

_TURNS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
          Image.Transpose.ROTATE_270, Image.Transpose.FLIP_LEFT_RIGHT,
          Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE,
          Image.Transpose.TRANSVERSE)


def _expand(src: Path, out: Path, copies: int) -> int:
    """``copies`` distinct versions of every image of ``src`` under ``out``; how many."""
    written = 0
    for path in sorted(src.glob("*/*")):
        if not path.is_file():
            continue
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for k in range(copies):
            turned = rgb if _TURNS[k] is None else rgb.transpose(_TURNS[k])
            target = out / path.parent.name / f"{path.stem}-v{k}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            turned.save(target, quality=95)
            written += 1
    return written


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _children_peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def _epoch(tree: Tree, cache: Path, size: int, threads: int) -> dict[str, float]:
    """One epoch of every WBC_100 training image through the training loop, and the model alone
    on as many steps; the trial's set-up, loop and the rest."""
    config = TrainConfig().replace(image_size=size, epochs=1, batch_size=64, subset="WBC_100",
                                   min_epoch_images=0, bn_recalibrate=512, seed=0)
    result = train_run(plan_wbc(tree, config), config, cache_dir=cache, threads=threads)
    [epoch] = result.fit.history
    steps = int(epoch["train_images"]) // 64
    model_only = 64 / train_step_seconds(size, 64, steps=min(steps, 60))
    setup = float(result.record["setup_seconds"])
    return {"train_images": float(epoch["train_images"]),
            "images_per_second": float(epoch["images_per_second"]),
            "model_only_images_per_second": model_only,
            "full_over_model_only": float(epoch["images_per_second"]) / model_only,
            "setup_seconds": setup, "loop_seconds": float(epoch["epoch_seconds"]),
            "rest_seconds": float(result.fit.wall_seconds) - float(epoch["epoch_seconds"]),
            "precision": str(result.record["precision_used"])}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--src", type=Path, required=True, help="a real ImageFolder")
    parser.add_argument("--copies", type=int, default=5, help="versions of each image (1-8)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--epoch-size", type=int, default=64,
                        help="the resolution of the measured epoch (one of --sizes; 0: none)")
    harness.add_json(parser)
    args = parser.parse_args()
    if not 1 <= args.copies <= len(_TURNS):
        parser.error(f"--copies must be 1-{len(_TURNS)}")
    harness.header(f"{args.src.name} x {args.copies}, sizes {args.sizes}, "
                   f"{args.workers} decode workers")
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="wbc-real-scale-") as tmp:
        folder = Path(tmp)
        with harness.Timer() as timer:
            n = _expand(args.src, folder / "src", args.copies)
        print(f"{n} images written in {timer.seconds:.0f} s", flush=True)
        with harness.Timer() as timer:
            subprocess.run([sys.executable, "-m", "wbc", "import", "-q", str(folder / "src"),
                            str(folder / "tree")], check=True)
        figures.update(images=n, import_seconds=timer.seconds)
        print(f"wbc import: {timer.seconds:.1f} s ({n / timer.seconds:.0f} images/s)",
              flush=True)
        tree = scan_tree(folder / "tree", verify=False)
        samples = list(wbc_decode_set(tree))
        counts = {"WBC_100/train": len(tree.wbc.subset(100)), "val": len(tree.wbc.val)}
        figures["counts"] = counts
        print(f"tree: {counts}; {len(samples)} decode-set entries", flush=True)
        for size in args.sizes:
            cache = folder / f"cache-{size}"
            with harness.Timer() as cold:
                decode_samples(samples, size, name="WBC", cache_dir=cache, workers=args.workers)
            with harness.Timer() as warm:
                decode_samples(samples, size, name="WBC", cache_dir=cache, workers=args.workers)
            size_mib = _du(cache) / 2**20
            figures[f"{size}px"] = {"cold_seconds": cold.seconds, "warm_seconds": warm.seconds,
                                    "cache_mib": size_mib}
            print(f"{size:3d} px: cold {cold.seconds:.1f} s ({n / cold.seconds:.0f} images/s), "
                  f"warm {warm.seconds:.2f} s, cache {size_mib:.0f} MiB", flush=True)
        if args.epoch_size in args.sizes:
            epoch = _epoch(tree, folder / f"cache-{args.epoch_size}", args.epoch_size,
                           args.workers)
            figures["epoch"] = epoch
            print(f"epoch at {args.epoch_size} px ({epoch['precision']}, {args.workers} "
                  f"threads): {epoch['train_images']:.0f} images at "
                  f"{epoch['images_per_second']:.0f} images/s, model-only "
                  f"{epoch['model_only_images_per_second']:.0f} images/s "
                  f"({epoch['full_over_model_only']:.2f}x); a trial: set-up "
                  f"{epoch['setup_seconds']:.1f} s, training loop {epoch['loop_seconds']:.1f} s,"
                  f" BatchNorm recalibration and evaluation {epoch['rest_seconds']:.1f} s",
                  flush=True)
        figures.update(peak_gib=harness.host_peak_gib(), workers_peak_gib=_children_peak_gib())
        print(f"peak resident memory: this process {harness.host_peak_gib():.2f} GiB, a decode "
              f"worker {_children_peak_gib():.2f} GiB", flush=True)
    harness.write_json(args.json, args, figures)


if __name__ == "__main__":
    main()
