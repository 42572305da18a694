"""The leukocyte smear renderer: one crop around a white blood cell, with red cells about it.

Each class is a recipe in ``_RECIPES``: its diameter range, how much its outline wobbles, and a
function that draws its nucleus, cytoplasm density and granules on the cell's 2x window. What
the recipes share (placement, the window, red cells, compositing, the mask) is drawn once here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wbc.datasets.layout import WBC_CLASSES
from wbc.synth.primitives import (
    F32,
    box2,
    capsule_sd,
    ellipse_sd,
    harmonics,
    noise,
    radial_sd,
    smooth_union,
    soft,
    splat,
    window,
)
from wbc.synth.stain import STAINS, Look, finish, random_look

__all__ = ["render_wbc"]

_RBC_UM = (7.0, 8.2)


def _rbc_layer(
    rng: np.random.Generator, n: int, px_um: float, cell: tuple[float, float, float]
) -> np.ndarray:
    """Red cells scattered over the crop: biconcave discs, some cut by the border or overlapping."""
    density = np.zeros((n, n), F32)
    cx, cy, cr = cell
    count = int(rng.integers(4, 15))
    for _ in range(count):
        r = rng.uniform(*_RBC_UM) / 2 * px_um
        x, y = rng.uniform(-0.2 * n, 1.2 * n, 2)
        # Keep the leukocyte mostly visible: red cells may overlap its rim, not cover it.
        if math.hypot(x - cx, y - cy) < 0.65 * (cr + r):
            continue
        win = window(n, x, y, r * 1.1 + 1)
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
        density[sl] += soft((1.0 - q) * r) * profile * rng.uniform(0.8, 1.15)
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
    sd = np.full(x.shape, -1e4, F32)
    for i, lobe in enumerate(lobes):
        box = frame.box(lobe[0], lobe[1], max(lobe[2], lobe[3]) + margin)
        sd[box] = smooth_union(sd[box], ellipse_sd(x[box], y[box], *lobe), fillet)
        if i:
            prev = lobes[i - 1]
            mx, my = (prev[0] + lobe[0]) / 2, (prev[1] + lobe[1]) / 2
            box = frame.box(mx, my, math.hypot(lobe[0] - mx, lobe[1] - my) + strand + margin)
            sd[box] = np.maximum(sd[box], capsule_sd(x[box], y[box], prev[:2], lobe[:2], strand))
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
    gx = (centre[0] + r * np.cos(t)).astype(F32)
    gy = (centre[1] + r * np.sin(t)).astype(F32)
    a = rng.uniform(*size, count).astype(F32)
    b = (a * rng.uniform(0.75, 1.0, count)).astype(F32)
    return splat(
        shape, gy, gx, a, b=b, angle=rng.uniform(0, math.pi, count).astype(F32),
        weight=rng.uniform(*weight, count).astype(F32),
    )


@dataclass(frozen=True)
class _Window:
    """The leukocyte's 2x window: its frame, outline, and the textures recipes share."""

    frame: _Frame
    bounds: tuple[int, int, int, int]  # y0, y1, x0, x1 in output pixels
    radius: float  # cell radius in 2x pixels
    margin: float  # how far beyond a lobe its distance field is evaluated
    centre: tuple[float, float]  # the cell's centre in window pixels, for granules
    irregular: np.ndarray  # outline noise
    fine: np.ndarray  # fine texture
    clumps: np.ndarray  # coarse chromatin texture
    cell_sd: np.ndarray
    cell: np.ndarray  # coverage of the cell

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.frame.x.shape
        return h, w


@dataclass(frozen=True)
class _Parts:
    """What a class recipe draws on the window."""

    nuc_sd: np.ndarray
    darkness: float
    cyto_density: np.ndarray
    chromatin: np.ndarray | None = None  # None: the shared clumped texture
    gran: np.ndarray | None = None  # None: no granules
    gran_stain: str = "gran_neutrophil"


