"""Procedural synthetic datasets in the report's layout: WBC smears, CAM16 and pRCC tiles.

Every image is drawn from its own random stream, ``SeedSequence([seed, dataset, split, class,
index])``, so an image's bytes depend only on the seed, the image size, the stain shift and its
place in the tree: not on the number of workers, and not on the scale. ``stain_shift`` (another
lab's stain and microscope, for cross-domain evaluation) changes only how an image looks, never
what is drawn: the masks stay the same.

Modules: :mod:`~wbc.synth.counts` (planned counts), :mod:`~wbc.synth.primitives` (noise, signed
distances, splats, blur), :mod:`~wbc.synth.stain` (stain vectors, the per-image look,
compositing), :mod:`~wbc.synth.cells` (the WBC smear renderer, one recipe per class),
:mod:`~wbc.synth.tissue` (CAM16 and pRCC tiles) and :mod:`~wbc.synth.writer` (the tree writer).
Drawing is a thin-film absorbance model: shapes are signed-distance fields with a one-pixel ramp,
the leukocyte on a 2x canvas box-averaged down, blurred with separable matrix products.
"""

from __future__ import annotations

from wbc.synth.cells import render_wbc
from wbc.synth.counts import SUBSETS, Counts, planned_counts
from wbc.synth.tissue import render_cam16, render_prcc
from wbc.synth.writer import SynthSummary, synthesize

# Bump when a renderer draws other images for the same seed: cached synthetic trees are keyed by
# it (2: the CAM16 tiles whose class is in nuclear morphology only).
GENERATOR_VERSION = 2

__all__ = [
    "GENERATOR_VERSION",
    "SUBSETS",
    "Counts",
    "SynthSummary",
    "planned_counts",
    "render_cam16",
    "render_prcc",
    "render_wbc",
    "synthesize",
]
