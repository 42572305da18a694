"""Procedural synthetic datasets in the report's layout: WBC smears, CAM16 and pRCC tiles.

Every image is drawn from its own random stream, ``SeedSequence([seed, dataset, split, class,
index])``, so an image's bytes depend only on the seed, the image size and its place in the tree:
not on the number of workers, and not on the scale (a smaller scale's images are the first ones
of a larger scale's; which of them carry masks is drawn per scale).

Drawing is a thin-film absorbance model: each structure (plasma, red cells, cytoplasm, nucleus,
granules, eosin, haematoxylin) contributes a density map times a per-image jittered stain vector
in optical density, and ``I = I0 * exp(-OD)`` makes overlaps darken as they do under a
microscope. Shapes are signed-distance fields on a 2x canvas with a one-pixel ramp, box-averaged
down and blurred with separable matrix products.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from wbc.importer import link_or_copy
from wbc.layout import CAM16_CLASSES, REPORT_TABLE1, REPORT_TABLE2, WBC_CLASSES, subset_name
from wbc.subsets import derive_subsets, floor_count

__all__ = [
    "SUBSETS",
    "Counts",
    "SynthSummary",
    "planned_counts",
    "render_cam16",
    "render_prcc",
    "render_wbc",
    "synthesize",
]

# The label budgets written besides WBC_100, as percents for wbc.subsets.
SUBSETS: tuple[int, ...] = (50, 10, 1)

# dataset -> split -> class -> (data images, masks). pRCC has no class folder: its class is "".
Counts = Mapping[str, Mapping[str, Mapping[str, tuple[int, int]]]]

_F = np.float32
_DATASET_ID = {"WBC_100": 0, "CAM16": 1, "pRCC": 2}
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
# A separate stream for choosing which images carry a mask, so that the choice cannot shift any
# image's own stream.
_MASK_STREAM = 7


# ---------------------------------------------------------------------------------------------
# Counts


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding (round(0.5) == 0); counts should not depend on
    # whether a product lands on an even integer.
    return math.floor(x + 0.5)


def _scaled(n: int, scale: float, *, minimum: int) -> int:
    return max(minimum, _round_half_up(n * scale))


def _scaled_masks(masks: int, images: int, scale: float) -> int:
    m = _round_half_up(masks * scale)
    if scale >= 0.05 and images >= 2:
        m = max(m, 1)
    return min(m, images)


def planned_counts(scale: float = 1.0) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """The (data, mask) counts ``synthesize(scale=scale)`` writes, without drawing anything.

    ``scale=1.0`` is exactly the report's Table 1 (WBC_100 and, by the floor rule of
    :mod:`wbc.subsets`, WBC_50/10/1) and Table 2 (CAM16, pRCC). Smaller scales round each count
    half-up, keep at least one image per class and split, and give a class with two or more images
    at least one mask when ``scale >= 0.05``.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    counts: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    train: dict[str, tuple[int, int]] = {}
    val: dict[str, tuple[int, int]] = {}
    for cls in WBC_CLASSES:
        n_train, n_mask, n_val = REPORT_TABLE1[cls]
        images = _scaled(n_train, scale, minimum=1)
        train[cls] = (images, _scaled_masks(n_mask, images, scale))
        val[cls] = (_scaled(n_val, scale, minimum=1), 0)
    counts["WBC_100"] = {"train": train, "val": val}
    for p in SUBSETS:
        counts[subset_name(p)] = {
            "train": {c: (floor_count(d, p), floor_count(m, p)) for c, (d, m) in train.items()}
        }
    cam = REPORT_TABLE2["CAM16"]
    assert isinstance(cam, dict)
    cam_counts: dict[str, dict[str, tuple[int, int]]] = {"train": {}, "val": {}, "test": {}}
    for cls in CAM16_CLASSES:
        n_train, n_mask, n_val, n_test = cam[cls]
        images = _scaled(n_train, scale, minimum=1)
        cam_counts["train"][cls] = (images, _scaled_masks(n_mask, images, scale))
        cam_counts["val"][cls] = (_scaled(n_val, scale, minimum=1), 0)
        cam_counts["test"][cls] = (_scaled(n_test, scale, minimum=1), 0)
    counts["CAM16"] = cam_counts
    prcc = REPORT_TABLE2["pRCC"]
    assert isinstance(prcc, int)
    counts["pRCC"] = {"train": {"": (_scaled(prcc, scale, minimum=1), 0)}}
    return counts


# ---------------------------------------------------------------------------------------------
# Drawing primitives (all on float32 arrays; coordinates in 2x-canvas pixels)


@functools.lru_cache(maxsize=1024)
def _spline_matrix(n_out: int, cells: int) -> np.ndarray:
    """Cubic B-spline weights from ``cells + 3`` knots to ``n_out`` samples, unit variance rows."""
    t = (np.arange(n_out) + 0.5) / n_out * cells
    d = np.abs(t[:, None] - np.arange(-1, cells + 2)[None, :])
    w = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
    # Per-row normalisation keeps the field's variance even between knots and at knots.
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(_F)


def _noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int) -> np.ndarray:
    """A smooth unit-variance random field, features about ``h / cells_y`` pixels across."""
    grid = rng.standard_normal((cells_y + 3, cells_x + 3), dtype=_F)
    return _spline_matrix(h, cells_y) @ grid @ _spline_matrix(w, cells_x).T


