"""Reading images and masks as real data comes: any common format, mode and bit depth.

Pillow reads every format the layout allows (JPEG, PNG, BMP, TIFF); torchvision's decoder
does not read BMP or TIFF, and one code path for all formats keeps the checker and the cache
in agreement about which files are readable.

Working-resolution policy (``to_working``): a non-square image is padded to a square with the
median colour of its border, so the whole field is kept and no cell is cut, then resized to
``size x size`` with Pillow's antialiased bilinear filter. A mask gets the same padding (with
background) and resize, then is thresholded at half its range, so it stays aligned with its
image pixel for pixel.

Pixel limit (``max_image_pixels``): a file whose header declares more than the limit is refused
with an ``ImageError`` before any pixel is decoded, so a small file that expands to gigabytes (a
decompression bomb) costs nothing. Raise the limit with ``$WBC_MAX_IMAGE_PIXELS`` (inherited by
worker processes; the ``wbc`` commands' ``--max-image-pixels`` sets it).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageError",
    "ImageInfo",
    "decode_working",
    "inspect_image",
    "mask_to_working",
    "max_image_pixels",
    "parse_pixel_count",
    "read_mask",
    "read_rgb",
    "to_working",
]

# WBC crops are a few hundred pixels a side, CAM16 patches 96-512, pRCC fields about 2000x2000
# and a whole microscope camera frame at most ~50 Mpx; whole-slide images are not an input here.
# 8192x8192 refuses nothing real and bounds one decode at ~200 MB of RGB (about 0.7 GB peak in
# Pillow's conversions) per worker, where a 20000x20000 PNG of 1.2 MB costs ~4 GB.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "WBC_MAX_IMAGE_PIXELS"


class ImageError(Exception):
    """A file that cannot be used as an image. ``reason`` is short and user-facing."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What a full decode of a file established."""

    width: int
    height: int
    mode: str
    blank: bool = False  # every pixel zero (as ``read_mask`` sees it): a mask with no cell


def parse_pixel_count(text: str) -> int:
    """A pixel count written ``67108864``, ``67_108_864`` or ``8192x8192``; ``ValueError``
    unless it is positive."""
    parts = text.strip().lower().split("x")
    try:
        value = int(parts[0]) * int(parts[1]) if len(parts) == 2 else int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{text!r}: give a positive pixel count (67108864) or a width x height "
                         "(8192x8192)")
    return value


def max_image_pixels() -> int:
    """The pixel limit: ``$WBC_MAX_IMAGE_PIXELS``, else the default. A malformed value raises
    ``ValueError`` naming the variable."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return parse_pixel_count(text)
    except ValueError as err:
        raise ValueError(f"{MAX_PIXELS_ENV}={err}") from None


def _over_limit(path: Path, declared: str, limit: int) -> ImageError:
    side = int(limit ** 0.5)
    return ImageError(
        path, f"{declared} pixels declared in its header, over the limit of {limit:,} (about "
              f"{side}x{side}): a decompression bomb or a whole-slide image, not a cell crop or "
              f"patch; if it is genuine, raise the limit with --max-image-pixels or "
              f"{MAX_PIXELS_ENV}")


@contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """The image with its header read and its size within the limit, pixels not yet decoded."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageError(path, f"unreadable ({err.strerror or err})") from err
    if size == 0:
        raise ImageError(path, "zero-byte file")
    limit = max_image_pixels()
    previous = Image.MAX_IMAGE_PIXELS
    # Pillow's own check would end a scan with a bare DecompressionBombError before the size is
    # known; the check below refuses the same files, naming the size and the way to raise it.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(path)
            except UnidentifiedImageError as err:
                raise ImageError(path, "not an image (no known image format in its "
                                       "contents)") from err
            except OSError as err:
                raise ImageError(path, f"unreadable ({err})") from err
            with image:
                if image.width * image.height > limit:
                    raise _over_limit(path, f"{image.width}x{image.height} = "
                                            f"{image.width * image.height:,}", limit)
                # Frames and tiles met while decoding stay under Pillow's guard, at this limit.
                Image.MAX_IMAGE_PIXELS = limit
                yield image
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _load(path: Path, image: Image.Image) -> None:
    """Decode all pixel data, turning Pillow's assorted failures into one ``ImageError``."""
    try:
        image.load()
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        declared = f"a frame or tile of {int(found.group(1)):,}" if found else "more"
        raise _over_limit(path, declared, max_image_pixels()) from err
    except (OSError, SyntaxError, ValueError) as err:
        text = str(err)
        if "truncated" in text or "broken data stream" in text or "EOF" in text:
            raise ImageError(path, "truncated image data (the file ends early)") from err
        raise ImageError(path, f"corrupt image data ({text})") from err


