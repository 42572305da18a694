"""Mask-based cell copy-paste (the report's 2.3), and when a run makes pastes at all.

The report cut the masked cells out of their images and pasted them back moved, rotated and
flipped, ``aug_factor`` new images per masked image, on an empty background. ``mask_paste`` does
that for a batch in one warp, on the empty background or on a real one (the cell's own image
with the cell inpainted, or another image's); ``make_pastes`` applies it to a run's training
split on the device; ``pastes_enabled`` is the one place that decides whether a run pastes.

Conventions as in ``wbc.augment.tensors``: float ``(N, 3, H, W)`` images in [0, 1], bool masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from wbc.augment.tensors import rand_on, randint_on, to_float_nchw, work_dtype
from wbc.config import Background
from wbc.strategies import get_strategy, uses_pastes

if TYPE_CHECKING:
    from wbc.config import AugmentConfig, TrainConfig

__all__ = [
    "BACKGROUNDS",
    "PASTE_CHUNK",
    "Background",
    "PasteParams",
    "expand_with_pastes",
    "inpaint_cells",
    "make_pastes",
    "mask_paste",
    "pastes_enabled",
]

BACKGROUNDS: tuple[Background, ...] = get_args(Background)  # the choices, typed once (config)

# An empty slide is bright: the report's "empty background" default.
DEFAULT_FILL = 1.0

# Segmentation masks stop a pixel or two short of the cell's halo; inpainting from the ring just
# outside them would smear cell colour into the filled region.
INPAINT_DILATE = 2

# grid_sample weights this close to 0 or 1 are rounding, not coverage (half an 8-bit step).
COVERAGE_EPS = 0.5 / 255

PASTE_CHUNK = 256  # masked images warped per grid_sample call: bounds the float scratch memory


def pastes_enabled(config: TrainConfig) -> bool:
    """Whether a run with ``config`` makes copy-paste images: its strategy pastes (or, for a
    strategy whose pastes are a searched switch, ``mask_augment`` says so) and ``aug_factor``
    is above 0. Every other place asks this function."""
    strategy = get_strategy(config.model.strategy)
    return uses_pastes(strategy, config.augment.mask_augment) and config.augment.aug_factor > 0


@dataclass(frozen=True)
class PasteParams:
    """Explicit transforms for ``mask_paste`` (tests, figures); K = N * factor new images.

    New image ``k`` comes from input ``k // factor``. The cell is mirrored left-right about its
    centroid when ``flips[k]``, then rotated about the centroid by ``angles[k]`` degrees
    (clockwise as displayed, y pointing down), then moved by ``shifts[k] = (dx, dy)`` pixels.
    Explicit shifts are used as given, not kept inside the frame.
    """

    angles: Tensor  # (K,) float, degrees
    shifts: Tensor  # (K, 2) float, pixels (dx, dy)
    flips: Tensor  # (K,) bool
    background_index: Tensor | None = None  # (K,) long into the backgrounds; "other" mode only


def _check_batch(images: Tensor, masks: Tensor, name: str) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected images (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(masks.shape) != (n, h, w):
        raise ValueError(
            f"{name}: masks must be (N, H, W) = {(n, h, w)} to match the images, "
            f"got {tuple(masks.shape)}"
        )


def _fill_tensor(fill: float | Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    value = DEFAULT_FILL if fill is None else fill
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.numel() not in (1, 3):
        raise ValueError(f"fill must be a float or a (3,) tensor, got shape {tuple(t.shape)}")
    return t.reshape(1, -1, 1, 1)


def inpaint_cells(
    images: Tensor,
    masks: Tensor,
    *,
    dilate: int = INPAINT_DILATE,
    fill: float | Tensor | None = None,
) -> Tensor:
    """Each image with its cell (mask dilated by ``dilate`` px) replaced by inferred background.

    Pull-push interpolation (Gortler et al. 1996, "The Lumigraph"): a pyramid of
    mask-weighted averages of the non-cell pixels, then filled from coarse to fine. The filled
    region is a smooth continuation of the surrounding background; pixels outside the dilated
    mask are returned bit-identical. All in O(log max(H, W)) batched pooling steps. An image
    with no background pixels at all gets ``fill`` (default white).
    """
    _check_batch(images, masks, "inpaint_cells")
    if dilate < 0:
        raise ValueError(f"inpaint_cells: dilate must be >= 0, got {dilate}")
    if images.shape[0] == 0:
        return images.clone()
    dtype = work_dtype(images, "inpaint_cells")
    x = images.to(dtype)
    hole = masks.to(dtype).unsqueeze(1)
    if dilate:
        hole = F.max_pool2d(hole, 2 * dilate + 1, stride=1, padding=dilate)
    weight = 1 - hole
    levels = [(x * weight, weight)]
    while max(levels[-1][1].shape[-2:]) > 1:
        v, w = levels[-1]
        # ceil_mode keeps odd edges; the overhang is left out of the divisor, and v / w cancels
        # the divisor anyway.
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    v, w = levels[-1]
    colour = torch.where(w > 0, v / w.clamp_min(1e-12), _fill_tensor(fill, dtype, x.device))
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(colour, size=v.shape[-2:], mode="bilinear", align_corners=False)
        # v is w times the mean of the known pixels: keep it, and let the coarser level supply
        # the unknown fraction.
        colour = v + (1 - w) * up
    return torch.where(hole > 0, colour, x).to(images.dtype)


def _centroids_and_radii(masks: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Centroid ``(N, 2)`` as (x, y) pixel centres and the largest centre-to-pixel distance."""
    n, h, w = masks.shape
    m = masks.to(dtype)
    xs = torch.arange(w, dtype=dtype, device=masks.device)
    ys = torch.arange(h, dtype=dtype, device=masks.device)
    area = m.sum((1, 2))
    safe = area.clamp_min(1)
    cx = (m.sum(1) * xs).sum(1) / safe
    cy = (m.sum(2) * ys).sum(1) / safe
    # An empty mask pastes nothing; centre it so that the arithmetic below stays finite.
    empty = area == 0
    cx = torch.where(empty, torch.full_like(cx, (w - 1) / 2), cx)
    cy = torch.where(empty, torch.full_like(cy, (h - 1) / 2), cy)
    d2 = (xs.view(1, 1, w) - cx.view(n, 1, 1)) ** 2 + (ys.view(1, h, 1) - cy.view(n, 1, 1)) ** 2
    radius = torch.where(masks, d2, torch.zeros_like(d2)).amax((1, 2)).sqrt()
    return torch.stack([cx, cy], 1), radius