def _cell_window(
    rng: np.random.Generator,
    size: int,
    centre: tuple[float, float],
    cell_um: float,
    px_um: float,
    outline: float,
) -> _Window:
    """The 2x window around the cell, clipped to the crop, with the cell's outline drawn."""
    cx, cy = centre
    half = math.ceil(cell_um / 2 * px_um * 1.25) + 1
    x0, y0 = max(0, math.floor(cx) - half), max(0, math.floor(cy) - half)
    x1, y1 = min(size, math.floor(cx) + half), min(size, math.floor(cy) + half)
    h, w = 2 * (y1 - y0), 2 * (x1 - x0)
    radius = cell_um * px_um  # in 2x pixels
    xs = (np.arange(w, dtype=F32) + 0.5 + 2 * x0 - 2 * cx)[None, :]
    ys = (np.arange(h, dtype=F32) + 0.5 + 2 * y0 - 2 * cy)[:, None]
    # Rotate the whole design: the class must not be read off an orientation.
    rot = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(rot), math.sin(rot)
    x = np.broadcast_to(xs * c + ys * s, (h, w)).astype(F32)
    y = np.broadcast_to(ys * c - xs * s, (h, w)).astype(F32)
    frame = _Frame(x, y, c, s, 2 * (cx - x0) - 0.5, 2 * (cy - y0) - 0.5)
    # Outline noise (0.03-0.06 radius per sigma) stays well within 0.2 radius of the lobes.
    margin = 0.2 * radius + 2
    cells = max(2, round(2 * radius * 1.3 / 18))
    irregular = noise(rng, h, w, cells, cells)
    cell_sd = radial_sd(x, y, radius, harmonics(rng, outline)) + irregular * radius * 0.025
    fine = noise(rng, h, w, max(2, round(h / 5)), max(2, round(w / 5)))
    clumps = noise(rng, h, w, max(2, round(h / 11)), max(2, round(w / 11)))
    return _Window(
        frame=frame, bounds=(y0, y1, x0, x1), radius=radius, margin=margin,
        centre=(2 * (cx - x0), 2 * (cy - y0)), irregular=irregular, fine=fine, clumps=clumps,
        cell_sd=cell_sd, cell=soft(cell_sd),
    )


# ---------------------------------------------------------------------------------------------
# One recipe per class


def _neutrophil(rng: np.random.Generator, win: _Window) -> _Parts:
    """3-5 lobes on a bending chain joined by thin strands; fine faint granules."""
    radius = win.radius
    lobes = _lobe_chain(rng, int(rng.choice([3, 4, 5], p=[0.5, 0.38, 0.12])), radius)
    nuc_sd = _lobed_nucleus(win.frame, lobes, rng.uniform(0.035, 0.07) * radius, 0.05 * radius,
                            win.margin)
    nuc_sd += win.irregular * radius * 0.03
    darkness = rng.uniform(0.85, 1.1)
    cyto = rng.uniform(0.6, 0.9) * (1.0 + 0.35 * win.fine)
    gran = _granules(rng, win.shape, win.centre, radius * 0.92, int(rng.integers(100, 250)),
                     (0.022 * radius, 0.035 * radius), (0.15, 0.4))
    return _Parts(nuc_sd, darkness, cyto, gran=gran)


