"""H&E tissue tiles: CAM16-like lymph node (normal or tumour) and papillary renal-cell pRCC.

Tissue is drawn at the output size: nuclei are several pixels across, and their distance ramps
antialias them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wbc.datasets.layout import CAM16_CLASSES
from wbc.synth.primitives import F32, blur_matrix, ellipse_sd, noise, soft, splat, window
from wbc.synth.stain import STAINS, finish, random_look

__all__ = ["render_cam16", "render_prcc"]


def _fibres(rng: np.random.Generator, n: int) -> np.ndarray:
    """Wavy collagen-like streaks in 0..1."""
    t = rng.uniform(0, math.pi)
    r = (np.arange(n, dtype=F32) + 0.5) / n
    along = np.cos(t) * r[None, :] + np.sin(t) * r[:, None]
    warp = noise(rng, n, n, 3, 3)
    streaks = np.sin(2 * math.pi * rng.uniform(8, 18) * along + 4.0 * warp)
    # Fade the streaks in and out so they read as bundles, not as a grating.
    return 0.5 + 0.5 * streaks * np.clip(0.5 + 0.6 * noise(rng, n, n, 5, 5), 0.0, 1.0)


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
    ramp_unit: float | None = None,
) -> np.ndarray:
    """Nuclei as ellipses with random axis ratios, angles (unless given) and darkness.

    With ``ramp_unit`` (px) a nucleus's edge ramp grows with its radius, one pixel per
    ``ramp_unit``, so that the share of partly covered pixels does not depend on nuclear size.
    """
    m = len(xs)
    a = radius.astype(F32)
    b = (a * rng.uniform(*elong, m)).astype(F32)
    ang = rng.uniform(0, math.pi, m) if angle is None else angle
    wob = None
    if wobble:
        wob = np.stack([rng.normal(0, wobble, m), rng.uniform(0, 2 * math.pi, m),
                        rng.normal(0, wobble * 0.7, m), rng.uniform(0, 2 * math.pi, m)], 1)
        wob = np.clip(wob, -0.35, 2 * math.pi).astype(F32)
    ramp = None if ramp_unit is None else np.maximum(1.0, np.sqrt(a * b) / ramp_unit).astype(F32)
    return splat((n, n), ys.astype(F32), xs.astype(F32), a, b=b, angle=ang.astype(F32),
                 weight=rng.uniform(*darkness, m).astype(F32), wobble=wob, hollow=hollow,
                 ramp=ramp)


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


# ---------------------------------------------------------------------------------------------
# CAM16
#
# The class is carried by the nuclei alone. Everything that sets a tile's colour statistics
# (how much of it is nuclei, how dark they are, how pink the rest is, how much is white space,
# the stain vectors) is drawn per tile from one distribution for both classes; the class only
# decides the geometry: nuclear size, shape, outline and nucleoli, and how the nuclei are
# arranged. Larger tumour nuclei therefore come fewer to the tile, and the nuclear darkness is
# normalised over the nuclear pixels after drawing.


# Mean radius of a small lymphocyte's nucleus in micrometres.
_LYMPH_UM = 3.15


@dataclass(frozen=True)
class _Tile:
    """One CAM16 tile's class-independent draws."""

    n: int  # side in pixels
    px_um: float  # pixels per micrometre
    coverage: float  # target fraction of the tile covered by nuclei
    space: float  # target fraction of white space (lumens, sinuses, clefts)
    darkness: float  # mean haematoxylin density over nuclear pixels
    contrast: float  # its standard deviation there
    eosin: float  # eosin density of stroma and cytoplasm
    chroma: float  # amplitude of the chromatin texture
    wash: float  # faint haematoxylin in stroma and cytoplasm, mean density
    focus: float  # width of a lymphocyte's edge ramp in pixels; larger nuclei scale it up

    @property
    def unit(self) -> float:
        """A lymphocyte nucleus's mean radius in pixels: the tile's yardstick."""
        return _LYMPH_UM * self.px_um

    @property
    def ramp_unit(self) -> float:
        """Nuclear radius (px) per pixel of edge ramp: edges soften in proportion to size, so
        the share of partly covered pixels does not depend on how large the nuclei are."""
        return self.unit / self.focus


def _tile(rng: np.random.Generator, n: int) -> _Tile:
    return _Tile(
        n=n,
        px_um=n / rng.uniform(50, 90),
        coverage=float(rng.uniform(0.16, 0.46)),
        space=float(rng.uniform(0.0, 0.2)),
        darkness=float(rng.uniform(0.65, 1.45)),
        contrast=float(rng.uniform(0.15, 0.35)),
        eosin=float(rng.uniform(0.25, 0.8)),
        chroma=float(rng.uniform(0.1, 0.3)),
        wash=float(rng.uniform(0.0, 0.2)),
        focus=float(rng.uniform(1.0, 1.8)),
    )