def _sample_params(
    centroids: Tensor,
    radii: Tensor,
    *,
    generator: torch.Generator,
    factor: int,
    size: tuple[int, int],
    max_shift: float,
    n_backgrounds: int | None,
    avoid_self: bool,
) -> PasteParams:
    n = centroids.shape[0]
    k = n * factor
    device = centroids.device
    dtype = centroids.dtype
    h, w = size
    angles = rand_on(generator, (k,), device).to(dtype) * 360
    flips = rand_on(generator, (k,), device) < 0.5
    u = rand_on(generator, (k, 2), device).to(dtype)
    c = centroids.repeat_interleave(factor, 0)
    r = radii.repeat_interleave(factor, 0).unsqueeze(1)
    extent = torch.tensor([w - 1, h - 1], dtype=dtype, device=device)
    reach = max_shift * torch.tensor([w, h], dtype=dtype, device=device)
    # The disk of radius r about the centroid holds the cell at any rotation: keep it inside
    # the frame. A cell too big to fit may stay where it is, never move further out.
    lo = torch.minimum(r, c)
    hi = torch.maximum(extent - r, c)
    lo = torch.maximum(lo, c - reach)
    hi = torch.minimum(hi, c + reach)
    shifts = lo + u * (hi - lo) - c
    index = None
    if n_backgrounds is not None:
        if avoid_self and n > 1:
            # Uniform over the other images: skip the source by an offset in 1..n-1.
            source = torch.arange(n, device=device).repeat_interleave(factor)
            index = (source + randint_on(generator, 1, n, (k,), device)) % n
        elif avoid_self:
            index = torch.zeros(k, dtype=torch.long, device=device)
        else:
            index = randint_on(generator, 0, n_backgrounds, (k,), device)
    return PasteParams(angles=angles, shifts=shifts, flips=flips, background_index=index)


