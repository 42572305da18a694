"""Decode throughput: building the memory-mapped cache, opening it again, and a per-epoch
PIL decode for comparison, all on a generated tree (or ``--root``).

``wbc.datasets.cache.decode_samples`` on every WBC sample of the tree, into an empty cache (cold:
every distinct file decoded and resized, ``--workers`` processes), then again (warm: the cache only
opened; reading every pixel once more is timed apart), against what a loader without a cache
pays each epoch: PIL open, convert and resize of the WBC_100 training files in one process. It
prints the counts, the cold build, the warm open, the naive rate, and last ``decode throughput
<n> images/s``. ``--json`` writes the figures with their provenance.

    python benchmarks/decode_throughput.py --scale 0.1 --source-size 256 --image-size 128
"""

from __future__ import annotations

import os

import harness
import numpy as np
from PIL import Image

from wbc.datasets.cache import decode_samples


def main() -> None:
    parser = harness.parser(__doc__)
    harness.add_tree(parser, scale=0.1)
    parser.add_argument("--image-size", type=int, default=128, help="working resolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    harness.add_json(parser)
    args = parser.parse_args()
    harness.header(f"{args.workers} decode workers")
    with harness.workspace(args.root, scale=args.scale, image_size=args.source_size) as work:
        tree = work.tree
        samples = list(tree.wbc.samples())

        with harness.Timer() as cold:
            first = decode_samples(samples, args.image_size, name="WBC", cache_dir=work.cache,
                                   workers=args.workers)
        with harness.Timer() as warm:
            second = decode_samples(samples, args.image_size, name="WBC", cache_dir=work.cache,
                                    workers=args.workers)
        with harness.Timer() as touch:
            checksum = int(np.asarray(second.images).sum(dtype=np.int64))

        files = [s.path for s in tree.wbc.subset(100)]
        with harness.Timer() as naive:
            for path in files:
                with Image.open(path) as image:
                    np.asarray(image.convert("RGB").resize((args.image_size, args.image_size)))

    figures = {"samples": len(samples), "distinct_images": len(first),
               "cold_decoded": first.decoded_now, "cold_seconds": cold.seconds,
               "warm_decoded": second.decoded_now, "warm_seconds": warm.seconds,
               "touch_seconds": touch.seconds, "checksum": checksum,
               "naive_images_per_second": len(files) / naive.seconds,
               "decode_images_per_second": first.decoded_now / cold.seconds}
    source = f"{args.source_size} px JPEG" if args.root is None else str(args.root)
    print(f"{len(samples)} samples with subsets, {len(first)} distinct images, "
          f"{source} -> {args.image_size} px, {args.workers} workers")
    print(f"cold build: {first.decoded_now} decoded in {cold.seconds:.2f} s = "
          f"{figures['decode_images_per_second']:.0f} images/s")
    print(f"warm open:  {second.decoded_now} decoded in {warm.seconds:.3f} s "
          f"(reading every pixel once more: {touch.seconds:.3f} s, checksum {checksum})")
    print(f"naive per-epoch PIL decode (1 process): "
          f"{figures['naive_images_per_second']:.0f} images/s")
    print(f"decode throughput {figures['decode_images_per_second']:.0f} images/s")
    harness.write_json(args.json, args, figures)


if __name__ == "__main__":
    main()