def _eosinophil(rng: np.random.Generator, win: _Window) -> _Parts:
    """Two lobes joined by a strand (sometimes a small third); packed coarse red granules."""
    radius = win.radius
    sep = rng.uniform(0.28, 0.4) * radius
    a = rng.uniform(0.27, 0.36) * radius
    lobes = [(-sep, 0.0, a, a * rng.uniform(0.7, 0.95), rng.normal(0.4, 0.4)),
             (sep, 0.0, a * rng.uniform(0.85, 1.1), a * rng.uniform(0.7, 0.95),
              rng.normal(-0.4, 0.4))]
    if rng.random() < 0.12:
        lobes.append((0.0, rng.choice([-1, 1]) * sep * 0.9, a * 0.7, a * 0.55, 0.0))
    dx, dy = rng.normal(0, 0.08 * radius, 2)
    lobes = [(lx + dx, ly + dy, la, lb, t) for lx, ly, la, lb, t in lobes]
    nuc_sd = _lobed_nucleus(win.frame, lobes, rng.uniform(0.05, 0.1) * radius, 0.06 * radius,
                            win.margin)
    nuc_sd += win.irregular * radius * 0.03
    darkness = rng.uniform(0.75, 0.95)
    cyto = rng.uniform(0.4, 0.6) * (1.0 + 0.2 * win.fine)
    gsize = rng.uniform(0.038, 0.052) * radius
    count = int(rng.uniform(1.0, 1.5) * (0.95 * radius / gsize) ** 2)
    gran = _granules(rng, win.shape, win.centre, radius * 0.95, count,
                     (gsize * 0.85, gsize * 1.15), (0.5, 0.9))
    return _Parts(nuc_sd, darkness, cyto, gran=gran, gran_stain="gran_eosinophil")


def _basophil(rng: np.random.Generator, win: _Window) -> _Parts:
    """One to three pale lobes under coarse dark violet granules."""
    radius = win.radius
    count = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    if count == 1:
        a = rng.uniform(0.45, 0.6) * radius
        lobes = [(0.0, 0.0, a, a * rng.uniform(0.65, 0.9), rng.uniform(0, math.pi))]
    else:
        lobes = [(lx * 1.2, ly * 1.2, la * 1.4, lb * 1.4, t)
                 for lx, ly, la, lb, t in _lobe_chain(rng, count, radius * 0.75)]
    nuc_sd = _lobed_nucleus(win.frame, lobes, 0.12 * radius, 0.12 * radius, win.margin)
    nuc_sd += win.irregular * radius * 0.06
    darkness = rng.uniform(0.55, 0.8)
    cyto = rng.uniform(0.6, 0.9) * (1.0 + 0.25 * win.fine)
    gsize = rng.uniform(0.05, 0.075) * radius
    gran = _granules(rng, win.shape, win.centre, radius * 0.93, int(rng.integers(80, 200)),
                     (gsize * 0.6, gsize * 1.5), (0.6, 1.3))
    return _Parts(nuc_sd, darkness, cyto, gran=gran, gran_stain="gran_basophil")


def _lymphocyte(rng: np.random.Generator, win: _Window) -> _Parts:
    """A round dense nucleus filling most of the cell, sometimes cleft; a thin blue rim."""
    radius, x, y = win.radius, win.frame.x, win.frame.y
    a = rng.uniform(0.76, 0.93) * radius
    ang = rng.uniform(0, math.pi)
    off_n = rng.uniform(0, radius - a) * 0.8
    nuc_sd = ellipse_sd(x, y, off_n, 0.0, a, a * rng.uniform(0.85, 1.0), ang)
    if rng.random() < 0.3:
        # A shallow cleft, as in many small lymphocytes.
        notch = ellipse_sd(x, y, off_n + a * 1.05, 0.0, 0.25 * a, 0.25 * a, 0.0)
        nuc_sd = -smooth_union(-nuc_sd, notch, 0.05 * radius)
    nuc_sd += win.irregular * radius * 0.02
    darkness = rng.uniform(1.05, 1.3)
    chromatin = 0.25 * win.clumps + 0.1 * win.fine
    cyto = rng.uniform(0.5, 0.8) * (1.0 + 0.1 * win.fine)
    return _Parts(nuc_sd, darkness, cyto, chromatin=chromatin)