def _inverse_theta(params: PasteParams, centroids: Tensor, size: tuple[int, int]) -> Tensor:
    """``affine_grid`` matrices ``(K, 2, 3)``: output normalised coords -> input ones."""
    h, w = size
    dtype = centroids.dtype
    device = centroids.device
    k = centroids.shape[0]
    a = torch.deg2rad(params.angles.to(device, dtype))
    cos, sin = a.cos(), a.sin()
    mirror = torch.where(params.flips.to(device), -1.0, 1.0).to(dtype)
    # Forward p' = c + t + R S (p - c); inverse p = c + S R^T (p' - c - t), S = diag(mirror, 1).
    lin = torch.zeros(k, 3, 3, dtype=dtype, device=device)
    lin[:, 0, 0] = mirror * cos
    lin[:, 0, 1] = mirror * sin
    lin[:, 1, 0] = -sin
    lin[:, 1, 1] = cos
    lin[:, 2, 2] = 1
    target = centroids + params.shifts.to(device, dtype)
    lin[:, :2, 2] = centroids - (lin[:, :2, :2] @ target.unsqueeze(2)).squeeze(2)
    # Pixel centre x <-> normalised (2x + 1) / W - 1, the align_corners=False convention.
    to_norm = torch.tensor(
        [[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]], dtype=dtype, device=device
    )
    from_norm = torch.tensor(
        [[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]], dtype=dtype, device=device
    )
    return (to_norm @ lin @ from_norm)[:, :2]


def _check_params(params: PasteParams, k: int, n_backgrounds: int | None) -> None:
    shapes = {"angles": (k,), "shifts": (k, 2), "flips": (k,)}
    for name, shape in shapes.items():
        got = tuple(getattr(params, name).shape)
        if got != shape:
            raise ValueError(f"PasteParams.{name} must have shape {shape} for N * factor = {k}, got {got}")
    if n_backgrounds is not None:
        if params.background_index is None:
            raise ValueError("PasteParams.background_index is required for background='other'")
        if tuple(params.background_index.shape) != (k,):
            raise ValueError(
                f"PasteParams.background_index must have shape {(k,)}, "
                f"got {tuple(params.background_index.shape)}"
            )