def _soft(sd: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a shape whose signed distance (px, positive inside) is ``sd``."""
    return np.clip(sd + 0.5, 0.0, 1.0)


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two positive-inside distance fields with a fillet of width ``k`` at the join."""
    h = np.clip(0.5 + 0.5 * (a - b) / k, 0.0, 1.0)
    return b + (a - b) * h + k * h * (1.0 - h)


def _ellipse_sd(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float
) -> np.ndarray:
    """First-order signed distance (px, positive inside) to a rotated ellipse."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    u = (dx * c + dy * s) / a
    v = (dy * c - dx * s) / b
    q = np.sqrt(u * u + v * v)
    g = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (1.0 - q) * np.where(g > 1e-6, q / np.maximum(g, 1e-6), min(a, b))


def _capsule_sd(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r: float
) -> np.ndarray:
    """Signed distance (px, positive inside) to a segment thickened to radius ``r``."""
    ex, ey = p1[0] - p0[0], p1[1] - p0[1]
    dx, dy = x - p0[0], y - p0[1]
    t = np.clip((dx * ex + dy * ey) / max(ex * ex + ey * ey, 1e-6), 0.0, 1.0)
    return r - np.sqrt((dx - t * ex) ** 2 + (dy - t * ey) ** 2)


def _radial_sd(
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    harmonics: Sequence[tuple[int, float, float]],
) -> np.ndarray:
    """Signed distance to a circle whose radius wobbles as ``1 + sum a cos(k theta + phi)``."""
    rho = np.sqrt(x * x + y * y)
    inv = 1.0 / np.maximum(rho, 1e-6)
    c1, s1 = x * inv, y * inv
    ck, sk, at = c1, s1, 1
    wobble = np.ones_like(rho)
    # cos(k theta), sin(k theta) by the angle-addition recurrence: no arctan2, no complex powers.
    for k, amp, phase in sorted(harmonics):
        for _ in range(k - at):
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        at = k
        wobble += amp * (ck * math.cos(phase) - sk * math.sin(phase))
    return radius * wobble - rho


def _harmonics(rng: np.random.Generator, amount: float, kmax: int = 5) -> list[tuple[int, float, float]]:
    return [
        (k, float(rng.normal(0.0, amount / k)), float(rng.uniform(0, 2 * math.pi)))
        for k in range(2, kmax + 1)
    ]


def _window(
    n: int, cx: float, cy: float, r: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """The canvas slices covering a disc, with broadcastable local pixel-centre coordinates."""
    x0, x1 = max(0, math.floor(cx - r)), min(n, math.ceil(cx + r) + 1)
    y0, y1 = max(0, math.floor(cy - r)), min(n, math.ceil(cy + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    xs = (np.arange(x0, x1, dtype=_F) + 0.5 - cx)[None, :]
    ys = (np.arange(y0, y1, dtype=_F) + 0.5 - cy)[:, None]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def _splat(
    shape: tuple[int, int],
    ys: np.ndarray,
    xs: np.ndarray,
    a: np.ndarray,
    *,
    b: np.ndarray | None = None,
    angle: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    wobble: np.ndarray | None = None,
    hollow: float = 0.0,
) -> np.ndarray:
    """Sum of many small antialiased ellipses (granules, nuclei) on a canvas of ``shape``.

    Each ellipse is evaluated only on its own ``K x K`` patch and accumulated with bincount, so a
    few hundred of them cost about as much as one full-canvas field. ``wobble`` (m, 4) gives each
    outline random 2nd and 3rd harmonics (amplitude, phase pairs) for pleomorphic nuclei;
    ``hollow`` thins the middle of each ellipse (vesicular chromatin, darker at the membrane).
    """
    m = len(xs)
    b = a if b is None else b
    angle = np.zeros(m, _F) if angle is None else angle
    weight = np.ones(m, _F) if weight is None else weight
    total = np.zeros(shape[0] * shape[1], np.float64)
    # Patches sized per group of similar ellipses: one large nucleus must not inflate them all.
    order = np.argsort(np.maximum(a, b), kind="stable")
    for start in range(0, m, 128):
        i = order[start : start + 128]
        total += _splat_group(
            shape, ys[i], xs[i], a[i], b[i], angle[i], weight[i],
            None if wobble is None else wobble[i], hollow,
        )
    return total.reshape(shape).astype(_F)


def _splat_group(
    shape: tuple[int, int],
    ys: np.ndarray,
    xs: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angle: np.ndarray,
    weight: np.ndarray,
    wobble: np.ndarray | None,
    hollow: float,
) -> np.ndarray:
    half = math.ceil(float(max(a.max(), b.max())) * (1.3 if wobble is not None else 1.0)) + 2
    off = np.arange(-half, half + 1)
    iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    py = iy[:, None] + off[None, :]  # (m, K)
    px = ix[:, None] + off[None, :]
    dy = (py + 0.5 - ys[:, None]).astype(_F)[:, :, None]  # (m, K, 1)
    dx = (px + 0.5 - xs[:, None]).astype(_F)[:, None, :]  # (m, 1, K)
    c = np.cos(angle).astype(_F)[:, None, None]
    s = np.sin(angle).astype(_F)[:, None, None]
    u = (dx * c + dy * s) / a[:, None, None]
    v = (dy * c - dx * s) / b[:, None, None]
    q = np.sqrt(u * u + v * v)
    if wobble is not None:
        # cos and sin of 2 theta and 3 theta from u/q, v/q: no arctan2 over the patches.
        inv = 1.0 / np.maximum(q, 1e-6)
        c1, s1 = u * inv, v * inv
        c2, s2 = c1 * c1 - s1 * s1, 2.0 * c1 * s1
        c3, s3 = c2 * c1 - s2 * s1, s2 * c1 + c2 * s1
        wb = wobble[:, :, None, None]
        q = q / (
            1.0
            + wb[:, 0] * (c2 * np.cos(wb[:, 1]) - s2 * np.sin(wb[:, 1]))
            + wb[:, 2] * (c3 * np.cos(wb[:, 3]) - s3 * np.sin(wb[:, 3]))
        )
    # A near-circle's distance is (1 - q) * radius; the mean radius is close enough here.
    cover = np.clip((1.0 - q) * np.sqrt(a * b)[:, None, None] + 0.5, 0.0, 1.0)
    if hollow:
        cover *= 1.0 - hollow * np.clip((0.7 - q) * 4.0, 0.0, 1.0)
    # Off-canvas pixels get weight zero and a clipped index, cheaper than boolean selection.
    cover *= weight[:, None, None]
    h, w = shape
    cover *= ((py >= 0) & (py < h))[:, :, None]
    cover *= ((px >= 0) & (px < w))[:, None, :]
    flat = np.clip(py, 0, h - 1)[:, :, None] * w + np.clip(px, 0, w - 1)[:, None, :]
    return np.bincount(flat.ravel(), weights=cover.ravel(), minlength=h * w)


# ---------------------------------------------------------------------------------------------
# Stains and finishing


def _od(rgb: tuple[float, float, float], white: float = 235.0) -> np.ndarray:
    """Optical density that turns ``white`` light into ``rgb`` at unit stain density."""
    return -np.log(np.asarray(rgb, dtype=np.float64) / white).astype(_F)


# Wright-Giemsa (smears) and H&E (tissue) stain colours at unit density, read off the BCCD crops
# and typical H&E slides. The smear nucleus and the H&E haematoxylin are one family (blue-violet)
# so that features of nuclei learnt on CAM16 carry over to the smears.
_STAINS: dict[str, np.ndarray] = {
    "plasma": _od((226, 224, 224)),
    "rbc": _od((212, 180, 174)),
    "nucleus": _od((145, 121, 230)),
    "cyto_neutrophil": _od((224, 204, 226)),
    "cyto_eosinophil": _od((226, 186, 196)),
    "cyto_basophil": _od((196, 172, 222)),
    "cyto_lymphocyte": _od((172, 190, 232)),
    "cyto_monocyte": _od((188, 186, 222)),
    "cyto_shared": _od((206, 194, 222)),
    "gran_neutrophil": _od((206, 176, 214)),
    "gran_eosinophil": _od((212, 128, 138)),
    "gran_basophil": _od((118, 84, 206)),
    "haematoxylin": _od((92, 72, 160)),
    "eosin": _od((232, 132, 190)),
}


@dataclass(frozen=True)
class _Look:
    """Per-image acquisition: illumination, stain strengths, blur, noise."""

    white: np.ndarray  # (3,) illumination in 0..255
    tint: np.ndarray  # (3,) multiplicative OD hue shift applied to every stain
    strength: float  # global stain density scale
    saturation: float  # 1 keeps colours, < 1 greys them
    blur: float  # Gaussian sigma in output pixels
    noise: float  # sensor noise sigma in 0..255


def _look(rng: np.random.Generator, size: int, *, blur: tuple[float, float]) -> _Look:
    """``blur`` is a range of Gaussian sigmas as fractions of the image side, so a crop looks
    equally sharp at every ``image_size``."""
    base = rng.uniform(198, 238)
    return _Look(
        white=(base + rng.normal(0, 5, 3)).astype(_F),
        tint=np.exp(rng.normal(0, 0.11, 3)).astype(_F),
        strength=float(rng.uniform(0.8, 1.2)),
        saturation=float(rng.uniform(0.95, 1.15)),
        blur=float(rng.uniform(*blur)) * size,
        noise=float(rng.uniform(0.8, 4.0)),
    )


@functools.lru_cache(maxsize=64)
def _blur_matrix(size: int, sigma_q: int) -> np.ndarray:
    """(size, size) Gaussian blur of ``sigma_q / 20`` pixels as a matrix product."""
    sigma = sigma_q / 20.0
    d = np.arange(size)[:, None] - np.arange(size)[None, :]
    w = np.exp(-0.5 * (d / sigma) ** 2)
    # Renormalising rows at the border stands in for reflecting the image.
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(_F)


def _finish(
    densities: Sequence[tuple[np.ndarray, np.ndarray]],
    look: _Look,
    rng: np.random.Generator,
    size: int,
    *,
    vignette: float = 0.0,
) -> np.ndarray:
    """Stain densities (``size x size``) -> blurred, noisy uint8 RGB."""
    stains = np.stack([stain for _, stain in densities]) * (look.tint * look.strength)
    if look.saturation != 1.0:
        grey = stains.mean(axis=1, keepdims=True)
        stains = grey + (stains - grey) * look.saturation
    # (3, k) @ (k, n*n): one BLAS call instead of k broadcasts over an (n, n, 3) array.
    dens = np.stack([d.reshape(-1) for d, _ in densities])
    small = np.exp(-(stains.T.astype(_F) @ dens)).reshape(3, size, size)
    sigma_q = round(look.blur * 20)
    if sigma_q >= 4:
        m = _blur_matrix(size, sigma_q)
        small = m @ small @ m.T
    small *= look.white[:, None, None]
    if vignette:
        r = (np.arange(size, dtype=_F) + 0.5) / size - 0.5
        small *= 1.0 - vignette * (r[:, None] ** 2 + r[None, :] ** 2)
    # Triangular noise of the requested sigma: two uniform draws cost less than one normal.
    shape = small.shape
    small += (rng.random(shape, dtype=_F) - rng.random(shape, dtype=_F)) * (look.noise * 6**0.5)
    small += 0.5
    return np.clip(small, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _box2(field: np.ndarray) -> np.ndarray:
    """2x2 box average: a 2x drawing to the output size."""
    return 0.25 * (field[0::2, 0::2] + field[1::2, 0::2] + field[0::2, 1::2] + field[1::2, 1::2])


# ---------------------------------------------------------------------------------------------
# White blood cells

# Cell diameters in micrometres, overlapping between classes (Bain, Blood Cells, 5th ed.).
_CELL_UM: dict[str, tuple[float, float]] = {
    "Basophil": (10.0, 14.0),
    "Eosinophil": (11.0, 15.0),
    "Lymphocyte": (7.5, 12.0),
    "Monocyte": (13.0, 19.0),
    "Neutrophil": (10.5, 14.5),
}
_RBC_UM = (7.0, 8.2)


def _rbc_layer(
    rng: np.random.Generator, n: int, px_um: float, cell: tuple[float, float, float]
) -> np.ndarray:
    """Red cells scattered over the crop: biconcave discs, some cut by the border or overlapping."""
    density = np.zeros((n, n), _F)
    cx, cy, cr = cell
    count = int(rng.integers(4, 15))
    for _ in range(count):
        r = rng.uniform(*_RBC_UM) / 2 * px_um
        x, y = rng.uniform(-0.2 * n, 1.2 * n, 2)
        # Keep the leukocyte mostly visible: red cells may overlap its rim, not cover it.
        if math.hypot(x - cx, y - cy) < 0.65 * (cr + r):
            continue
        win = _window(n, x, y, r * 1.1 + 1)
        if win is None:
            continue
        sl, xs, ys = win
        e = rng.uniform(0.0, 0.1)
        t = rng.uniform(0, math.pi)
        ct, st = math.cos(t), math.sin(t)
        u = (xs * ct + ys * st) / (r * (1 + e))
        v = (ys * ct - xs * st) / (r * (1 - e))
        q = np.sqrt(u * u + v * v)
        # Central pallor: thinner in the middle of the disc.
        profile = 1.0 - rng.uniform(0.3, 0.6) * np.exp(-((q / rng.uniform(0.4, 0.6)) ** 2))
        density[sl] += _soft((1.0 - q) * r) * profile * rng.uniform(0.8, 1.15)
    return density


def _lobe_chain(
    rng: np.random.Generator, count: int, radius: float
) -> list[tuple[float, float, float, float, float]]:
    """Lobes (x, y, a, b, angle) along a bending path, recentred to fit within the cell."""
    lobes: list[tuple[float, float, float, float, float]] = []
    x = y = 0.0
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.choice([-1.0, 1.0])
    for i in range(count):
        a = rng.uniform(0.27, 0.37) * radius
        b = a * rng.uniform(0.6, 0.9)
        if i:
            step = (a + lobes[-1][2]) * rng.uniform(0.65, 1.0)
            # Mostly curling one way (C and ring shapes), sometimes zig-zagging (S shapes).
            heading += turn * rng.uniform(0.5, 1.4) * (1 if rng.random() < 0.75 else -1)
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        lobes.append((x, y, a, b, heading + rng.normal(0, 0.5)))
    xs = np.array([lo[0] for lo in lobes])
    ys = np.array([lo[1] for lo in lobes])
    mx, my = xs.mean(), ys.mean()
    extent = float(np.max(np.hypot(xs - mx, ys - my) + [lo[2] for lo in lobes]))
    shrink = min(1.0, 0.8 * radius / extent)
    return [((lx - mx) * shrink, (ly - my) * shrink, a, b, t) for lx, ly, a, b, t in lobes]


@dataclass(frozen=True)
class _Frame:
    """The cell window's rotated coordinates (2x pixels from the cell centre) and their pixels."""

    x: np.ndarray
    y: np.ndarray
    cos: float
    sin: float
    col0: float  # window column of the frame's origin
    row0: float

    def box(self, px: float, py: float, r: float) -> tuple[slice, slice]:
        """Window slices covering the frame's disc of radius ``r`` around ``(px, py)``."""
        col = px * self.cos - py * self.sin + self.col0
        row = px * self.sin + py * self.cos + self.row0
        h, w = self.x.shape
        return (slice(max(0, math.floor(row - r)), min(h, math.ceil(row + r) + 1)),
                slice(max(0, math.floor(col - r)), min(w, math.ceil(col + r) + 1)))


def _lobed_nucleus(
    frame: _Frame,
    lobes: list[tuple[float, float, float, float, float]],
    strand: float,
    fillet: float,
    margin: float,
) -> np.ndarray:
    """Lobes joined by strands. Each part is evaluated only in its own box, ``margin`` px beyond
    its outline (enough for the fillet and the outline noise added later); elsewhere the
    distance stays at a large negative value."""
    x, y = frame.x, frame.y
    sd = np.full(x.shape, -1e4, _F)
    for i, lobe in enumerate(lobes):
        box = frame.box(lobe[0], lobe[1], max(lobe[2], lobe[3]) + margin)
        sd[box] = _smooth_union(sd[box], _ellipse_sd(x[box], y[box], *lobe), fillet)
        if i:
            prev = lobes[i - 1]
            mx, my = (prev[0] + lobe[0]) / 2, (prev[1] + lobe[1]) / 2
            box = frame.box(mx, my, math.hypot(lobe[0] - mx, lobe[1] - my) + strand + margin)
            sd[box] = np.maximum(sd[box], _capsule_sd(x[box], y[box], prev[:2], lobe[:2], strand))
    return sd


def _granules(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    radius: float,
    count: int,
    size: tuple[float, float],
    weight: tuple[float, float],
) -> np.ndarray:
    r = radius * np.sqrt(rng.uniform(0, 1, count))
    t = rng.uniform(0, 2 * math.pi, count)
    gx = (centre[0] + r * np.cos(t)).astype(_F)
    gy = (centre[1] + r * np.sin(t)).astype(_F)
    a = rng.uniform(*size, count).astype(_F)
    b = (a * rng.uniform(0.75, 1.0, count)).astype(_F)
    return _splat(
        shape, gy, gx, a, b=b, angle=rng.uniform(0, math.pi, count).astype(_F),
        weight=rng.uniform(*weight, count).astype(_F),
    )


def render_wbc(
    cls: str, rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic smear crop centred on a leukocyte of class ``cls``.

    Returns ``(image, mask)``: ``image`` uint8 (size, size, 3); ``mask`` uint8 (size, size) with
    0 background, 128 cytoplasm, 255 nucleus, computed from the same shapes that were drawn.
    """
    if cls not in _CELL_UM:
        raise ValueError(f"unknown WBC class {cls!r}; expected one of {', '.join(WBC_CLASSES)}")
    cell_um = rng.uniform(*_CELL_UM[cls])
    # Crops in the wild are cut around the cell with a margin, so a small cell gets a tighter
    # crop; the geometric mean with a fixed field keeps red cells as the absolute size cue.
    crop_um = math.sqrt(19.0 * cell_um * rng.uniform(1.15, 1.55))
    px_um = size / crop_um
    off = rng.normal(0, 0.06 * size, 2).clip(-0.15 * size, 0.15 * size)
    cx, cy = size / 2 + off[0], size / 2 + off[1]

    look = _look(rng, size, blur=(0.003, 0.016))
    # Plasma and red cells are smooth: drawn at the output size, antialiased by their ramps.
    plasma = (0.25 + 0.12 * _noise(rng, size, size, 3, 3)).astype(_F)
    rbc = _rbc_layer(rng, size, px_um, (cx, cy, cell_um / 2 * px_um))

    # The leukocyte's fine detail (lobes, strands, granules) is drawn at 2x in a window around
    # it, clipped to the crop, and box-averaged down.
    half = math.ceil(cell_um / 2 * px_um * 1.25) + 1
    x0, y0 = max(0, math.floor(cx) - half), max(0, math.floor(cy) - half)
    x1, y1 = min(size, math.floor(cx) + half), min(size, math.floor(cy) + half)
    h, w = 2 * (y1 - y0), 2 * (x1 - x0)
    radius = cell_um * px_um  # in 2x pixels
    xs = (np.arange(w, dtype=_F) + 0.5 + 2 * x0 - 2 * cx)[None, :]
    ys = (np.arange(h, dtype=_F) + 0.5 + 2 * y0 - 2 * cy)[:, None]
    # Rotate the whole design: the class must not be read off an orientation.
    rot = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(rot), math.sin(rot)
    x = np.broadcast_to(xs * c + ys * s, (h, w)).astype(_F)
    y = np.broadcast_to(ys * c - xs * s, (h, w)).astype(_F)
    frame = _Frame(x, y, c, s, 2 * (cx - x0) - 0.5, 2 * (cy - y0) - 0.5)
    # Outline noise (0.03-0.06 radius per sigma) stays well within 0.2 radius of the lobes.
    margin = 0.2 * radius + 2
    cells = max(2, round(2 * radius * 1.3 / 18))
    irregular = _noise(rng, h, w, cells, cells)
    # Monocytes spread and crease on the slide; the others stay rounder.
    outline = 0.09 if cls == "Monocyte" else 0.05
    cell_sd = _radial_sd(x, y, radius, _harmonics(rng, outline)) + irregular * radius * 0.025
    cell = _soft(cell_sd)

    fine = _noise(rng, h, w, max(2, round(h / 5)), max(2, round(w / 5)))
    clumps = _noise(rng, h, w, max(2, round(h / 11)), max(2, round(w / 11)))
    nuc_darkness = 1.0
    chromatin = 0.2 * clumps + 0.08 * fine
    cyto_density = 0.55 * (1.0 + 0.1 * fine)
    gran = np.zeros((h, w), _F)
    gran_stain = _STAINS["gran_neutrophil"]
    # Granules are splatted on the window, around the cell's centre in window pixels.
    wc = (2 * (cx - x0), 2 * (cy - y0))

    if cls == "Neutrophil":
        lobes = _lobe_chain(rng, int(rng.choice([3, 4, 5], p=[0.5, 0.38, 0.12])), radius)
        nuc_sd = _lobed_nucleus(frame, lobes, rng.uniform(0.035, 0.07) * radius, 0.05 * radius,
                                margin)
        nuc_sd += irregular * radius * 0.03
        nuc_darkness = rng.uniform(0.85, 1.1)
        cyto_density = rng.uniform(0.6, 0.9) * (1.0 + 0.35 * fine)
        gran = _granules(rng, (h, w), wc, radius * 0.92, int(rng.integers(100, 250)),
                         (0.022 * radius, 0.035 * radius), (0.15, 0.4))
    elif cls == "Eosinophil":
        sep = rng.uniform(0.28, 0.4) * radius
        a = rng.uniform(0.27, 0.36) * radius
        lobes = [(-sep, 0.0, a, a * rng.uniform(0.7, 0.95), rng.normal(0.4, 0.4)),
                 (sep, 0.0, a * rng.uniform(0.85, 1.1), a * rng.uniform(0.7, 0.95),
                  rng.normal(-0.4, 0.4))]
        if rng.random() < 0.12:
            lobes.append((0.0, rng.choice([-1, 1]) * sep * 0.9, a * 0.7, a * 0.55, 0.0))
        dx, dy = rng.normal(0, 0.08 * radius, 2)
        lobes = [(lx + dx, ly + dy, la, lb, t) for lx, ly, la, lb, t in lobes]
        nuc_sd = _lobed_nucleus(frame, lobes, rng.uniform(0.05, 0.1) * radius, 0.06 * radius,
                                margin)
        nuc_sd += irregular * radius * 0.03
        nuc_darkness = rng.uniform(0.75, 0.95)
        cyto_density = rng.uniform(0.4, 0.6) * (1.0 + 0.2 * fine)
        gsize = rng.uniform(0.038, 0.052) * radius
        count = int(rng.uniform(1.0, 1.5) * (0.95 * radius / gsize) ** 2)
        gran = _granules(rng, (h, w), wc, radius * 0.95, count, (gsize * 0.85, gsize * 1.15),
                         (0.5, 0.9))
        gran_stain = _STAINS["gran_eosinophil"]
    elif cls == "Basophil":
        count = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        if count == 1:
            a = rng.uniform(0.45, 0.6) * radius
            lobes = [(0.0, 0.0, a, a * rng.uniform(0.65, 0.9), rng.uniform(0, math.pi))]
        else:
            lobes = [(lx * 1.2, ly * 1.2, la * 1.4, lb * 1.4, t)
                     for lx, ly, la, lb, t in _lobe_chain(rng, count, radius * 0.75)]
        nuc_sd = _lobed_nucleus(frame, lobes, 0.12 * radius, 0.12 * radius, margin)
        nuc_sd += irregular * radius * 0.06
        nuc_darkness = rng.uniform(0.55, 0.8)
        cyto_density = rng.uniform(0.6, 0.9) * (1.0 + 0.25 * fine)
        gsize = rng.uniform(0.05, 0.075) * radius
        gran = _granules(rng, (h, w), wc, radius * 0.93, int(rng.integers(80, 200)),
                         (gsize * 0.6, gsize * 1.5), (0.6, 1.3))
        gran_stain = _STAINS["gran_basophil"]
    elif cls == "Lymphocyte":
        a = rng.uniform(0.76, 0.93) * radius
        ang = rng.uniform(0, math.pi)
        off_n = rng.uniform(0, radius - a) * 0.8
        nuc_sd = _ellipse_sd(x, y, off_n, 0.0, a, a * rng.uniform(0.85, 1.0), ang)
        if rng.random() < 0.3:
            # A shallow cleft, as in many small lymphocytes.
            notch = _ellipse_sd(x, y, off_n + a * 1.05, 0.0, 0.25 * a, 0.25 * a, 0.0)
            nuc_sd = -_smooth_union(-nuc_sd, notch, 0.05 * radius)
        nuc_sd += irregular * radius * 0.02
        nuc_darkness = rng.uniform(1.05, 1.3)
        chromatin = 0.25 * clumps + 0.1 * fine
        cyto_density = rng.uniform(0.5, 0.8) * (1.0 + 0.1 * fine)
    else:  # Monocyte
        a = rng.uniform(0.55, 0.72) * radius
        b = a * rng.uniform(0.75, 0.95)
        shift = rng.uniform(0.05, 0.2) * radius
        nuc_sd = _ellipse_sd(x, y, shift, 0.0, a, b, rng.normal(math.pi / 2, 0.3))
        kind = rng.random()
        if kind < 0.75:
            # Kidney or horseshoe: a notch bitten out of the side facing the cell centre.
            nr = rng.uniform(0.22, 0.38) * radius
            notch = _ellipse_sd(x, y, shift - a * rng.uniform(0.9, 1.2), rng.normal(0, 0.1 * a),
                                nr * 1.2, nr, 0.0)
            nuc_sd = -_smooth_union(-nuc_sd, notch, 0.08 * radius)
        else:
            # Folded: a second overlapping lobe.
            fold = _ellipse_sd(x, y, shift - 0.35 * a, 0.4 * b, a * 0.6, b * 0.55,
                               rng.uniform(0, math.pi))
            nuc_sd = _smooth_union(nuc_sd, fold, 0.1 * radius)
        nuc_sd += irregular * radius * 0.04
        nuc_darkness = rng.uniform(0.62, 0.82)
        lace = 1.0 - 2.0 * np.abs(_noise(rng, h, w, max(2, round(h / 8)), max(2, round(w / 8))))
        chromatin = 0.22 * np.clip(lace, -1.5, 1.0) + 0.1 * clumps
        cyto_density = rng.uniform(0.6, 0.85) * (1.0 + 0.12 * fine)
        vac = np.zeros((h, w), _F)
        for _ in range(int(rng.integers(0, 7))):
            t = rng.uniform(0, 2 * math.pi)
            rr = rng.uniform(0.5, 0.9) * radius
            vr = rng.uniform(0.035, 0.08) * radius
            vx, vy = rr * math.cos(t), rr * math.sin(t)
            box = frame.box(vx, vy, vr + 2)
            vac[box] = np.maximum(vac[box], _soft(_ellipse_sd(x[box], y[box], vx, vy, vr, vr, 0.0)))
        cyto_density = cyto_density * (1.0 - 0.75 * vac)

    # Cytoplasm hues overlap between classes (staining varies more than textbooks show), so the
    # class must be read from shape and texture rather than from a colour histogram.
    mix = rng.uniform(0.0, 0.6)
    cyto_stain = (1 - mix) * _STAINS[f"cyto_{cls.lower()}"] + mix * _STAINS["cyto_shared"]
    # The nucleus never leaves the cell: intersect rather than trust each recipe's geometry.
    nucleus = np.minimum(_soft(nuc_sd), _soft(cell_sd - 0.04 * radius))
    nuc_density = nucleus * nuc_darkness * np.clip(1.0 + chromatin, 0.3, 1.6)
    gran = np.minimum(gran, 1.4) * cell

    layers = {
        "cell": cell, "cyto": cell * cyto_density, "nuc": nuc_density, "gran": gran,
        "nucleus": nucleus,
    }
    full: dict[str, np.ndarray] = {}
    for name, layer in layers.items():
        full[name] = np.zeros((size, size), _F)
        full[name][y0:y1, x0:x1] = _box2(layer)

    image = _finish(
        [
            (plasma * (1.0 - full["cell"]), _STAINS["plasma"]),
            (rbc, _STAINS["rbc"]),
            (full["cyto"], cyto_stain),
            (full["nuc"], _STAINS["nucleus"]),
            (full["gran"], gran_stain),
        ],
        look,
        rng,
        size,
        vignette=rng.uniform(0.0, 0.25),
    )
    mask = np.where(full["nucleus"] >= 0.5, 255,
                    np.where(full["cell"] >= 0.5, 128, 0)).astype(np.uint8)
    return image, mask


# ---------------------------------------------------------------------------------------------
# Tissue tiles (CAM16, pRCC)


def _fibres(rng: np.random.Generator, n: int) -> np.ndarray:
    """Wavy collagen-like streaks in 0..1."""
    t = rng.uniform(0, math.pi)
    r = (np.arange(n, dtype=_F) + 0.5) / n
    along = np.cos(t) * r[None, :] + np.sin(t) * r[:, None]
    warp = _noise(rng, n, n, 3, 3)
    streaks = np.sin(2 * math.pi * rng.uniform(8, 18) * along + 4.0 * warp)
    # Fade the streaks in and out so they read as bundles, not as a grating.
    return 0.5 + 0.5 * streaks * np.clip(0.5 + 0.6 * _noise(rng, n, n, 5, 5), 0.0, 1.0)


def _nuclei(
    rng: np.random.Generator,
    n: int,
    xs: np.ndarray,
    ys: np.ndarray,
    radius: np.ndarray,
    *,
    elong: tuple[float, float],
    angle: np.ndarray | None = None,
    wobble: float = 0.0,
    darkness: tuple[float, float] = (0.9, 1.1),
    hollow: float = 0.0,
) -> np.ndarray:
    m = len(xs)
    a = radius.astype(_F)
    b = (a * rng.uniform(*elong, m)).astype(_F)
    ang = rng.uniform(0, math.pi, m) if angle is None else angle
    wob = None
    if wobble:
        wob = np.stack([rng.normal(0, wobble, m), rng.uniform(0, 2 * math.pi, m),
                        rng.normal(0, wobble * 0.7, m), rng.uniform(0, 2 * math.pi, m)], 1)
        wob = np.clip(wob, -0.35, 2 * math.pi).astype(_F)
    return _splat((n, n), ys.astype(_F), xs.astype(_F), a, b=b, angle=ang.astype(_F),
                  weight=rng.uniform(*darkness, m).astype(_F), wobble=wob, hollow=hollow)


def _jittered_grid(
    rng: np.random.Generator, n: int, spacing: float, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    k = math.ceil(n / spacing) + 1
    gy, gx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    stagger = (gy % 2) * 0.5
    xs = (gx + stagger).ravel() * spacing + rng.normal(0, jitter * spacing, k * k)
    ys = gy.ravel() * spacing * 0.9 + rng.normal(0, jitter * spacing, k * k)
    shift = rng.uniform(-spacing, 0, 2)
    return xs + shift[0], ys + shift[1]


def _lookup(field: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    n = field.shape[0]
    return field[np.clip(ys.astype(np.int64), 0, n - 1), np.clip(xs.astype(np.int64), 0, n - 1)]


def render_cam16(
    cls: str, rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """One H&E lymph-node-like tile of class ``normal`` or ``tumor``.

    Returns ``(image, mask)``: the mask is 255 on nuclei, 0 elsewhere.
    """
    if cls not in CAM16_CLASSES:
        raise ValueError(f"unknown CAM16 class {cls!r}; expected one of {', '.join(CAM16_CLASSES)}")
    # Tissue is drawn at the output size: nuclei are several pixels across, and their distance
    # ramps antialias them.
    n = size
    px_um = n / rng.uniform(70, 100)
    look = _look(rng, size, blur=(0.0015, 0.009))
    fib = _fibres(rng, n)
    eosin = (0.5 + 0.15 * fib + 0.1 * _noise(rng, n, n, 6, 6)).astype(_F)
    hema = np.zeros((n, n), _F)
    lumen = np.zeros((n, n), _F)

    if cls == "normal":
        pattern = rng.choice(["lymphoid", "glandular"], p=[0.55, 0.45])
        if pattern == "lymphoid":
            r = rng.uniform(2.8, 3.6) * px_um
            xs, ys = _jittered_grid(rng, n, r * rng.uniform(2.3, 3.0), 0.12)
            keep = rng.random(xs.size) > rng.uniform(0.05, 0.3)
            xs, ys = xs[keep], ys[keep]
            rad = r * rng.uniform(0.9, 1.1, xs.size)
            hema = _nuclei(rng, n, xs, ys, rad, elong=(0.85, 1.0), wobble=0.03,
                           darkness=(0.95, 1.2))
            eosin *= rng.uniform(0.5, 0.8)
        else:
            for _ in range(int(rng.integers(1, 4))):
                gx, gy = rng.uniform(0.1, 0.9, 2) * n
                ga = rng.uniform(8, 18) * px_um
                gb = ga * rng.uniform(0.5, 0.9)
                gt = rng.uniform(0, math.pi)
                win = _window(n, gx, gy, ga + 2)
                if win is not None:
                    sl, wx, wy = win
                    lumen[sl] = np.maximum(lumen[sl], _soft(_ellipse_sd(wx, wy, 0, 0, ga, gb, gt)))
                # A single regular row of epithelial nuclei around the lumen, evenly spaced.
                nr = rng.uniform(2.3, 3.0) * px_um
                steps = max(6, int(2 * math.pi * (ga + nr * 1.8) / (nr * 2.6)))
                phi = np.linspace(0, 2 * math.pi, steps, endpoint=False) + rng.uniform(0, 1)
                ex = (ga + nr * 1.8) * np.cos(phi)
                ey = (gb + nr * 1.8) * np.sin(phi)
                c, s = math.cos(gt), math.sin(gt)
                xs = gx + ex * c - ey * s + rng.normal(0, 0.3, steps)
                ys = gy + ex * s + ey * c + rng.normal(0, 0.3, steps)
                hema += _nuclei(rng, n, xs, ys, nr * rng.uniform(0.9, 1.1, steps),
                                elong=(0.55, 0.75), angle=(phi + gt).astype(_F), wobble=0.02)
            # Sparse spindle-shaped stromal nuclei between glands, along the fibres.
            m = int(rng.integers(8, 25))
            xs, ys = rng.uniform(0, n, m), rng.uniform(0, n, m)
            ok = _lookup(lumen, xs, ys) < 0.1
            hema += _nuclei(rng, n, xs[ok], ys[ok], rng.uniform(3, 4.5, ok.sum()) * px_um,
                            elong=(0.25, 0.4), wobble=0.02, darkness=(0.8, 1.0))
        chroma = 0.15
    else:
        r = rng.uniform(4.2, 6.5) * px_um
        xs, ys = _jittered_grid(rng, n, r * rng.uniform(1.9, 2.5), 0.22)
        if rng.random() < 0.4:
            # Tumour nests in stroma rather than a solid sheet.
            nest = _noise(rng, n, n, 3, 3)
            ok = _lookup(nest, xs, ys) > rng.uniform(-0.6, 0.0)
            xs, ys = xs[ok], ys[ok]
        rad = r * np.exp(rng.normal(0, 0.22, xs.size))
        hema = _nuclei(rng, n, xs, ys, rad, elong=(0.6, 1.0), wobble=0.07,
                       darkness=(1.0, 1.45), hollow=rng.uniform(0.0, 0.4))
        # Nucleoli: a small dark dot in some nuclei.
        some = rng.random(xs.size) < 0.4
        hema += _nuclei(rng, n, xs[some] + rng.normal(0, 0.75, some.sum()),
                        ys[some] + rng.normal(0, 0.75, some.sum()),
                        rad[some] * rng.uniform(0.13, 0.2), elong=(0.8, 1.0), darkness=(0.6, 0.9))
        eosin *= rng.uniform(0.6, 0.95)
        chroma = 0.3

    cover = np.minimum(hema, 1.0)
    texture = 1.0 + chroma * _noise(rng, n, n, max(2, round(n / 3.5)), max(2, round(n / 3.5)))
    eosin *= 1.0 - lumen * rng.uniform(0.85, 1.0)
    image = _finish(
        [
            (eosin * (1.0 - 0.3 * cover), _STAINS["eosin"]),
            (np.minimum(hema, 1.6) * texture, _STAINS["haematoxylin"]),
        ],
        look, rng, size,
    )
    mask = np.where(cover >= 0.5, 255, 0).astype(np.uint8)
    return image, mask


def render_prcc(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One H&E tile of papillary renal-cell-like tissue: fronds lined by nuclei, foamy cells."""
    n = size
    px_um = n / rng.uniform(80, 130)
    look = _look(rng, size, blur=(0.0015, 0.009))
    # Fronds: level set of an anisotropic smooth field, so the tissue comes as fingers.
    ax, ay = (3, int(rng.integers(5, 8))) if rng.random() < 0.5 else (int(rng.integers(5, 8)), 3)
    relief = _noise(rng, n, n, ay, ax) + 0.6 * _noise(rng, n, n, 6, 6)
    level = rng.uniform(-0.5, 0.3)
    gy, gx = np.gradient(relief)
    sd = (relief - level) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)
    tissue = _soft(sd)
    lining = rng.uniform(4, 6) * px_um
    core = _soft(sd - lining)

    fib = _fibres(rng, n)
    eosin = tissue * (0.35 + 0.25 * (1 - core)) + core * (0.2 * fib)
    eosin += 0.08 * (1.0 - tissue) * (_noise(rng, n, n, 4, 4) > 0.8)

    # Epithelial nuclei in one row along every frond edge: candidates near half the lining
    # depth, thinned to one per grid cell of about a nuclear spacing.
    nr = rng.uniform(2.6, 3.6) * px_um
    m = 3000
    cx, cy = rng.uniform(0, n, m), rng.uniform(0, n, m)
    depth = _lookup(sd, cx, cy)
    ok = np.abs(depth - lining * rng.uniform(0.4, 0.6)) < nr * 0.6
    cx, cy = cx[ok], cy[ok]
    cell = (cy // (nr * 2.4)).astype(np.int64) * 10_000 + (cx // (nr * 2.4)).astype(np.int64)
    _, first = np.unique(cell, return_index=True)
    cx, cy = cx[first], cy[first]
    hema = _nuclei(rng, n, cx, cy, nr * rng.uniform(0.85, 1.2, cx.size), elong=(0.6, 0.95),
                   wobble=0.06, darkness=(0.85, 1.25))
    # Foamy macrophages in the cores: pale bubbly cytoplasm, a small dark nucleus.
    k = int(rng.integers(0, 80)) if rng.random() < 0.6 else 0
    fx, fy = rng.uniform(0, n, k), rng.uniform(0, n, k)
    ok = _lookup(core, fx, fy) > 0.5
    fx, fy = fx[ok], fy[ok]
    fr = rng.uniform(6, 9, fx.size) * px_um
    foam = np.minimum(_nuclei(rng, n, fx, fy, fr, elong=(0.7, 1.0), wobble=0.05,
                              darkness=(1.0, 1.0)), 1.0)
    bubbles = np.clip(_noise(rng, n, n, max(2, round(n / 2.5)), max(2, round(n / 2.5))), 0.0, 1.0)
    eosin = eosin * (1.0 - 0.8 * foam) + foam * (0.12 + 0.25 * bubbles)
    hema += _nuclei(rng, n, fx + rng.normal(0, 1, fx.size), fy + rng.normal(0, 1, fx.size),
                    fr * 0.28, elong=(0.7, 1.0), darkness=(0.9, 1.2))
    # Stromal nuclei scattered in the cores.
    k = int(rng.integers(5, 30))
    sx, sy = rng.uniform(0, n, k), rng.uniform(0, n, k)
    ok = _lookup(core, sx, sy) > 0.5
    hema += _nuclei(rng, n, sx[ok], sy[ok], rng.uniform(2.5, 4, ok.sum()) * px_um,
                    elong=(0.3, 0.5), darkness=(0.8, 1.0))
    texture = 1.0 + 0.2 * _noise(rng, n, n, max(2, round(n / 3.5)), max(2, round(n / 3.5)))
    return _finish(
        [
            (eosin.astype(_F), _STAINS["eosin"]),
            (np.minimum(hema, 1.6) * texture, _STAINS["haematoxylin"]),
        ],
        look, rng, size,
    )


# ---------------------------------------------------------------------------------------------
# Writing the tree

# Top-level folders this module writes; overwrite=True removes exactly these.
_OWNED = ("WBC_100", *(subset_name(p) for p in SUBSETS), "CAM16", "pRCC", "synth.json")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out: Path
    counts: Counts  # dataset -> split -> class -> (data, mask) files, subsets included
    images: int  # image files rendered (WBC_100, CAM16, pRCC); subset links not counted
    masks: int  # mask files rendered
    linked: int  # subset files hard-linked (or copied where linking failed)
    seconds: float
    seed: int
    scale: float
    image_size: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Job:
    dataset: str
    split: str
    cls: str
    class_id: int
    index: int
    data: str
    mask: str | None


def _stream(seed: int, job: _Job) -> np.random.SeedSequence:
    return np.random.SeedSequence(
        [seed, _DATASET_ID[job.dataset], _SPLIT_ID[job.split], job.class_id, job.index]
    )


def _write_atomic(path: Path, data: bytes) -> None:
    # Same folder, then rename: an interrupted run leaves a stray hidden .tmp (which no scanner
    # reads as an image), never a truncated JPEG under the final name.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
    tmp.replace(path)


def _encode(array: np.ndarray, fmt: str, **options: int) -> bytes:
    buf = BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


def _render_job(seed: int, image_size: int, job: _Job) -> None:
    draw, encode = _stream(seed, job).spawn(2)
    rng = np.random.default_rng(draw)
    mask: np.ndarray | None
    if job.dataset == "WBC_100":
        image, mask = render_wbc(job.cls, rng, image_size)
    elif job.dataset == "CAM16":
        image, mask = render_cam16(job.cls, rng, image_size)
    else:
        image, mask = render_prcc(rng, image_size), None
    quality = int(np.random.default_rng(encode).integers(72, 96))
    _write_atomic(Path(job.data), _encode(image, "JPEG", quality=quality))
    if job.mask is not None:
        assert mask is not None
        _write_atomic(Path(job.mask), _encode(mask, "PNG", compress_level=6))


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread: the matrices here are small, and BLAS threads on top of the
    workers oversubscribe the cores (a two-worker run measured slower than one without this)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _init_worker() -> None:
    _one_blas_thread().__enter__()


def _render_chunk(args: tuple[int, int, list[_Job]]) -> int:
    seed, image_size, jobs = args
    for job in jobs:
        _render_job(seed, image_size, job)
    return len(jobs)


def _plan_jobs(
    out: Path, counts: Counts, seed: int
) -> tuple[list[_Job], list[_Job]]:
    """All render jobs, and the WBC_100 train jobs in the order subsets index them."""
    jobs: list[_Job] = []
    wbc_train: list[_Job] = []
    for dataset, classes in (("WBC_100", WBC_CLASSES), ("CAM16", CAM16_CLASSES), ("pRCC", ("",))):
        for split, per_class in counts[dataset].items():
            for class_id, cls in enumerate(classes):
                n_data, n_mask = per_class[cls]
                pick = np.random.default_rng(
                    np.random.SeedSequence([seed, _MASK_STREAM, _DATASET_ID[dataset], class_id])
                )
                with_mask = set(pick.choice(n_data, n_mask, replace=False).tolist())
                folder = out / dataset / split
                prefix = "_".join(p for p in (dataset.split("_")[0], cls, split) if p)
                for i in range(n_data):
                    stem = f"{prefix}_{i:06d}"
                    job = _Job(
                        dataset, split, cls, class_id, i,
                        str(folder / "data" / cls / f"{stem}.jpg"),
                        str(folder / "mask" / cls / f"{stem}.png") if i in with_mask else None,
                    )
                    jobs.append(job)
                    if dataset == "WBC_100" and split == "train":
                        wbc_train.append(job)
    return jobs, wbc_train


def _link_subsets(
    out: Path, wbc_train: list[_Job], seed: int
) -> tuple[dict[str, dict[str, dict[str, tuple[int, int]]]], int]:
    labels = np.array([job.class_id for job in wbc_train], dtype=np.int64)
    has_mask = np.array([job.mask is not None for job in wbc_train], dtype=bool)
    chosen = derive_subsets(labels, has_mask, SUBSETS, seed=seed)
    counts: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    linked = 0
    for p, indices in chosen.items():
        name = subset_name(p)
        per_class = {cls: [0, 0] for cls in WBC_CLASSES}
        for i in indices.tolist():
            job = wbc_train[i]
            pairs = [(Path(job.data), "data")]
            if job.mask is not None:
                pairs.append((Path(job.mask), "mask"))
            for src, kind in pairs:
                dst = out / name / "train" / kind / job.cls / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(src, dst)
                linked += 1
            per_class[job.cls][0] += 1
            per_class[job.cls][1] += job.mask is not None
        counts[name] = {"train": {c: (d, m) for c, (d, m) in per_class.items()}}
    return counts, linked


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; choose a folder to write the tree in")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out} is not empty; choose an empty or new folder, or pass overwrite=True "
                f"(CLI: --overwrite) to replace its {', '.join(_OWNED)}"
            )
        for name in _OWNED:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _chunks(jobs: list[_Job], size: int) -> Iterator[list[_Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def synthesize(
    out: Path,
    *,
    scale: float = 1.0,
    image_size: int = 128,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic WBC + CAM16 + pRCC tree in the report's layout under ``out``.

    Counts follow :func:`planned_counts` (``scale=1.0`` is the report's Tables 1 and 2). WBC_50,
    WBC_10 and WBC_1 are hard links to WBC_100 train files chosen by
    :func:`wbc.subsets.derive_subsets` with the same ``seed``. Files are byte-identical for the
    same ``seed``, ``scale`` and ``image_size`` whatever ``workers`` is. Raises ValueError if
    ``out`` is not empty, unless ``overwrite`` (which replaces only the folders written here).
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    counts = planned_counts(scale)
    out = Path(out)
    _prepare_out(out, overwrite)
    start = time.perf_counter()
    say = progress or (lambda _msg: None)

    jobs, wbc_train = _plan_jobs(out, counts, seed)
    for folder in sorted({str(Path(p).parent) for j in jobs for p in (j.data, j.mask) if p}):
        Path(folder).mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 16))
    # Small chunks keep every worker busy to the end; 32 images are ~0.5 s of work.
    chunks = [(seed, image_size, chunk) for chunk in _chunks(jobs, 32)]
    done, next_report = 0, 0.0
    say(f"rendering {len(jobs)} images with {workers} worker(s) into {out}")
    if workers == 1:
        with _one_blas_thread():
            for chunk in chunks:
                done += _render_chunk(chunk)
                next_report = _report(say, done, len(jobs), next_report)
    else:
        methods = mp.get_all_start_methods()
        # forkserver/spawn: forking a parent that already runs threads (torch, Ray) can hang.
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for k in pool.imap_unordered(_render_chunk, chunks):
                done += k
                next_report = _report(say, done, len(jobs), next_report)

    say("linking WBC_50/10/1")
    subset_counts, linked = _link_subsets(out, wbc_train, seed)
    all_counts: dict[str, dict[str, dict[str, tuple[int, int]]]] = dict(counts)
    all_counts.update(subset_counts)
    provenance = {
        "generator": "wbc.synth",
        "seed": seed,
        "scale": scale,
        "image_size": image_size,
        "counts": {d: {s: {c: list(v) for c, v in pc.items()} for s, pc in sp.items()}
                   for d, sp in all_counts.items()},
    }
    _write_atomic(out / "synth.json", json.dumps(provenance, indent=1).encode())
    seconds = time.perf_counter() - start
    summary = SynthSummary(
        out=out,
        counts=all_counts,
        images=len(jobs),
        masks=sum(j.mask is not None for j in jobs),
        linked=linked,
        seconds=seconds,
        seed=seed,
        scale=scale,
        image_size=image_size,
    )
    say(f"wrote {summary.images} images and {summary.masks} masks in {seconds:.1f} s "
        f"({summary.images_per_second:.0f} images/s), linked {linked} subset files")
    return summary


def _report(say: Callable[[str], None], done: int, total: int, next_report: float) -> float:
    # Roughly every 10%, and at the end.
    if done >= total or done >= next_report:
        say(f"{done}/{total} images")
        return done + total / 10
    return next_report
