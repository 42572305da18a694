"""Batched augmentations: mask-based cell copy-paste (the report's 2.3) and cell-safe jitter.

Every function is pure: it takes a batch on any device and returns new tensors on that device,
draws its randomness from an explicit ``torch.Generator`` and never touches the global RNG.
Random parameters are drawn on the generator's device and then moved to the data's device, so
one CPU generator gives the same augmentation on the CPU and on a GPU.

Conventions, the same in every function:

- images: float ``(N, 3, H, W)`` with values in [0, 1] (before ``normalize``). The decode
  cache stores uint8 ``(N, H, W, 3)``; ``to_float_nchw`` converts and keeps the NHWC layout
  in memory, which is ``torch.channels_last``.
- masks: bool ``(N, H, W)``, True on the cell.

torchvision's v2 transforms draw one parameter per call, i.e. per batch; a batch of cells needs
one per image, so flips and colour jitter here are per-image tensor arithmetic instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Background",
    "PasteParams",
    "color_jitter",
    "expand_with_pastes",
    "flip_rot90",
    "inpaint_cells",
    "mask_paste",
    "normalize",
    "random_resized_crop",
    "to_float_nchw",
]

Background = Literal["none", "own", "other"]
BACKGROUNDS: tuple[Background, ...] = ("none", "own", "other")

# An empty slide is bright: the report's "empty background" default.
DEFAULT_FILL = 1.0

# Segmentation masks stop a pixel or two short of the cell's halo; inpainting from the ring just
# outside them would smear cell colour into the filled region.
INPAINT_DILATE = 2

# grid_sample weights this close to 0 or 1 are rounding, not coverage (half an 8-bit step).
COVERAGE_EPS = 0.5 / 255

# RGB -> YIQ (NTSC 1953). Y uses the ITU-R 601 luma weights, the same as torchvision's grayscale,
# so saturation here equals torchvision's blend with grayscale.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


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


def to_float_nchw(images: Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> ``dtype`` ``(N, 3, H, W)`` in [0, 1], channels_last in memory.

    The permute is a view, so the result keeps the NHWC storage order that convolutions on
    channels_last want, and no extra copy is made.
    """
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images as the decode cache stores them, got {images.dtype}")
    return images.permute(0, 3, 1, 2).to(dtype).div_(255)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], shape: tuple[int, ...], device: torch.device,
              dtype: torch.dtype) -> Tensor:
    """A small constant on ``device``, copied there once: a copy from host memory per batch
    would make the host wait for the GPU's queue to drain (a synchronisation every step)."""
    return torch.tensor(values, dtype=dtype).view(shape).to(device)


def _on(matrix: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    return _constant(tuple(matrix.flatten().tolist()), tuple(matrix.shape), device, dtype)


def normalize(
    images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """``(images - mean) / std`` per channel of float ``(N, 3, H, W)``; returns a new tensor."""
    if not isinstance(std, Tensor) and any(v == 0 for v in std):
        raise ValueError(f"normalize: std must be nonzero per channel, got {list(std)}")
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device)
        std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device)
    else:
        mean_t = _constant(tuple(map(float, mean)), (len(mean),), images.device, images.dtype)
        std_t = _constant(tuple(map(float, std)), (len(std),), images.device, images.dtype)
    return (images - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)