def _mask_view(image: Image.Image) -> Image.Image:
    """The image as ``read_mask`` reads it: alpha dropped, any nonzero channel is the cell."""
    return image.convert("RGB") if image.mode in ("RGBA", "LA", "PA") else image


def inspect_image(path: Path | str) -> ImageInfo:
    """Decode ``path`` completely and return its size and mode, or raise ``ImageError``."""
    path = Path(path)
    with _open(path) as image:
        _load(path, image)
        blank = _mask_view(image).getbbox(alpha_only=False) is None
        return ImageInfo(width=image.width, height=image.height, mode=image.mode, blank=blank)


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit and 32-bit grey to 8 bits, keeping the full-scale calibration of the format."""
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        # 16-bit data: full scale is 65535, whatever the sensor used.
        return (np.clip(array.astype(np.float32), 0, 65535) / 257.0 + 0.5).astype(np.uint8)
    if array.dtype.kind == "f":
        top = 1.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 255.0
        scaled = np.nan_to_num(array.astype(np.float32)) * (255.0 / top)
        return (np.clip(scaled, 0, 255) + 0.5).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent areas become white, the colour of an empty slide under the lamp.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        grey = _high_depth_to_uint8(np.asarray(image))
        if grey.ndim == 3:  # multi-channel high-depth TIFF
            grey = grey[..., :3]
            return grey if grey.shape[-1] == 3 else np.repeat(grey[..., :1], 3, axis=-1)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_rgb(path: Path | str, *, draft_size: int | None = None) -> np.ndarray:
    """Decode ``path`` to an ``H x W x 3`` uint8 RGB array, whatever its format and mode.

    ``draft_size`` lets a JPEG decode at a reduced scale (libjpeg's DCT scaling) no smaller than
    that size: far cheaper when the working resolution is a fraction of the file's.
    """
    path = Path(path)
    with _open(path) as image:
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        _load(path, image)
        return _to_rgb_array(image)


def read_mask(path: Path | str) -> np.ndarray:
    """Decode a mask to an ``H x W`` bool array: any nonzero pixel is the cell.

    Binary (0/1, 0/255) and multi-level (0 / 128 cytoplasm / 255 nucleus) masks all reduce to
    cell versus background. A colour mask counts a pixel as cell if any channel is nonzero.
    """
    path = Path(path)
    with _open(path) as image:
        _load(path, image)
        array = np.asarray(_mask_view(image))
    if array.ndim == 3:
        return np.any(array != 0, axis=-1)
    return array != 0


def _pad_square(image: Image.Image, fill: tuple[int, ...] | int) -> Image.Image:
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def to_working(rgb: np.ndarray, size: int) -> np.ndarray:
    """Pad to square with the border's median colour, then resize to ``size x size``."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]], axis=0)
    fill = tuple(int(v) for v in np.median(border, axis=0))
    image = _pad_square(Image.fromarray(rgb, "RGB"), fill)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def decode_working(path: Path | str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``path`` at the working resolution (``size x size x 3`` uint8), as the decode cache
    makes its rows and ``wbc predict`` its inputs, and the decoded ``(height, width)`` (a JPEG
    decodes in draft mode, smaller than the file: its mask is brought to that geometry)."""
    rgb = read_rgb(path, draft_size=size)
    return to_working(rgb, size), (int(rgb.shape[0]), int(rgb.shape[1]))


def mask_to_working(mask: np.ndarray, size: int, *, image_shape: tuple[int, int]) -> np.ndarray:
    """Bring a cell mask to the working resolution exactly as ``to_working`` moves its image.

    ``image_shape`` is the decoded image's ``(height, width)``: a JPEG decoded in draft mode is
    smaller than its mask, so the mask is first resized to the image's geometry.
    """
    image = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    height, width = image_shape
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    image = _pad_square(image, 0)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8) >= 128
