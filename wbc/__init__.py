"""The WBC domain library: datasets, decoding, synthesis, augmentation, models and training.

It never imports Ray; everything here works from a notebook or a plain script. The data layer is
re-exported here; the torch-based modules (``wbc.training.resnet``, ``wbc.training.loop``, ...) are
imported by name.
"""

from __future__ import annotations

from wbc.datasets import DatasetError, Problem, Sample, Tree, scan_tree
from wbc.datasets.cache import DecodedSet, decode_samples, default_cache_dir
from wbc.datasets.imageio import ImageError, read_mask, read_rgb
from wbc.datasets.importer import import_imagefolder, write_subsets
from wbc.datasets.layout import CAM16_CLASSES, WBC_CLASSES
from wbc.datasets.subsets import derive_subsets

__all__ = [
    "CAM16_CLASSES",
    "WBC_CLASSES",
    "DatasetError",
    "DecodedSet",
    "ImageError",
    "Problem",
    "Sample",
    "Tree",
    "decode_samples",
    "default_cache_dir",
    "derive_subsets",
    "import_imagefolder",
    "read_mask",
    "read_rgb",
    "scan_tree",
    "write_subsets",
]

__version__ = "0.1.0"