def _rand(generator: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def _randint(
    generator: torch.Generator, low: int, high: int, shape: Sequence[int], device: torch.device
) -> Tensor:
    return torch.randint(
        low, high, tuple(shape), generator=generator, device=generator.device
    ).to(device)


def _work_dtype(images: Tensor, name: str) -> torch.dtype:
    if not images.is_floating_point():
        raise TypeError(
            f"{name}: expected float images in [0, 1], got {images.dtype}; "
            "convert with wbc.augment.to_float_nchw"
        )
    # grid_sample and pooling in half precision lose the exact copy of integer shifts.
    return images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32


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
    dtype = _work_dtype(images, "inpaint_cells")
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
    angles = _rand(generator, (k,), device).to(dtype) * 360
    flips = _rand(generator, (k,), device) < 0.5
    u = _rand(generator, (k, 2), device).to(dtype)
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
            index = (source + _randint(generator, 1, n, (k,), device)) % n
        elif avoid_self:
            index = torch.zeros(k, dtype=torch.long, device=device)
        else:
            index = _randint(generator, 0, n_backgrounds, (k,), device)
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
    _check_batch(images, masks, "mask_paste")
    if factor < 0:
        raise ValueError(f"mask_paste: factor must be >= 0, got {factor}")
    if background not in BACKGROUNDS:
        raise ValueError(f"mask_paste: background must be one of {BACKGROUNDS}, got {background!r}")
    if max_shift < 0:
        raise ValueError(f"mask_paste: max_shift must be >= 0, got {max_shift}")
    dtype = _work_dtype(images, "mask_paste")
    n, _, h, w = images.shape
    device = images.device
    k = n * factor
    masks = masks if masks.dtype == torch.bool else masks != 0
    if background == "other" and backgrounds is not None:
        if backgrounds.dim() != 4 or tuple(backgrounds.shape[1:]) != (3, h, w):
            raise ValueError(
                f"mask_paste: backgrounds must be (B, 3, {h}, {w}) like the images, "
                f"got {tuple(backgrounds.shape)}"
            )
        if backgrounds.shape[0] == 0 and k > 0:
            raise ValueError("mask_paste: background='other' got an empty backgrounds tensor")
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

    if background == "none":
        base = _fill_tensor(fill, dtype, device).unsqueeze(0)
    elif background == "own":
        base = inpaint_cells(x, masks, fill=fill).unsqueeze(1)
    else:
        assert params.background_index is not None
        index = params.background_index.to(device)
        if backgrounds is None:
            base = inpaint_cells(x, masks, fill=fill)[index]
        else:
            base = backgrounds.to(device, dtype)[index]
        base = base.view(n, factor, 3, h, w)
    out = (cell + (1 - alpha) * base).reshape(k, 3, h, w).contiguous()
    return out.to(images.dtype), alpha.reshape(k, h, w) > 0.5, source


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


@overload
def flip_rot90(images: Tensor, *, generator: torch.Generator, masks: None = None) -> Tensor: ...
@overload
def flip_rot90(
    images: Tensor, *, generator: torch.Generator, masks: Tensor
) -> tuple[Tensor, Tensor]: ...
def flip_rot90(
    images: Tensor, *, generator: torch.Generator, masks: Tensor | None = None
) -> Tensor | tuple[Tensor, Tensor]:
    """One of the 8 symmetries of the square per image, uniformly: orientation means nothing
    in a smear.

    ``images`` ``(N, C, H, W)`` of any dtype; ``masks`` ``(N, H, W)`` get the same transform.
    Transpose, vertical flip and horizontal flip, each on or off per image, make the dihedral
    group; each is a ``torch.where`` over the batch, as airbench's ``batch_flip_lr``. For
    non-square images the transpose is left out (the 4 flips and the 180-degree turn).
    """
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    if masks is not None and tuple(masks.shape) != (n, h, w):
        raise ValueError(
            f"flip_rot90: masks must be (N, H, W) = {(n, h, w)}, got {tuple(masks.shape)}"
        )
    code = _randint(generator, 0, 8 if h == w else 4, (n,), images.device)

    def apply(x: Tensor) -> Tensor:
        shape = (n,) + (1,) * (x.dim() - 1)
        if h == w:
            x = torch.where((code & 4).bool().view(shape), x.transpose(-1, -2), x)
        x = torch.where((code & 2).bool().view(shape), x.flip(-2), x)
        return torch.where((code & 1).bool().view(shape), x.flip(-1), x)

    if masks is None:
        return apply(images)
    return apply(images), apply(masks.to(images.device))


def color_jitter(
    images: Tensor,
    *,
    generator: torch.Generator,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    hue: float = 0.02,
) -> Tensor:
    """Per-image brightness, contrast, saturation and hue jitter of float ``(N, 3, H, W)`` in [0, 1].

    Factors are uniform in ``[1 - s, 1 + s]`` (hue: a turn of ``[-hue, hue]``), as
    torchvision's ``ColorJitter``, but drawn per image and applied in a fixed order, clamping to
    [0, 1] after each. Brightness scales; contrast blends with the image's mean grey. Saturation
    and hue are one 3x3 matrix per image: the chroma (I, Q) of YIQ scaled and rotated, which
    approximates a hue shift in HSV without its per-pixel branches. A strength of 0 skips its
    step, so all zeros return the input unchanged.
    """
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if value < 0:
            raise ValueError(f"color_jitter: {name} must be >= 0, got {value}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"color_jitter: hue must be in [0, 0.5], got {hue}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"color_jitter: expected images (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"color_jitter: expected float images in [0, 1], got {images.dtype}; "
            "convert with wbc.augment.to_float_nchw"
        )
    n = images.shape[0]
    device, dtype = images.device, images.dtype
    # Draw all four always, so that one strength does not change the others' random numbers.
    u = _rand(generator, (4, n), device).to(dtype) * 2 - 1
    x = images
    if brightness:
        factor = (1 + brightness * u[0]).clamp_min(0).view(n, 1, 1, 1)
        x = (x * factor).clamp(0, 1)
    if contrast:
        factor = (1 + contrast * u[1]).clamp_min(0).view(n, 1, 1, 1)
        luma = _on(_RGB_TO_YIQ[0], device, dtype).view(1, 3, 1, 1)
        mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (factor * x + (1 - factor) * mean).clamp(0, 1)
    if saturation or hue:
        s = (1 + saturation * u[2]).clamp_min(0)
        angle = math.tau * hue * u[3]
        chroma = torch.zeros(n, 3, 3, dtype=dtype, device=device)
        chroma[:, 0, 0] = 1
        chroma[:, 1, 1] = s * angle.cos()
        chroma[:, 1, 2] = -s * angle.sin()
        chroma[:, 2, 1] = s * angle.sin()
        chroma[:, 2, 2] = s * angle.cos()
        matrix = _on(_YIQ_TO_RGB, device, dtype) @ chroma @ _on(_RGB_TO_YIQ, device, dtype)
        x = torch.einsum("nij,njhw->nihw", matrix, x).clamp(0, 1)
    return x


def random_resized_crop(
    images: Tensor,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rotate: bool = True,
    padding_mode: Literal["reflection", "border"] = "reflection",
) -> Tensor:
    """A random crop of each image, turned by any angle and resized back to the input size.

    torchvision's ``RandomResizedCrop`` (Szegedy et al. 2015) drawn per image, with a rotation
    folded into the same warp: per image the crop covers a fraction ``scale`` of the area
    (uniform), has aspect ratio (width / height in pixels) log-uniform in ``ratio``, lies
    inside the image before it is turned, and is turned about its centre by a uniform angle in
    [0, 360) when ``rotate``. A smear has no up, so any angle is as real as the 8 of
    ``flip_rot90``; the corners a turn brings in from outside the image are ``padding_mode``
    (``"reflection"``: mirrored content, ``"border"``: the edge pixels repeated). A crop side
    that would exceed the image is clipped to it (torchvision retries the draw instead).

    All crops are one ``affine_grid`` and one bilinear ``grid_sample`` over float
    ``(N, C, H, W)``; the output has the input's shape and dtype. ``scale=(1, 1)``,
    ``ratio=(W / H, W / H)`` (1 for square images), ``rotate=False`` is the identity (to float
    rounding).
    """
    if images.dim() != 4:
        raise ValueError(
            f"random_resized_crop: expected images (N, C, H, W), got {tuple(images.shape)}"
        )
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"random_resized_crop: scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"random_resized_crop: ratio must satisfy 0 < low <= high, got {ratio}")
    if padding_mode not in ("reflection", "border"):
        raise ValueError(
            f"random_resized_crop: padding_mode must be 'reflection' or 'border', got {padding_mode!r}"
        )
    dtype = _work_dtype(images, "random_resized_crop")
    n, c, h, w = images.shape
    if n == 0:
        return images.clone()
    device = images.device
    # Draw all five always, so that ``rotate`` does not change the other parameters.
    u = _rand(generator, (5, n), device).to(dtype)
    area = scale[0] + (scale[1] - scale[0]) * u[0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    # Crop sides as fractions of the image's: area * H * W pixels of width / height = aspect.
    cw = (area * aspect * (h / w)).sqrt().clamp(max=1)
    ch = (area / aspect * (w / h)).sqrt().clamp(max=1)
    # Centre in normalised coordinates, the crop inside [-1, 1] before it is turned.
    tx = (1 - cw) * (2 * u[2] - 1)
    ty = (1 - ch) * (2 * u[3] - 1)
    angle = u[4] * math.tau if rotate else torch.zeros_like(u[4])
    cos, sin = angle.cos(), angle.sin()
    # Output normalised (a, b) -> crop pixels (a cw W/2, b ch H/2) about its centre, turned
    # in pixel space (square pixels, whatever H / W), back to normalised input coordinates.
    theta = torch.stack(
        [
            torch.stack([cos * cw, -sin * ch * (h / w), tx], 1),
            torch.stack([sin * cw * (w / h), cos * ch, ty], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = F.grid_sample(
        images.to(dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )
    return out.to(images.dtype)
