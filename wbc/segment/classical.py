"""The classical whole-cell baseline: colour, Otsu and morphology, no training.

A stained white cell is the bluest object of its crop: the nucleus strongly (haematoxylin), the
cytoplasm faintly; red cells are pink and the empty slide is bright. So, per image, in CIELAB:

1. the blueness ``-b*`` (smoothed, sigma 1.5 px) split by a three-class Otsu threshold
   (``skimage.filters.threshold_multiotsu``): its upper class is the nucleus, the seed;
2. the cell's candidate pixels: bluer than the image's median and darker than its bright
   background (lightness 3 below its 95th percentile), which takes the cytoplasm in and leaves
   the pink red cells and the slide out;
3. morphology: an opening (radius 2 px) cuts thin bridges to neighbours, holes are filled, the
   connected component holding most of the seed is kept (the most central one when there is no
   seed), then closed (radius 3 px) and filled again.

On the synthetic smears it reaches a mean whole-cell IoU of about 0.87 (measured by
``wbc segment``); the learned model must beat it there and on real stains. Radii are in pixels
of the image as given; ``classical_mask`` scales them for crops far from 128 px.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi

__all__ = ["classical_mask"]

_REFERENCE_SIDE = 128  # the radii below are for a crop of this side


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _keep(candidate: np.ndarray, seed: np.ndarray, scale: float) -> np.ndarray:
    candidate = ndi.binary_opening(candidate, _disk(max(1, round(2 * scale))))
    candidate = ndi.binary_fill_holes(candidate)
    labels, count = ndi.label(candidate)
    if count == 0:
        return candidate
    ids = np.arange(1, count + 1)
    overlap = ndi.sum(seed, labels, ids)
    if overlap.max() > 0:
        best = ids[int(np.argmax(overlap))]
    else:  # no seed inside any component: the largest, discounted by its distance from centre
        h, w = candidate.shape
        yy, xx = np.mgrid[:h, :w]
        distance = np.hypot(yy - h / 2, xx - w / 2) / (0.25 * min(h, w))
        size = ndi.sum(np.ones_like(candidate), labels, ids)
        best = ids[int(np.argmax(size / (1 + ndi.mean(distance, labels, ids))))]
    cell = ndi.binary_closing(labels == best, _disk(max(1, round(3 * scale))))
    return ndi.binary_fill_holes(cell)


def classical_mask(rgb: np.ndarray) -> np.ndarray:
    """The whole-cell mask (``H x W`` bool) of one ``H x W x 3`` uint8 crop."""
    from skimage import color, filters

    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"classical_mask: expected an H x W x 3 image, got {rgb.shape}")
    scale = min(rgb.shape[:2]) / _REFERENCE_SIDE
    lab = color.rgb2lab(rgb)
    sigma = 1.5 * max(scale, 0.25)
    blue = filters.gaussian(-lab[..., 2], sigma=sigma)
    lightness = filters.gaussian(lab[..., 0], sigma=sigma)
    with warnings.catch_warnings():  # a flat image has fewer than three grey levels
        warnings.simplefilter("ignore")
        try:
            thresholds = filters.threshold_multiotsu(blue, classes=3)
        except ValueError:
            return np.zeros(rgb.shape[:2], dtype=bool)
    seed = blue > thresholds[1]
    candidate = (blue > np.median(blue)) & (lightness < np.percentile(lightness, 95) - 3)
    return _keep(candidate, seed, scale)
