"""Stains and the per-image look, and compositing stain densities into an RGB image.

A thin-film absorbance model: each structure contributes a density map times a stain vector in
optical density, and ``I = I0 * exp(-OD)`` makes overlaps darken as they do under a microscope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wbc.synth.primitives import F32, blur_matrix

__all__ = ["STAINS", "Look", "check_stain_shift", "finish", "od", "random_look", "shift_look"]


def od(rgb: tuple[float, float, float], white: float = 235.0) -> np.ndarray:
    """Optical density that turns ``white`` light into ``rgb`` at unit stain density."""
    return -np.log(np.asarray(rgb, dtype=np.float64) / white).astype(F32)


# Wright-Giemsa (smears) and H&E (tissue) stain colours at unit density, read off the BCCD crops
# and typical H&E slides. The smear nucleus and the H&E haematoxylin are one family (blue-violet)
# so that features of nuclei learnt on CAM16 carry over to the smears.
STAINS: dict[str, np.ndarray] = {
    "plasma": od((226, 224, 224)),
    "rbc": od((212, 180, 174)),
    "nucleus": od((145, 121, 230)),
    "cyto_neutrophil": od((224, 204, 226)),
    "cyto_eosinophil": od((226, 186, 196)),
    "cyto_basophil": od((196, 172, 222)),
    "cyto_lymphocyte": od((172, 190, 232)),
    "cyto_monocyte": od((188, 186, 222)),
    "cyto_shared": od((206, 194, 222)),
    "gran_neutrophil": od((206, 176, 214)),
    "gran_eosinophil": od((212, 128, 138)),
    "gran_basophil": od((118, 84, 206)),
    "haematoxylin": od((92, 72, 160)),
    "eosin": od((232, 132, 190)),
}


@dataclass(frozen=True)
class Look:
    """Per-image acquisition: illumination, stain strengths, blur, noise."""

    white: np.ndarray  # (3,) illumination in 0..255
    tint: np.ndarray  # (3,) multiplicative OD hue shift applied to every stain
    strength: float  # global stain density scale
    saturation: float  # 1 keeps colours, < 1 greys them
    blur: float  # Gaussian sigma in output pixels
    noise: float  # sensor noise sigma in 0..255


def random_look(
    rng: np.random.Generator, size: int, *, blur: tuple[float, float], stain_shift: float = 0.0
) -> Look:
    """Draw one image's :class:`Look`, then move it ``stain_shift`` units (:func:`shift_look`).

    ``blur`` is a range of Gaussian sigmas as fractions of the image side, so a crop looks
    equally sharp at every ``image_size``. The shift draws nothing: ``rng`` ends in the same
    state whatever ``stain_shift`` is.
    """
    base = rng.uniform(198, 238)
    look = Look(
        white=(base + rng.normal(0, 5, 3)).astype(F32),
        tint=np.exp(rng.normal(0, 0.11, 3)).astype(F32),
        strength=float(rng.uniform(0.8, 1.2)),
        saturation=float(rng.uniform(0.95, 1.15)),
        blur=float(rng.uniform(*blur)) * size,
        noise=float(rng.uniform(0.8, 4.0)),
    )
    return shift_look(look, stain_shift, size)


# Another lab's stain and microscope, per unit of ``stain_shift`` (see :func:`shift_look`).
# Stain hue: a log-multiplier of every stain's optical density per channel (R, G, B). Positive
# absorbs less red and more green: blue-violet nuclei turn purple-magenta, lilac cytoplasm pink,
# as in a Giemsa-heavier stain; negative turns everything bluer.
SHIFT_TINT = np.array([-0.30, 0.10, 0.04], dtype=np.float64)
# Illumination: a log-multiplier of the white point; positive is a warmer, yellower lamp.
SHIFT_WHITE = np.array([0.02, 0.0, -0.07], dtype=np.float64)
SHIFT_STRENGTH = 0.15  # log-multiplier of the stain density: positive stains darker
SHIFT_BLUR = 0.003  # Gaussian sigma added, as a fraction of the image side: positive is softer
SHIFT_NOISE = 0.3  # log-multiplier of the sensor noise


def check_stain_shift(stain_shift: float) -> float:
    """``stain_shift`` as a float; ValueError naming it unless it is finite."""
    try:
        value = float(stain_shift)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"stain_shift must be a finite number, got {stain_shift!r}")
    return value


def shift_look(look: Look, stain_shift: float, size: int) -> Look:
    """``look`` as another lab's stain and microscope would show it, ``stain_shift`` units away.

    A fixed, deterministic change of every image's acquisition, the same direction for every
    image (draws nothing, so the shapes drawn after it stay the same): stain hue ``tint *
    exp(S * SHIFT_TINT)``, illumination ``white * exp(S * SHIFT_WHITE)`` (clipped to 255),
    stain strength ``* exp(S * SHIFT_STRENGTH)``, blur ``+ S * SHIFT_BLUR * size`` (at least 0)
    and sensor noise ``* exp(S * SHIFT_NOISE)``. ``stain_shift == 0`` returns ``look`` itself.
    """
    s = check_stain_shift(stain_shift)
    if s == 0.0:
        return look
    return Look(
        white=np.minimum(look.white * np.exp(s * SHIFT_WHITE), 255.0).astype(F32),
        tint=(look.tint * np.exp(s * SHIFT_TINT)).astype(F32),
        strength=look.strength * float(np.exp(s * SHIFT_STRENGTH)),
        saturation=look.saturation,
        blur=max(0.0, look.blur + s * SHIFT_BLUR * size),
        noise=look.noise * float(np.exp(s * SHIFT_NOISE)),
    )


def finish(
    densities: Sequence[tuple[np.ndarray, np.ndarray]],
    look: Look,
    rng: np.random.Generator,
    size: int,
    *,
    vignette: float = 0.0,
) -> np.ndarray:
    """Stain densities (``size x size`` each, with its stain vector) -> blurred, noisy uint8 RGB."""
    stains = np.stack([stain for _, stain in densities]) * (look.tint * look.strength)
    if look.saturation != 1.0:
        grey = stains.mean(axis=1, keepdims=True)
        stains = grey + (stains - grey) * look.saturation
    # (3, k) @ (k, n*n): one BLAS call instead of k broadcasts over an (n, n, 3) array.
    dens = np.stack([d.reshape(-1) for d, _ in densities])
    small = np.exp(-(stains.T.astype(F32) @ dens)).reshape(3, size, size)
    sigma_q = round(look.blur * 20)
    if sigma_q >= 4:
        m = blur_matrix(size, sigma_q)
        small = m @ small @ m.T
    small *= look.white[:, None, None]
    if vignette:
        r = (np.arange(size, dtype=F32) + 0.5) / size - 0.5
        small *= 1.0 - vignette * (r[:, None] ** 2 + r[None, :] ** 2)
    # Triangular noise of the requested sigma: two uniform draws cost less than one normal.
    shape = small.shape
    small += (rng.random(shape, dtype=F32) - rng.random(shape, dtype=F32)) * (look.noise * 6**0.5)
    small += 0.5
    return np.clip(small, 0, 255).astype(np.uint8).transpose(1, 2, 0)