def _monocyte(rng: np.random.Generator, win: _Window) -> _Parts:
    """A kidney, horseshoe or folded nucleus with lacy chromatin; vacuolated cytoplasm."""
    radius, x, y = win.radius, win.frame.x, win.frame.y
    a = rng.uniform(0.55, 0.72) * radius
    b = a * rng.uniform(0.75, 0.95)
    shift = rng.uniform(0.05, 0.2) * radius
    nuc_sd = ellipse_sd(x, y, shift, 0.0, a, b, rng.normal(math.pi / 2, 0.3))
    if rng.random() < 0.75:
        # Kidney or horseshoe: a notch bitten out of the side facing the cell centre.
        nr = rng.uniform(0.22, 0.38) * radius
        notch = ellipse_sd(x, y, shift - a * rng.uniform(0.9, 1.2), rng.normal(0, 0.1 * a),
                           nr * 1.2, nr, 0.0)
        nuc_sd = -smooth_union(-nuc_sd, notch, 0.08 * radius)
    else:
        # Folded: a second overlapping lobe.
        fold = ellipse_sd(x, y, shift - 0.35 * a, 0.4 * b, a * 0.6, b * 0.55,
                          rng.uniform(0, math.pi))
        nuc_sd = smooth_union(nuc_sd, fold, 0.1 * radius)
    nuc_sd += win.irregular * radius * 0.04
    darkness = rng.uniform(0.62, 0.82)
    h, w = win.shape
    lace = 1.0 - 2.0 * np.abs(noise(rng, h, w, max(2, round(h / 8)), max(2, round(w / 8))))
    chromatin = 0.22 * np.clip(lace, -1.5, 1.0) + 0.1 * win.clumps
    cyto = rng.uniform(0.6, 0.85) * (1.0 + 0.12 * win.fine)
    cyto = cyto * (1.0 - 0.75 * _vacuoles(rng, win))
    return _Parts(nuc_sd, darkness, cyto, chromatin=chromatin)


def _vacuoles(rng: np.random.Generator, win: _Window) -> np.ndarray:
    """Up to six small round vacuoles in the outer cytoplasm, as coverage in 0..1."""
    radius, x, y = win.radius, win.frame.x, win.frame.y
    vac = np.zeros(win.shape, F32)
    for _ in range(int(rng.integers(0, 7))):
        t = rng.uniform(0, 2 * math.pi)
        rr = rng.uniform(0.5, 0.9) * radius
        vr = rng.uniform(0.035, 0.08) * radius
        vx, vy = rr * math.cos(t), rr * math.sin(t)
        box = win.frame.box(vx, vy, vr + 2)
        vac[box] = np.maximum(vac[box], soft(ellipse_sd(x[box], y[box], vx, vy, vr, vr, 0.0)))
    return vac


@dataclass(frozen=True)
class _Recipe:
    cell_um: tuple[float, float]  # diameter range in micrometres
    outline: float  # amplitude of the cell outline's harmonics
    draw: Callable[[np.random.Generator, _Window], _Parts]


# Cell diameters overlap between classes (Bain, Blood Cells, 5th ed.). Monocytes spread and
# crease on the slide; the others stay rounder.
_RECIPES: dict[str, _Recipe] = {
    "Basophil": _Recipe((10.0, 14.0), 0.05, _basophil),
    "Eosinophil": _Recipe((11.0, 15.0), 0.05, _eosinophil),
    "Lymphocyte": _Recipe((7.5, 12.0), 0.05, _lymphocyte),
    "Monocyte": _Recipe((13.0, 19.0), 0.09, _monocyte),
    "Neutrophil": _Recipe((10.5, 14.5), 0.05, _neutrophil),
}


# ---------------------------------------------------------------------------------------------
# The crop


