"""Drawing primitives on float32 arrays: smooth noise, signed distances, splats, blur.

Coordinates are pixel centres of whatever canvas a caller draws on (the 2x leukocyte window or
an output-size tissue tile). Distances are positive inside a shape, in pixels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "F32",
    "blur_matrix",
    "box2",
    "capsule_sd",
    "ellipse_sd",
    "harmonics",
    "noise",
    "radial_sd",
    "smooth_union",
    "soft",
    "splat",
    "window",
]

F32 = np.float32


@functools.lru_cache(maxsize=1024)
def _spline_matrix(n_out: int, cells: int) -> np.ndarray:
    """Cubic B-spline weights from ``cells + 3`` knots to ``n_out`` samples, unit variance rows."""
    t = (np.arange(n_out) + 0.5) / n_out * cells
    d = np.abs(t[:, None] - np.arange(-1, cells + 2)[None, :])
    w = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
    # Per-row normalisation keeps the field's variance even between knots and at knots.
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(F32)


def noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int) -> np.ndarray:
    """A smooth unit-variance random field, features about ``h / cells_y`` pixels across."""
    grid = rng.standard_normal((cells_y + 3, cells_x + 3), dtype=F32)
    return _spline_matrix(h, cells_y) @ grid @ _spline_matrix(w, cells_x).T


def soft(sd: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a shape whose signed distance (px, positive inside) is ``sd``."""
    return np.clip(sd + 0.5, 0.0, 1.0)


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two positive-inside distance fields with a fillet of width ``k`` at the join."""
    h = np.clip(0.5 + 0.5 * (a - b) / k, 0.0, 1.0)
    return b + (a - b) * h + k * h * (1.0 - h)


def ellipse_sd(
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


def capsule_sd(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r: float
) -> np.ndarray:
    """Signed distance (px, positive inside) to a segment thickened to radius ``r``."""
    ex, ey = p1[0] - p0[0], p1[1] - p0[1]
    dx, dy = x - p0[0], y - p0[1]
    t = np.clip((dx * ex + dy * ey) / max(ex * ex + ey * ey, 1e-6), 0.0, 1.0)
    return r - np.sqrt((dx - t * ex) ** 2 + (dy - t * ey) ** 2)


def radial_sd(
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


def harmonics(
    rng: np.random.Generator, amount: float, kmax: int = 5
) -> list[tuple[int, float, float]]:
    """Random outline harmonics ``(k, amplitude, phase)`` for ``k = 2..kmax`` for
    :func:`radial_sd`; amplitudes fall as ``amount / k`` so the outline stays smooth."""
    return [
        (k, float(rng.normal(0.0, amount / k)), float(rng.uniform(0, 2 * math.pi)))
        for k in range(2, kmax + 1)
    ]


def window(
    n: int, cx: float, cy: float, r: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """The canvas slices covering a disc, with broadcastable local pixel-centre coordinates."""
    x0, x1 = max(0, math.floor(cx - r)), min(n, math.ceil(cx + r) + 1)
    y0, y1 = max(0, math.floor(cy - r)), min(n, math.ceil(cy + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    xs = (np.arange(x0, x1, dtype=F32) + 0.5 - cx)[None, :]
    ys = (np.arange(y0, y1, dtype=F32) + 0.5 - cy)[:, None]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def splat(
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
    ramp: np.ndarray | None = None,
) -> np.ndarray:
    """Sum of many small antialiased ellipses (granules, nuclei) on a canvas of ``shape``.

    Each ellipse is evaluated only on its own ``K x K`` patch and accumulated with bincount, so a
    few hundred of them cost about as much as one full-canvas field. ``wobble`` (m, 4) gives each
    outline random 2nd and 3rd harmonics (amplitude, phase pairs) for pleomorphic nuclei;
    ``hollow`` thins the middle of each ellipse (vesicular chromatin, darker at the membrane);
    ``ramp`` (m,) widens each outline's antialiasing ramp from one pixel to that many.
    """
    m = len(xs)
    b = a if b is None else b
    angle = np.zeros(m, F32) if angle is None else angle
    weight = np.ones(m, F32) if weight is None else weight
    total = np.zeros(shape[0] * shape[1], np.float64)
    # Patches sized per group of similar ellipses: one large nucleus must not inflate them all.
    order = np.argsort(np.maximum(a, b), kind="stable")
    for start in range(0, m, 128):
        i = order[start : start + 128]
        total += _splat_group(
            shape, ys[i], xs[i], a[i], b[i], angle[i], weight[i],
            None if wobble is None else wobble[i], hollow, None if ramp is None else ramp[i],
        )
    return total.reshape(shape).astype(F32)


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
    ramp: np.ndarray | None,
) -> np.ndarray:
    half = math.ceil(float(max(a.max(), b.max())) * (1.3 if wobble is not None else 1.0)) + 2
    if ramp is not None:
        half += math.ceil(float(ramp.max()) / 2)
    off = np.arange(-half, half + 1)
    iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    py = iy[:, None] + off[None, :]  # (m, K)
    px = ix[:, None] + off[None, :]
    dy = (py + 0.5 - ys[:, None]).astype(F32)[:, :, None]  # (m, K, 1)
    dx = (px + 0.5 - xs[:, None]).astype(F32)[:, None, :]  # (m, 1, K)
    c = np.cos(angle).astype(F32)[:, None, None]
    s = np.sin(angle).astype(F32)[:, None, None]
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
    mean_radius = np.sqrt(a * b) if ramp is None else np.sqrt(a * b) / ramp
    cover = np.clip((1.0 - q) * mean_radius[:, None, None] + 0.5, 0.0, 1.0)
    if hollow:
        cover *= 1.0 - hollow * np.clip((0.7 - q) * 4.0, 0.0, 1.0)
    # Off-canvas pixels get weight zero and a clipped index, cheaper than boolean selection.
    cover *= weight[:, None, None]
    h, w = shape
    cover *= ((py >= 0) & (py < h))[:, :, None]
    cover *= ((px >= 0) & (px < w))[:, None, :]
    flat = np.clip(py, 0, h - 1)[:, :, None] * w + np.clip(px, 0, w - 1)[:, None, :]
    return np.bincount(flat.ravel(), weights=cover.ravel(), minlength=h * w)



@functools.lru_cache(maxsize=64)
def blur_matrix(size: int, sigma_q: int) -> np.ndarray:
    """(size, size) Gaussian blur of ``sigma_q / 20`` pixels as a matrix product."""
    sigma = sigma_q / 20.0
    d = np.arange(size)[:, None] - np.arange(size)[None, :]
    w = np.exp(-0.5 * (d / sigma) ** 2)
    # Renormalising rows at the border stands in for reflecting the image.
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(F32)


def box2(field: np.ndarray) -> np.ndarray:
    """2x2 box average: a 2x drawing to the output size."""
    return 0.25 * (field[0::2, 0::2] + field[1::2, 0::2] + field[0::2, 1::2] + field[1::2, 1::2])