def _he_stains(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin vectors with their own hue and strength jitter per tile: labs and
    scanners differ far more than a class could shift the colour."""
    hema = STAINS["haematoxylin"] * np.exp(rng.normal(0, 0.1, 3)) * rng.uniform(0.75, 1.25)
    eosin = STAINS["eosin"] * np.exp(rng.normal(0, 0.1, 3)) * rng.uniform(0.7, 1.3)
    return hema.astype(F32), eosin.astype(F32)


def _spaces(
    rng: np.random.Generator, n: int, fraction: float, cells: tuple[int, int]
) -> np.ndarray:
    """White space (sinuses, clefts) covering about ``fraction`` of the tile, as 0..1 coverage."""
    if fraction < 0.01:
        return np.zeros((n, n), F32)
    relief = noise(rng, n, n, *cells)
    level = float(np.quantile(relief, 1.0 - fraction))
    gy, gx = np.gradient(relief)
    return soft((relief - level) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)).astype(F32)


def _fill_count(tile: _Tile, radius: float, elong: float, share: float) -> int:
    """Nuclei of mean ``radius`` (px) and axis ratio ``elong`` that cover ``share`` of the tile."""
    return max(1, round(share * tile.n * tile.n / (math.pi * radius * radius * elong)))


def _lymphocytes(
    rng: np.random.Generator, tile: _Tile, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """Small round uniform nuclei (about 6-7 um) at the given centres."""
    r = rng.uniform(2.9, 3.4) * tile.px_um
    return _nuclei(rng, tile.n, xs, ys, r * rng.uniform(0.93, 1.07, xs.size), elong=(0.88, 1.0),
                   wobble=0.02, darkness=(0.85, 1.15), ramp_unit=tile.ramp_unit)


def _cam16_lymphoid(rng: np.random.Generator, tile: _Tile) -> tuple[np.ndarray, np.ndarray]:
    """Normal node: evenly spaced lymphocytes packed in cords and follicles, with stroma and
    sinuses (the white space) between them."""
    n = tile.n
    space = _spaces(rng, n, tile.space, (3, 6) if rng.random() < 0.5 else (6, 3))
    cords = _spaces(rng, n, rng.uniform(0.5, 0.85), (4, 4))
    share = max(0.2, float((cords * (1.0 - space)).mean()))
    # A hexagonal cell holding one nucleus has area 0.9 * spacing^2 (rows 0.9 apart).
    density = min(0.6, tile.coverage / share)
    spacing = tile.unit * math.sqrt(math.pi * 0.82 / (0.9 * density))
    xs, ys = _jittered_grid(rng, n, spacing, 0.1)
    ok = (_lookup(space, xs, ys) < 0.5) & (_lookup(cords, xs, ys) > 0.5)
    return _lymphocytes(rng, tile, xs[ok], ys[ok]), space


def _cam16_glandular(rng: np.random.Generator, tile: _Tile) -> tuple[np.ndarray, np.ndarray]:
    """Normal epithelium: lumens ringed by one row of regular, radially oriented nuclei at the
    base of the cells (polarity); stroma with spindle nuclei and lymphocytes between glands."""
    n, px_um = tile.n, tile.px_um
    space = np.zeros((n, n), F32)
    hema = np.zeros((n, n), F32)
    budget = tile.space * n * n
    # Lumens until their area reaches the tile's white space; at least one gland. The bound is
    # never reached: the largest budget holds about 26 of the smallest lumens.
    for _ in range(64):
        if budget <= 0.3 * math.pi * (6 * px_um) ** 2 and hema.any():
            break
        ga = rng.uniform(6, 14) * px_um
        gb = ga * rng.uniform(0.55, 0.9)
        gx, gy = rng.uniform(0.05, 0.95, 2) * n
        gt = rng.uniform(0, math.pi)
        budget -= math.pi * ga * gb
        win = window(n, gx, gy, ga + 2)
        if win is not None:
            sl, wx, wy = win
            space[sl] = np.maximum(space[sl], soft(ellipse_sd(wx, wy, 0, 0, ga, gb, gt)))
        # One row of evenly spaced nuclei a cell height out from the lumen, long axis radial.
        nr = rng.uniform(2.4, 2.8) * px_um
        depth = nr * rng.uniform(2.2, 2.8)
        steps = max(6, int(2 * math.pi * (ga + depth) / (nr * 1.5)))
        phi = np.linspace(0, 2 * math.pi, steps, endpoint=False) + rng.uniform(0, 1)
        ex, ey = (ga + depth) * np.cos(phi), (gb + depth) * np.sin(phi)
        c, s = math.cos(gt), math.sin(gt)
        xs = gx + ex * c - ey * s + rng.normal(0, 0.25, steps)
        ys = gy + ex * s + ey * c + rng.normal(0, 0.25, steps)
        # The ring's outward normal: the long axes point at the lumen.
        normal = np.arctan2(np.sin(phi) / gb, np.cos(phi) / ga) + gt
        hema += _nuclei(rng, n, xs, ys, nr * rng.uniform(0.95, 1.05, steps), elong=(0.5, 0.6),
                        angle=normal.astype(F32), wobble=0.02, darkness=(0.85, 1.15),
                        ramp_unit=tile.ramp_unit)
    return hema + _stroma(rng, tile, space, hema), space


def _stroma(
    rng: np.random.Generator, tile: _Tile, space: np.ndarray, hema: np.ndarray
) -> np.ndarray:
    """Spindle and lymphocyte nuclei in the stroma, up to the tile's nuclear coverage."""
    n, px_um = tile.n, tile.px_um
    left = tile.coverage - float(np.minimum(hema, 1.0).mean())
    if left <= 0.01:
        return np.zeros((n, n), F32)
    # More than lymphocytes alone would need: spindles are thinner, and some nuclei touch.
    m = round(_fill_count(tile, tile.unit, 0.94, left) * 1.4)
    xs, ys = rng.uniform(0, n, 2 * m), rng.uniform(0, n, 2 * m)
    ok = (_lookup(space, xs, ys) < 0.1) & (_lookup(hema, xs, ys) < 0.05)
    xs, ys = xs[ok][:m], ys[ok][:m]
    spindle = rng.random(xs.size) < 0.3
    out = _lymphocytes(rng, tile, xs[~spindle], ys[~spindle])
    out += _nuclei(rng, n, xs[spindle], ys[spindle], rng.uniform(3.5, 4.5, spindle.sum()) * px_um,
                   elong=(0.25, 0.35), wobble=0.02, darkness=(0.85, 1.15), ramp_unit=tile.ramp_unit)
    return out


def _pleomorphic(
    rng: np.random.Generator, tile: _Tile, xs: np.ndarray, ys: np.ndarray, r: float
) -> np.ndarray:
    """Tumour nuclei: large, varied in size and shape, irregular outlines, vesicular chromatin
    with prominent nucleoli."""
    n = tile.n
    rad = r * np.exp(rng.normal(0, 0.28, xs.size))
    hema = _nuclei(rng, n, xs, ys, rad, elong=(0.55, 1.0), wobble=0.11,
                   darkness=(0.85, 1.15), hollow=rng.uniform(0.1, 0.3), ramp_unit=tile.ramp_unit)
    some = rng.random(xs.size) < 0.6
    k = int(some.sum())
    off = rad[some] * 0.2
    hema += _nuclei(rng, n, xs[some] + rng.normal(0, 1, k) * off,
                    ys[some] + rng.normal(0, 1, k) * off, rad[some] * rng.uniform(0.15, 0.22, k),
                    elong=(0.8, 1.0), darkness=(0.5, 0.8))
    return hema


def _cam16_sheet(rng: np.random.Generator, tile: _Tile) -> tuple[np.ndarray, np.ndarray]:
    """Tumour: a crowded, disordered sheet of pleomorphic nuclei with retraction clefts and a few
    infiltrating lymphocytes."""
    n = tile.n
    space = _spaces(rng, n, tile.space, (5, 5))
    r = rng.uniform(4.8, 6.2) * tile.px_um
    lymph = rng.uniform(0.0, 0.15)
    xs, ys = _disordered(rng, tile, r, tile.coverage * (1 - lymph) / max(0.2, 1.0 - tile.space))
    ok = _lookup(space, xs, ys) < 0.5
    hema = _pleomorphic(rng, tile, xs[ok], ys[ok], r)
    k = _fill_count(tile, tile.unit, 0.94, tile.coverage * lymph)
    lx, ly = rng.uniform(0, n, k), rng.uniform(0, n, k)
    return hema + _lymphocytes(rng, tile, lx, ly), space


def _disordered(
    rng: np.random.Generator, tile: _Tile, r: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centres for crowded nuclei of mean radius ``r`` covering ``density`` of their area: a grid
    shaken until it shows no order, so neighbours overlap and leave gaps at random."""
    # Overlaps hide some of each nucleus: a few more centres than the coverage alone needs.
    spacing = r * math.sqrt(math.pi * 0.8 / (0.9 * min(0.6, density * 1.05)))
    return _jittered_grid(rng, tile.n, spacing, rng.uniform(0.3, 0.45))


def _cam16_nests(rng: np.random.Generator, tile: _Tile) -> tuple[np.ndarray, np.ndarray]:
    """Tumour: nests of crowded pleomorphic nuclei, with small cribriform spaces and no
    polarity, in stroma holding lymphocytes."""
    n = tile.n
    nest = _spaces(rng, n, rng.uniform(0.45, 0.75), (4, 4))
    share = float(nest.mean())
    space = _spaces(rng, n, min(0.5, tile.space / max(share, 0.2)), (8, 8)) * nest
    r = rng.uniform(4.8, 6.2) * tile.px_um
    # Most of the coverage in the nests, the rest lymphocytes outside them.
    inner = min(0.55, tile.coverage * 0.9 / max(0.2, share - tile.space))
    xs, ys = _disordered(rng, tile, r, inner)
    ok = (_lookup(nest, xs, ys) > 0.5) & (_lookup(space, xs, ys) < 0.5)
    hema = _pleomorphic(rng, tile, xs[ok], ys[ok], r)
    left = tile.coverage - float(np.minimum(hema, 1.0).mean())
    if left > 0.01:
        k = _fill_count(tile, tile.unit, 0.94, left / max(0.2, 1.0 - share)) * 2
        lx, ly = rng.uniform(0, n, k), rng.uniform(0, n, k)
        out = _lookup(nest, lx, ly) < 0.3
        keep = np.flatnonzero(out)[: max(0, round(k * (1.0 - share) / 2))]
        hema += _lymphocytes(rng, tile, lx[keep], ly[keep])
    return hema, space


_CAM16_PATTERNS = {
    "normal": ((_cam16_lymphoid, _cam16_glandular), (0.55, 0.45)),
    "tumor": ((_cam16_sheet, _cam16_nests), (0.55, 0.45)),
}


def _normalise_tone(
    hema: np.ndarray, cover: np.ndarray, tile: _Tile, blur: float
) -> np.ndarray:
    """Set the spread and the mean of the nuclear density to the tile's draws.

    The spread is that of the density per unit coverage over the nuclear pixels, and a monotone
    map keeps nucleoli darker and vesicular centres paler; the mean is the one the image will
    show after its ``blur`` (sigma in pixels), over the pixels that stay at least half nuclear,
    because small nuclei lose more of their darkness to blur and partial pixels than large ones.
    Neither class can then be told by how dark or how contrasted its nuclei look (overlapping
    crowded nuclei would otherwise make tumour darker, blurred small ones normal paler).
    """
    inside = cover >= 0.5
    if not inside.any():
        return hema
    tone = hema / np.maximum(cover, 1e-3)
    mean = float(tone[inside].mean())
    gain = tile.contrast * tile.darkness / max(float(tone[inside].std()), 1e-3)
    varying = cover * (tone - mean)
    sigma_q = round(blur * 20)
    if sigma_q >= 4:
        m = blur_matrix(tile.n, sigma_q)
        seen_cover, seen_varying = m @ cover @ m.T, m @ varying @ m.T
    else:
        seen_cover, seen_varying = cover, varying
    seen = seen_cover >= 0.5
    if not seen.any():
        seen = inside
    level = tile.darkness - gain * float(seen_varying[seen].mean())
    level /= float(seen_cover[seen].mean())
    return np.maximum(cover * level + gain * varying, 0.2 * cover).astype(F32)


def render_cam16(
    cls: str, rng: np.random.Generator, size: int = 128, *, stain_shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """One H&E lymph-node-like tile of class ``normal`` or ``tumor``.

    ``normal`` is lymphoid (sheets of small, round, uniform, evenly spaced nuclei) or glandular
    (lumens ringed by one row of regular, radially oriented nuclei); ``tumor`` is a crowded,
    disordered sheet or cribriform nest of large, pleomorphic nuclei with irregular outlines and
    nucleoli. Nuclear coverage and darkness, eosin, white space and stain colours are drawn from
    the same distributions for both classes. Returns ``(image, mask)``: the mask is 255 on
    nuclei, 0 elsewhere. ``stain_shift`` moves the look as for the smears
    (:func:`wbc.synth.stain.shift_look`: the same hue direction applied to the H and E stain
    vectors, the same lamp, strength, blur and noise offsets); the tissue and mask drawn stay the
    same.
    """
    if cls not in CAM16_CLASSES:
        raise ValueError(f"unknown CAM16 class {cls!r}; expected one of {', '.join(CAM16_CLASSES)}")
    n = size
    tile = _tile(rng, n)
    look = random_look(rng, size, blur=(0.0015, 0.009), stain_shift=stain_shift)
    hema_stain, eosin_stain = _he_stains(rng)
    stroma = (0.8 + 0.3 * _fibres(rng, n) + 0.1 * noise(rng, n, n, 6, 6)).astype(F32)
    patterns, p = _CAM16_PATTERNS[cls]
    hema, space = patterns[int(rng.choice(len(patterns), p=p))](rng, tile)
    # A 4 um section cuts nuclei rather than stacking them: crowded nuclei that touch do not
    # double their density where they meet. Nucleoli (about 1.65) stay darker than the rest.
    hema = np.minimum(hema, 1.35)
    cover = np.minimum(hema, 1.0)
    hema = _normalise_tone(hema, cover, tile, look.blur)
    cells = max(2, round(n / 3.5))
    texture = 1.0 + tile.chroma * noise(rng, n, n, cells, cells)
    eosin = tile.eosin * stroma * (1.0 - 0.9 * space) * (1.0 - 0.3 * cover)
    wash = tile.wash * np.clip(1.0 + 0.6 * noise(rng, n, n, 4, 4), 0.0, 2.0) * (1.0 - space)
    nuclear = np.minimum(hema, 1.8) * texture + wash * (1.0 - cover)
    image = finish([(eosin, eosin_stain), (nuclear, hema_stain)], look, rng, size)
    mask = np.where(cover >= 0.5, 255, 0).astype(np.uint8)
    return image, mask


def render_prcc(
    rng: np.random.Generator, size: int = 128, *, stain_shift: float = 0.0
) -> np.ndarray:
    """One H&E tile of papillary renal-cell-like tissue: fronds lined by nuclei, foamy cells.

    ``stain_shift`` moves the look as in :func:`render_cam16`.
    """
    n = size
    px_um = n / rng.uniform(80, 130)
    look = random_look(rng, size, blur=(0.0015, 0.009), stain_shift=stain_shift)
    # Fronds: level set of an anisotropic smooth field, so the tissue comes as fingers.
    ax, ay = (3, int(rng.integers(5, 8))) if rng.random() < 0.5 else (int(rng.integers(5, 8)), 3)
    relief = noise(rng, n, n, ay, ax) + 0.6 * noise(rng, n, n, 6, 6)
    level = rng.uniform(-0.5, 0.3)
    gy, gx = np.gradient(relief)
    sd = (relief - level) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)
    tissue = soft(sd)
    lining = rng.uniform(4, 6) * px_um
    core = soft(sd - lining)

    fib = _fibres(rng, n)
    eosin = tissue * (0.35 + 0.25 * (1 - core)) + core * (0.2 * fib)
    eosin += 0.08 * (1.0 - tissue) * (noise(rng, n, n, 4, 4) > 0.8)

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
    bubbles = np.clip(noise(rng, n, n, max(2, round(n / 2.5)), max(2, round(n / 2.5))), 0.0, 1.0)
    eosin = eosin * (1.0 - 0.8 * foam) + foam * (0.12 + 0.25 * bubbles)
    hema += _nuclei(rng, n, fx + rng.normal(0, 1, fx.size), fy + rng.normal(0, 1, fx.size),
                    fr * 0.28, elong=(0.7, 1.0), darkness=(0.9, 1.2))
    # Stromal nuclei scattered in the cores.
    k = int(rng.integers(5, 30))
    sx, sy = rng.uniform(0, n, k), rng.uniform(0, n, k)
    ok = _lookup(core, sx, sy) > 0.5
    hema += _nuclei(rng, n, sx[ok], sy[ok], rng.uniform(2.5, 4, ok.sum()) * px_um,
                    elong=(0.3, 0.5), darkness=(0.8, 1.0))
    texture = 1.0 + 0.2 * noise(rng, n, n, max(2, round(n / 3.5)), max(2, round(n / 3.5)))
    return finish(
        [
            (eosin.astype(F32), STAINS["eosin"]),
            (np.minimum(hema, 1.6) * texture, STAINS["haematoxylin"]),
        ],
        look, rng, size,
    )
