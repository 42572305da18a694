"""Batched augmentations: mask-based cell copy-paste (the report's 2.3) and cell-safe jitter.

``wbc.augment.tensors`` holds the per-batch tensor ops (flips and quarter turns, colour jitter,
resized crops, normalisation); ``wbc.augment.paste`` the copy-paste of masked cells and the
policy of when a run makes pastes. Every function is pure, works on any device and takes an
explicit ``torch.Generator``.
"""

from __future__ import annotations

from wbc.augment.paste import (
    BACKGROUNDS,
    Background,
    PasteParams,
    expand_with_pastes,
    inpaint_cells,
    make_pastes,
    mask_paste,
    pastes_enabled,
)
from wbc.augment.tensors import (
    color_jitter,
    device_constant,
    flip_rot90,
    normalize,
    random_resized_crop,
    to_float_nchw,
)

__all__ = [
    "BACKGROUNDS",
    "Background",
    "PasteParams",
    "color_jitter",
    "device_constant",
    "expand_with_pastes",
    "flip_rot90",
    "inpaint_cells",
    "make_pastes",
    "mask_paste",
    "normalize",
    "pastes_enabled",
    "random_resized_crop",
    "to_float_nchw",
]