def mask_paste(
    images: Tensor,
    masks: Tensor,
    *,
    generator: torch.Generator,
    factor: int,
    background: Background = "none",
    backgrounds: Tensor | None = None,
    max_shift: float = 0.25,
    fill: float | Tensor | None = None,
    params: PasteParams | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The report's 2.3: ``factor`` new images per masked image, the cell moved, turned, flipped.

    Pass only images that have a mask (``expand_with_pastes`` does the selection). For every
    input the cell (mask True) is mirrored left-right with probability 1/2, rotated about its
    centroid by a uniform angle in [0, 360) and its centroid moved by up to ``max_shift`` of
    the width (x) and height (y), never so far that the cell (the disk about its centroid that
    holds it at any rotation) leaves the frame. All ``N * factor`` warps are one
    ``grid_sample``; the cell is sampled premultiplied by its mask and composited with the
    bilinear mask as alpha, which gives one-pixel antialiased edges and no source-background
    halo. Integer shifts without rotation copy the cell to float rounding (about 1e-6).

    ``background``:
      - ``"none"``: the cell on a constant ``fill`` (float or per-channel ``(3,)``; default
        white, 1.0, as an empty slide is bright), the report's "empty background".
      - ``"own"``: the cell moved within its own image; the region it left is inpainted from
        the surrounding background (``inpaint_cells``).
      - ``"other"``: the cell on a random image of ``backgrounds`` ``(B, 3, H, W)``, used as
        given (pass cell-free images, e.g. from ``inpaint_cells``). Without ``backgrounds``,
        another input of the batch (never the cell's own when N > 1) with its cell inpainted.

    ``params`` replaces the random draw (the generator is then not used).

    Returns ``(images (N*factor, 3, H, W), masks (N*factor, H, W) bool — the cell's new
    pixels, source_index (N*factor,) long)``; new image ``k`` comes from input ``k // factor``.
    The image dtype is kept; an empty input mask gives the bare background.
    """
    _check_paste_args(images, masks, factor=factor, background=background,
                      backgrounds=backgrounds, max_shift=max_shift)
    dtype = work_dtype(images, "mask_paste")
    n, _, h, w = images.shape
    device = images.device
    k = n * factor
    masks = masks if masks.dtype == torch.bool else masks != 0
    source = torch.arange(n, device=device).repeat_interleave(factor)
    if k == 0:
        return (
            images.new_empty((0, 3, h, w)),
            torch.zeros((0, h, w), dtype=torch.bool, device=device),
            source,
        )

    x = images.to(dtype)
    centroids, radii = _centroids_and_radii(masks, dtype)
    n_backgrounds: int | None = None
    if background == "other":
        n_backgrounds = n if backgrounds is None else backgrounds.shape[0]
    if params is None:
        params = _sample_params(
            centroids,
            radii,
            generator=generator,
            factor=factor,
            size=(h, w),
            max_shift=max_shift,
            n_backgrounds=n_backgrounds,
            avoid_self=backgrounds is None,
        )
    else:
        _check_params(params, k, n_backgrounds)

    m = masks.to(dtype).unsqueeze(1)
    theta = _inverse_theta(params, centroids[source], (h, w))
    # New image k = i * factor + f: stacking each input's factor grids along the height lets one
    # grid_sample read the inputs in place, without copying every input factor times.
    grid = F.affine_grid(theta, [k, 4, h, w], align_corners=False).view(n, factor * h, w, 2)
    warped = F.grid_sample(
        torch.cat([x * m, m], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).view(n, 4, factor, h, w).transpose(1, 2)
    cell, alpha = warped[:, :, :3], warped[:, :, 3:]
    # Float grid arithmetic leaks ~1e-6 of a neighbour into exact pixel hits; coverage below
    # half an 8-bit step is none, so integer moves leave the background around the cell exact.
    covered = alpha > COVERAGE_EPS
    cell = torch.where(covered, cell, 0)
    alpha = torch.where(alpha < 1 - COVERAGE_EPS, alpha, 1) * covered

    base = _paste_base(x, masks, params, background=background, backgrounds=backgrounds,
                       fill=fill, factor=factor)
    out = (cell + (1 - alpha) * base).reshape(k, 3, h, w).contiguous()
    return out.to(images.dtype), alpha.reshape(k, h, w) > 0.5, source



def _check_paste_args(images: Tensor, masks: Tensor, *, factor: int, background: str,
                      backgrounds: Tensor | None, max_shift: float) -> None:
    _check_batch(images, masks, "mask_paste")
    if factor < 0:
        raise ValueError(f"mask_paste: factor must be >= 0, got {factor}")
    if background not in BACKGROUNDS:
        raise ValueError(f"mask_paste: background must be one of {BACKGROUNDS}, got {background!r}")
    if max_shift < 0:
        raise ValueError(f"mask_paste: max_shift must be >= 0, got {max_shift}")
    n, _, h, w = images.shape
    if background == "other" and backgrounds is not None:
        if backgrounds.dim() != 4 or tuple(backgrounds.shape[1:]) != (3, h, w):
            raise ValueError(
                f"mask_paste: backgrounds must be (B, 3, {h}, {w}) like the images, "
                f"got {tuple(backgrounds.shape)}"
            )
        if backgrounds.shape[0] == 0 and n * factor > 0:
            raise ValueError("mask_paste: background='other' got an empty backgrounds tensor")


def _paste_base(x: Tensor, masks: Tensor, params: PasteParams, *, background: str,
                backgrounds: Tensor | None, fill: float | Tensor | None, factor: int) -> Tensor:
    """What the moved cells are composited onto: broadcastable to ``(N, factor, 3, H, W)``."""
    n, _, h, w = x.shape
    if background == "none":
        return _fill_tensor(fill, x.dtype, x.device).unsqueeze(0)
    if background == "own":
        return inpaint_cells(x, masks, fill=fill).unsqueeze(1)
    assert params.background_index is not None
    index = params.background_index.to(x.device)
    if backgrounds is None:
        base = inpaint_cells(x, masks, fill=fill)[index]
    else:
        base = backgrounds.to(x.device, x.dtype)[index]
    return base.view(n, factor, 3, h, w)


def expand_with_pastes(
    images: Tensor,
    masks: Tensor,
    has_mask: Tensor,
    labels: Tensor,
    *,
    generator: torch.Generator,
    factor: int,
    background: Background = "none",
    backgrounds: Tensor | None = None,
    max_shift: float = 0.25,
    fill: float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The training set the report trained on: every original, then ``factor`` pastes per mask.

    ``images`` float ``(N, 3, H, W)``, ``labels`` ``(N,)``, ``has_mask`` bool ``(N,)``.
    ``masks`` is either ``(N, H, W)`` aligned with the images (rows without a mask ignored) or
    ``(M, H, W)``, one per masked image in order, as the decode cache stores them. The
    originals come first and bit-identical; each pasted image carries its source's label.
    The selection of masked rows reads ``has_mask`` on the host once.
    """
    n = images.shape[0]
    if tuple(has_mask.shape) != (n,) or tuple(labels.shape[:1]) != (n,):
        raise ValueError(
            f"expand_with_pastes: has_mask {tuple(has_mask.shape)} and labels "
            f"{tuple(labels.shape)} must both have N = {n} rows like the images"
        )
    rows = has_mask.to(torch.bool).nonzero().squeeze(1)
    m = rows.numel()
    if masks.shape[0] == n:
        masks = masks[rows.to(masks.device)]
    elif masks.shape[0] != m:
        raise ValueError(
            f"expand_with_pastes: masks has {masks.shape[0]} rows; expected N = {n} (one per "
            f"image) or M = {m} (one per image with a mask)"
        )
    rows = rows.to(images.device)
    new_images, _, source = mask_paste(
        images[rows],
        masks.to(images.device),
        generator=generator,
        factor=factor,
        background=background,
        backgrounds=backgrounds,
        max_shift=max_shift,
        fill=fill,
    )
    new_labels = labels[rows.to(labels.device)][source.to(labels.device)]
    return torch.cat([images, new_images]), torch.cat([labels, new_labels])


def make_pastes(images: Tensor, labels: Tensor, has_mask: Tensor, masks: Tensor, *,
                augment: AugmentConfig, seed: int) -> tuple[Tensor, Tensor]:
    """The report's 2.3 on a run's training split: ``augment.aug_factor`` uint8 pastes per
    masked image, and their labels.

    ``images`` uint8 ``(N, S, S, 3)`` on the training device, ``masks`` ``(M, S, S)`` one per
    True in ``has_mask``, in order (as the decode cache stores them). The masked images are
    warped ``PASTE_CHUNK`` at a time, which bounds the float scratch memory. Random parameters
    come from a CPU generator seeded with ``seed``: the same pastes on any device.
    """
    factor = augment.aug_factor
    rows = has_mask.nonzero().squeeze(1)
    if factor == 0 or rows.numel() == 0:
        return images[:0], labels[:0]
    device = images.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out_images, out_labels = [], []
    for start in range(0, rows.numel(), PASTE_CHUNK):
        chunk = rows[start:start + PASTE_CHUNK]
        new, _, source = mask_paste(
            to_float_nchw(images[chunk]), masks[start:start + PASTE_CHUNK].to(device),
            generator=generator, factor=factor, background=augment.background,
            max_shift=augment.max_shift)
        out_images.append((new.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
        out_labels.append(labels[chunk][source.to(device)])
    return torch.cat(out_images).contiguous(), torch.cat(out_labels)
