"""Decode throughput: building the memory-mapped cache, opening it again, and a per-epoch
PIL decode for comparison, all on a generated tree.

    python benchmarks/decode_throughput.py --scale 0.1 --source-size 256 --image-size 128
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wbc.cache import decode_samples
from wbc.datasets import scan_tree
from wbc.synth import synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--source-size", type=int, default=256, help="generated JPEG side")
    parser.add_argument("--image-size", type=int, default=128, help="working resolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        synthesize(root, scale=args.scale, image_size=args.source_size, seed=0)
        tree = scan_tree(root, verify=False)
        samples = [s for group in tree.wbc.values() for s in group]
        cache = Path(tmp) / "cache"

        started = time.perf_counter()
        first = decode_samples(samples, args.image_size, name="WBC", cache_dir=cache,
                               workers=args.workers)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        second = decode_samples(samples, args.image_size, name="WBC", cache_dir=cache,
                                workers=args.workers)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        checksum = int(np.asarray(second.images).sum(dtype=np.int64))
        touch = time.perf_counter() - started

        files = [s.path for s in tree.wbc["WBC_100/train"]]
        started = time.perf_counter()
        for path in files:
            with Image.open(path) as image:
                np.asarray(image.convert("RGB").resize((args.image_size, args.image_size)))
        naive = time.perf_counter() - started

    print(f"{len(samples)} samples with subsets, {len(first)} distinct images, "
          f"{args.source_size} px JPEG -> {args.image_size} px, {args.workers} workers")
    print(f"cold build: {first.decoded_now} decoded in {cold:.2f} s = "
          f"{first.decoded_now / cold:.0f} images/s")
    print(f"warm open:  {second.decoded_now} decoded in {warm:.3f} s "
          f"(reading every pixel once more: {touch:.3f} s, checksum {checksum})")
    print(f"naive per-epoch PIL decode (1 process): {len(files) / naive:.0f} images/s")
    print(f"decode throughput {first.decoded_now / cold:.0f} images/s")


if __name__ == "__main__":
    main()