def render_wbc(
    cls: str, rng: np.random.Generator, size: int = 128, *, stain_shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic smear crop centred on a leukocyte of class ``cls``.

    Returns ``(image, mask)``: ``image`` uint8 (size, size, 3); ``mask`` uint8 (size, size) with
    0 background, 128 cytoplasm, 255 nucleus, computed from the same shapes that were drawn.
    ``stain_shift`` moves the acquisition look (:func:`wbc.synth.stain.shift_look`) and nothing
    else: the same ``rng`` state draws the same cell and mask whatever it is, and 0 is the
    unshifted image.
    """
    recipe = _RECIPES.get(cls)
    if recipe is None:
        raise ValueError(f"unknown WBC class {cls!r}; expected one of {', '.join(WBC_CLASSES)}")
    cell_um = rng.uniform(*recipe.cell_um)
    # Crops in the wild are cut around the cell with a margin, so a small cell gets a tighter
    # crop; the geometric mean with a fixed field keeps red cells as the absolute size cue.
    crop_um = math.sqrt(19.0 * cell_um * rng.uniform(1.15, 1.55))
    px_um = size / crop_um
    off = rng.normal(0, 0.06 * size, 2).clip(-0.15 * size, 0.15 * size)
    cx, cy = size / 2 + off[0], size / 2 + off[1]

    look = random_look(rng, size, blur=(0.003, 0.016), stain_shift=stain_shift)
    # Plasma and red cells are smooth: drawn at the output size, antialiased by their ramps.
    plasma = (0.25 + 0.12 * noise(rng, size, size, 3, 3)).astype(F32)
    rbc = _rbc_layer(rng, size, px_um, (cx, cy, cell_um / 2 * px_um))
    # The leukocyte's fine detail (lobes, strands, granules) is drawn at 2x in a window around
    # it, clipped to the crop, and box-averaged down.
    win = _cell_window(rng, size, (cx, cy), cell_um, px_um, recipe.outline)
    parts = recipe.draw(rng, win)
    return _compose(cls, rng, size, look, (plasma, rbc), win, parts)


def _compose(
    cls: str,
    rng: np.random.Generator,
    size: int,
    look: Look,
    background: tuple[np.ndarray, np.ndarray],
    win: _Window,
    parts: _Parts,
) -> tuple[np.ndarray, np.ndarray]:
    """Stain the recipe's layers, paste the window into the crop, finish, and make the mask."""
    plasma, rbc = background
    radius = win.radius
    # Cytoplasm hues overlap between classes (staining varies more than textbooks show), so the
    # class must be read from shape and texture rather than from a colour histogram.
    mix = rng.uniform(0.0, 0.6)
    cyto_stain = (1 - mix) * STAINS[f"cyto_{cls.lower()}"] + mix * STAINS["cyto_shared"]
    # The nucleus never leaves the cell: intersect rather than trust each recipe's geometry.
    nucleus = np.minimum(soft(parts.nuc_sd), soft(win.cell_sd - 0.04 * radius))
    chromatin = parts.chromatin
    if chromatin is None:
        chromatin = 0.2 * win.clumps + 0.08 * win.fine
    nuc_density = nucleus * parts.darkness * np.clip(1.0 + chromatin, 0.3, 1.6)
    gran = np.zeros(win.shape, F32) if parts.gran is None else parts.gran
    gran = np.minimum(gran, 1.4) * win.cell

    layers = {
        "cell": win.cell, "cyto": win.cell * parts.cyto_density, "nuc": nuc_density,
        "gran": gran, "nucleus": nucleus,
    }
    y0, y1, x0, x1 = win.bounds
    full: dict[str, np.ndarray] = {}
    for name, layer in layers.items():
        full[name] = np.zeros((size, size), F32)
        full[name][y0:y1, x0:x1] = box2(layer)

    image = finish(
        [
            (plasma * (1.0 - full["cell"]), STAINS["plasma"]),
            (rbc, STAINS["rbc"]),
            (full["cyto"], cyto_stain),
            (full["nuc"], STAINS["nucleus"]),
            (full["gran"], STAINS[parts.gran_stain]),
        ],
        look,
        rng,
        size,
        vignette=rng.uniform(0.0, 0.25),
    )
    mask = np.where(full["nucleus"] >= 0.5, 255,
                    np.where(full["cell"] >= 0.5, 128, 0)).astype(np.uint8)
    return image, mask
