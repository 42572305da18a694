"""Batched tensor augmentations: flips and quarter turns, colour jitter, resized crops.

Every function is pure: it takes a batch on any device and returns new tensors on that device,
draws its randomness from an explicit ``torch.Generator`` and never touches the global RNG.
Random parameters are drawn on the generator's device and then moved to the data's device, so
one CPU generator gives the same augmentation on the CPU and on a GPU.

Conventions, the same in every function of ``wbc.augment``:

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
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "color_jitter",
    "device_constant",
    "flip_rot90",
    "normalize",
    "rand_on",
    "randint_on",
    "random_resized_crop",
    "to_float_nchw",
    "work_dtype",
]

# RGB -> YIQ (NTSC 1953). Y uses the ITU-R 601 luma weights, the same as torchvision's grayscale,
# so saturation here equals torchvision's blend with grayscale.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


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
def device_constant(values: tuple[float, ...], shape: tuple[int, ...], device: torch.device,
                    dtype: torch.dtype) -> Tensor:
    """A small constant on ``device``, copied there once: a copy from host memory per batch
    would make the host wait for the GPU's queue to drain (a synchronisation every step)."""
    return torch.tensor(values, dtype=dtype).view(shape).to(device)


def _on(matrix: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    return device_constant(tuple(matrix.flatten().tolist()), tuple(matrix.shape), device, dtype)


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
        mean_t = device_constant(tuple(map(float, mean)), (len(mean),), images.device, images.dtype)
        std_t = device_constant(tuple(map(float, std)), (len(std),), images.device, images.dtype)
    return (images - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)


def rand_on(generator: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, then moved to ``device``."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def randint_on(
    generator: torch.Generator, low: int, high: int, shape: Sequence[int], device: torch.device
) -> Tensor:
    """Integers in ``[low, high)`` drawn on the generator's device, then moved to ``device``."""
    return torch.randint(
        low, high, tuple(shape), generator=generator, device=generator.device
    ).to(device)


def work_dtype(images: Tensor, name: str) -> torch.dtype:
    """The float dtype warps and pooling run in; ``TypeError`` naming ``name`` for integers."""
    if not images.is_floating_point():
        raise TypeError(
            f"{name}: expected float images in [0, 1], got {images.dtype}; "
            "convert with wbc.augment.to_float_nchw"
        )
    # grid_sample and pooling in half precision lose the exact copy of integer shifts.
    return images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32


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
    code = randint_on(generator, 0, 8 if h == w else 4, (n,), images.device)

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
    u = rand_on(generator, (4, n), device).to(dtype) * 2 - 1
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
    dtype = work_dtype(images, "random_resized_crop")
    n, c, h, w = images.shape
    if n == 0:
        return images.clone()
    device = images.device
    # Draw all five always, so that ``rotate`` does not change the other parameters.
    u = rand_on(generator, (5, n), device).to(dtype)
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
